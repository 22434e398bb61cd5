"""The production backbones on their smallest real architectures with random weights: shapes, order, determinism.

One SAM2 image-encoder pass for the whole module (hiera-tiny takes seconds on a CPU); decoder calls are cheap.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ntt_engine.backbones.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DinoV2Encoder
from ntt_engine.backbones.sam2_proposer import (
    Sam2Embedding,
    Sam2ProposalGenerator,
    from_model_frame,
    to_model_frame,
)
from ntt_engine.protocols import FeatureEncoder, ProposalGenerator
from ntt_engine.types import PromptSet

H, W = 480, 640


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((H, W, 3), np.uint8)
    img[...] = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    img[100:300, 150:400] = (200, 40, 40)  # some structure, so prompts at different places differ
    img[320:460, 420:620] = (30, 180, 60)
    return img


# ----------------------------------------------------------------------------------------------- DINOv2
@pytest.fixture(scope="module")
def dino() -> DinoV2Encoder:
    return DinoV2Encoder("dinov2_vits14", None, input_size=224, random_weights=True)


def test_dinov2_shape_and_determinism(dino: DinoV2Encoder, image: np.ndarray) -> None:
    assert isinstance(dino, FeatureEncoder)
    assert dino.name == "dinov2_vits14@224:random-seed0"
    a = dino.encode(image)
    assert a.grid.shape == (16, 16, 384) and a.grid.dtype == torch.float32 and a.grid.device.type == "cpu"
    assert a.image_size == (H, W)
    assert torch.equal(a.grid, dino.encode(image).grid)
    # same name ⇒ same features: a second random encoder is built identically
    other = DinoV2Encoder("dinov2_vits14", None, input_size=224, random_weights=True)
    assert other.name == dino.name and torch.equal(other.encode(image).grid, a.grid)
    a.grid.add_(1)  # a plain tensor (not an inference tensor): callers may modify it


def test_dinov2_preprocess_is_pil_bicubic_squash(dino: DinoV2Encoder, image: np.ndarray) -> None:
    x = dino.preprocess(image)
    ref = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC), np.float32) / 255.0
    ref = (ref - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_dinov2_tokens_are_final_norm_patch_tokens(dino: DinoV2Encoder, image: np.ndarray) -> None:
    with torch.inference_mode():
        tokens = dino.model.forward_features(dino.preprocess(image))
    assert tokens.shape == (1, 1 + 16 * 16, 384)
    torch.testing.assert_close(dino.encode(image).grid, tokens[0, 1:].reshape(16, 16, 384))


def test_dinov2_registers_dropped(image: np.ndarray) -> None:
    enc = DinoV2Encoder("dinov2_vits14_reg", None, input_size=224, random_weights=True)
    assert enc.num_prefix_tokens == 5  # CLS + 4 registers
    with torch.inference_mode():
        tokens = enc.model.forward_features(enc.preprocess(image))
    assert tokens.shape == (1, 5 + 16 * 16, 384)
    grid = enc.encode(image).grid
    assert grid.shape == (16, 16, 384)
    torch.testing.assert_close(grid, tokens[0, 5:].reshape(16, 16, 384))


def test_dinov2_rejects_bad_input(dino: DinoV2Encoder) -> None:
    with pytest.raises(ValueError):
        dino.encode(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        DinoV2Encoder("dinov2_vits14", None, input_size=225, random_weights=True)
    with pytest.raises(ValueError):
        DinoV2Encoder("dinov2_vits14", None)  # no checkpoint and not random


# ----------------------------------------------------------------------------------------------- SAM2
@pytest.fixture(scope="module")
def sam() -> Sam2ProposalGenerator:
    return Sam2ProposalGenerator("sam2.1_hiera_tiny", None, points_batch_size=2, random_weights=True)


@pytest.fixture(scope="module")
def emb(sam: Sam2ProposalGenerator, image: np.ndarray) -> Sam2Embedding:
    return sam.embed(image)  # the module's only image-encoder pass


POINTS = np.array([[10, 10], [630, 470], [270, 200], [500, 380], [320, 20]], np.float32)


def test_point_frame_mapping() -> None:
    pts = np.array([[0, 0], [640, 480], [320, 120]], np.float32)
    mapped = to_model_frame(pts, (H, W))
    np.testing.assert_allclose(mapped, [[0, 0], [1024, 1024], [512, 256]])
    np.testing.assert_allclose(from_model_frame(mapped, (H, W)), pts, rtol=1e-6)
    rnd = np.random.default_rng(1).uniform(0, 1000, (20, 2)).astype(np.float32)
    np.testing.assert_allclose(from_model_frame(to_model_frame(rnd, (333, 777)), (333, 777)), rnd, rtol=1e-5)


def test_sam2_embedding(sam: Sam2ProposalGenerator, emb: Sam2Embedding) -> None:
    assert isinstance(sam, ProposalGenerator)
    assert sam.name == "sam2.1_hiera_tiny:random-seed0"
    assert emb.image_embed.shape == (1, 256, 64, 64)
    assert [tuple(f.shape) for f in emb.high_res_feats] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    assert emb.image_size == (H, W)


def test_sam2_propose_partial_batches_in_order(sam: Sam2ProposalGenerator, emb: Sam2Embedding) -> None:
    assert sam.points_batch_size == 2  # 5 points: batches of 2, 2 and a last partial 1
    props = sam.propose(emb, POINTS)
    assert len(props) == 5 and props.logits.shape == (5, 256, 256) and props.logits.dtype == torch.float32
    assert props.quality.shape == (5,) and bool(((props.quality >= 0) & (props.quality <= 1)).all())
    assert props.image_size == (H, W)
    assert not torch.allclose(props.logits[0], props.logits[1])  # prompts differ, so the order check means something

    sam.points_batch_size = 5
    try:
        whole = sam.propose(emb, POINTS)
    finally:
        sam.points_batch_size = 2
    torch.testing.assert_close(whole.logits, props.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(whole.quality, props.quality, atol=1e-5, rtol=1e-5)
    single = sam.propose(emb, POINTS[3:4])
    torch.testing.assert_close(single.logits[0], props.logits[3], atol=1e-4, rtol=1e-4)
    assert len(sam.propose(emb, np.zeros((0, 2), np.float32))) == 0


def test_sam2_propose_keeps_best_multimask_token(sam: Sam2ProposalGenerator, emb: Sam2Embedding) -> None:
    props = sam.propose(emb, POINTS[:3])
    coords = torch.from_numpy(to_model_frame(POINTS[:3], emb.image_size))[:, None]
    with torch.inference_mode():
        logits, iou = sam._decode(emb, coords, torch.ones((3, 1), dtype=torch.int))
    assert logits.shape == (3, 4, 256, 256) and iou.shape == (3, 4)
    best = iou[:, 1:].argmax(1) + 1
    torch.testing.assert_close(props.quality, iou[torch.arange(3), best])
    torch.testing.assert_close(props.logits, logits[torch.arange(3), best], atol=1e-4, rtol=1e-4)


def test_sam2_segment_boxes_and_points(sam: Sam2ProposalGenerator, emb: Sam2Embedding) -> None:
    boxes = np.array([[150, 100, 400, 300], [420, 320, 620, 460]], np.float32)
    props = sam.segment(emb, PromptSet(boxes=boxes))
    assert len(props) == 2 and props.logits.shape == (2, 256, 256)
    corners = torch.from_numpy(to_model_frame(boxes.reshape(-1, 2), emb.image_size)).reshape(2, 2, 2)
    with torch.inference_mode():
        logits, iou = sam._decode(emb, corners, torch.tensor([[2, 3], [2, 3]], dtype=torch.int))
    torch.testing.assert_close(props.quality, iou[:, 0])  # single-mask token for boxes
    torch.testing.assert_close(props.logits, logits[:, 0], atol=1e-4, rtol=1e-4)

    clicks = PromptSet(points=POINTS[:2], point_labels=np.array([1, 0]))
    assert len(sam.segment(emb, clicks)) == 1
    both = PromptSet(points=POINTS[:1], point_labels=np.array([1]), boxes=boxes)
    assert len(sam.segment(emb, both)) == 2
    assert len(sam.segment(emb, PromptSet())) == 0
    with pytest.raises(ValueError):
        sam.segment(emb, PromptSet(points=POINTS[:2], point_labels=np.array([1])))
