import torch

from ntt_engine.matching import (MatchSettings, class_aware_nms, classify, select_detections, semantic_soft_merge,
                                 upsample_logits)
from ntt_engine.memory import Prototypes


def box_mask(size, x0, y0, x1, y1):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def logits_of(masks):
    return torch.where(torch.stack(masks), 1.0, -1.0)


PROTOS = Prototypes(("a", "b"), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_classify_argmax_and_clamp():
    vectors = torch.tensor([[0.6, 0.8], [1.0, 0.0], [-1.0, 0.0]])
    label, score = classify(vectors, torch.tensor([True, True, True]), PROTOS)
    assert label.tolist()[:2] == [1, 0]
    assert torch.allclose(score, torch.tensor([0.8, 1.0, 0.0]))


def test_invalid_vectors_score_zero():
    label, score = classify(torch.tensor([[1.0, 0.0]]), torch.tensor([False]), PROTOS)
    assert score.tolist() == [0.0]


def test_nms_is_per_class_and_ranked_by_quality():
    masks = torch.stack([box_mask(32, 0, 0, 10, 10), box_mask(32, 0, 0, 10, 11), box_mask(32, 0, 0, 10, 10)])
    quality = torch.tensor([0.5, 0.9, 0.7])
    keep = class_aware_nms(masks, quality, torch.tensor([0, 0, 1]), 0.5, cap=10)
    assert keep.tolist() == [1, 2]  # 0 suppressed by the higher-quality 1; 2 is another class
    assert class_aware_nms(masks, quality, torch.tensor([0, 0, 1]), 0.5, cap=1).tolist() == [1]


def test_soft_merge_decays_a_part_inside_an_earlier_whole():
    whole, part, elsewhere = box_mask(32, 0, 0, 20, 20), box_mask(32, 2, 2, 8, 8), box_mask(32, 25, 25, 30, 30)
    masks = torch.stack([whole, part, elsewhere])
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    score = torch.tensor([0.8, 0.9, 0.7])
    merged = semantic_soft_merge(masks, vectors, torch.tensor([0, 0, 0]), score, 0.5)
    assert merged[0] == score[0]  # nothing earlier
    assert torch.isclose(merged[1], torch.tensor(0.0))  # fully inside an identical-feature earlier mask
    assert merged[2] == score[2]  # disjoint


def test_soft_merge_weighted_by_semantic_similarity_and_asymmetric():
    whole, part = box_mask(32, 0, 0, 20, 20), box_mask(32, 2, 2, 8, 8)
    vectors = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    merged = semantic_soft_merge(torch.stack([whole, part]), vectors, torch.tensor([0, 0]),
                                 torch.tensor([1.0, 1.0]), 0.5)
    assert torch.isclose(merged[1], torch.tensor((1 - 0.6) ** 0.5))
    # part first, whole second: the whole is barely affected (IoS of the whole in the part = 36/400)
    merged = semantic_soft_merge(torch.stack([part, whole]), vectors.flip(0), torch.tensor([0, 0]),
                                 torch.tensor([1.0, 1.0]), 0.5)
    assert torch.isclose(merged[1], torch.tensor((1 - 36 / 400 * 0.6) ** 0.5))


def test_select_detections_end_to_end_on_constructed_masks():
    masks = [box_mask(32, 0, 0, 10, 10), box_mask(32, 0, 0, 10, 11), box_mask(32, 20, 20, 30, 30),
             box_mask(32, 12, 0, 18, 6), torch.zeros(32, 32, dtype=torch.bool)]
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
    vectors = torch.nn.functional.normalize(vectors, dim=1)
    quality = torch.tensor([0.6, 0.9, 0.8, 0.9, 0.99])
    valid = torch.tensor([True, True, True, True, False])
    det = select_detections(logits_of(masks), quality, vectors, valid, PROTOS, MatchSettings(max_instances=10), None)
    assert sorted(det.index.tolist()) == [1, 2]  # 0 NMS'd by 1; 3 has cosine <= 0; 4 empty
    assert det.score.tolist() == sorted(det.score.tolist(), reverse=True)
    assert select_detections(logits_of(masks), quality, vectors, valid, Prototypes((), torch.zeros(0, 2)),
                             MatchSettings(), None).index.numel() == 0


def test_select_detections_caps_at_max_instances():
    masks = [box_mask(64, 4 * i, 0, 4 * i + 3, 3) for i in range(12)]
    vectors = torch.tensor([[1.0, 0.0]]).repeat(12, 1)
    det = select_detections(logits_of(masks), torch.linspace(0.5, 0.9, 12), vectors, torch.ones(12, dtype=torch.bool),
                            PROTOS, MatchSettings(max_instances=5), (64, 64))
    assert det.index.numel() == 5


def test_upsample_logits_to_original_size():
    logits = torch.where(box_mask(16, 0, 0, 8, 8), 5.0, -5.0)[None]
    up = upsample_logits(logits, (32, 48))
    assert up.shape == (1, 32, 48)
    assert up[0, :15, :23].all() and not up[0, 16:, :].any() and not up[0, :, 24:].any()
    assert abs(int(up.sum()) - 16 * 24) <= 1  # the corner pixel sits exactly on the 0 level
