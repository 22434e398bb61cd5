import numpy as np
import pytest
import torch

from ntt_engine.pooling import (pool_proposals, pool_proposals_reference, pool_reference, reference_patch_weights,
                                resize_matrix)
from ntt_engine.types import PatchFeatures


def features(h=7, w=9, c=16, seed=0, input_size=None):
    g = torch.Generator().manual_seed(seed)
    return PatchFeatures(torch.randn(h, w, c, generator=g), (70, 90), input_size)


@pytest.mark.parametrize("mask_size", [(64, 64), (37, 50), (256, 256)])
def test_adjoint_pooling_equals_upsample_then_average(mask_size):
    feats = features()
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(5, *mask_size, generator=g) > 0.6
    fast, valid = pool_proposals(feats, masks)
    slow = pool_proposals_reference(feats, masks)
    assert valid.all()
    assert torch.allclose(fast, slow, atol=1e-5)


def test_resize_matrix_rows_sum_to_one():
    for src, dst in [(37, 256), (7, 5), (14, 14)]:
        matrix = resize_matrix(src, dst)
        assert matrix.shape == (dst, src)
        assert torch.allclose(matrix.sum(1), torch.ones(dst, dtype=matrix.dtype))


def test_empty_proposal_is_flagged_not_nan():
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[1, 3:9, 4:10] = True
    vectors, valid = pool_proposals(features(), masks)
    assert valid.tolist() == [False, True]
    assert torch.isfinite(vectors).all()
    assert vectors[0].abs().sum() == 0
    assert torch.isclose(vectors[1].norm(), torch.tensor(1.0))


def test_reference_nearest_samples_patch_corners_like_the_paper():
    feats = features(h=4, w=4, input_size=(56, 56))
    mask = np.zeros((56, 56), bool)
    mask[0, 0] = True  # the top-left corner pixel of patch (0, 0) only
    weights = reference_patch_weights(feats, mask, "nearest")
    assert weights[0, 0] > 0 and weights.sum() == weights[0, 0]
    vector = pool_reference(feats, mask, "nearest")
    assert torch.allclose(vector, feats.grid[0, 0])


def test_reference_tiny_mask_nearest_misses_but_area_finds_it():
    feats = features(h=4, w=4, input_size=(56, 56))
    mask = np.zeros((56, 56), bool)
    mask[7, 7] = True  # the centre of patch (0, 0): not sampled by the corner rule
    assert pool_reference(feats, mask, "nearest") is None
    vector = pool_reference(feats, mask, "area")
    assert torch.allclose(vector, feats.grid[0, 0])
    with pytest.raises(ValueError):
        reference_patch_weights(feats, mask, "bogus")
