"""The restructured SAM2 decode (gate first, upscale only the kept prompts) equals the straightforward decode, bit for
bit on a CPU."""
import numpy as np
import pytest
import torch

from ntt_engine.backbones.sam2_proposer import Sam2ProposalGenerator


@pytest.fixture(scope="module")
def proposer_and_embedding():
    proposer = Sam2ProposalGenerator("sam2.1_hiera_tiny", None, points_batch_size=5, random_weights=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    return proposer, proposer.embed(image)


def straightforward(proposer, embedding, points):
    coords = proposer._frame(points, embedding)[:, None, :]
    labels = torch.ones((len(points), 1), dtype=torch.int)
    with torch.inference_mode():
        logits, iou = proposer._decode(embedding, coords, labels)
    best = iou[:, 1:].argmax(dim=1) + 1
    rows = torch.arange(len(points))
    return logits[rows, best], iou[rows, best]


def test_gated_best_token_decode_matches_the_straightforward_one(proposer_and_embedding):
    proposer, embedding = proposer_and_embedding
    points = np.array([[10, 10], [60, 40], [120, 90], [5, 80], [64, 48], [100, 20], [30, 60]], np.float32)
    ref_logits, ref_quality = straightforward(proposer, embedding, points)
    proposer.points_batch_size = len(points)  # the same batch as the straightforward decode
    try:
        everything = proposer.propose(embedding, points)
    finally:
        proposer.points_batch_size = 5
    # bit-identical, not merely close: the paper preset's parity with the reference rests on it
    assert torch.equal(everything.logits, ref_logits)
    assert torch.equal(everything.quality, ref_quality)
    # other batch splits may round differently in the last bit (BLAS blocking depends on the batch and the
    # thread count: up to ~4e-7 measured); the decisions must not move
    split = proposer.propose(embedding, points)
    assert torch.allclose(split.logits, ref_logits, atol=1e-5, rtol=0)
    assert torch.equal(split.quality > float(ref_quality.median()), ref_quality > float(ref_quality.median()))
    threshold = float(ref_quality.median())
    gated = proposer.propose(embedding, points, min_quality=threshold)
    expected_rows = torch.nonzero(ref_quality > threshold).flatten()
    assert torch.equal(gated.prompt_index, expected_rows)
    assert 0 < len(gated) < len(points)
    assert torch.equal(gated.logits, ref_logits[expected_rows])
    assert torch.equal(gated.quality, ref_quality[expected_rows])


@pytest.mark.parametrize("threads", [1, 2])
def test_image_work_shared_across_prompts_is_bit_identical(proposer_and_embedding, threads):
    """Issue 18 #1: the first two-way block's image-only projections once per batch (sam2_decode.py) give sam2's
    own decode bit for bit, for full batches, the last partial one and a batch of one prompt."""
    proposer, embedding = proposer_and_embedding
    rng = np.random.default_rng(threads)
    points = rng.uniform(0, 96, (12, 2)).astype(np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        proposer.share_image_work = False
        plain = proposer.propose(embedding, points), proposer.propose(embedding, points[:1])
        proposer.share_image_work = True
        shared = proposer.propose(embedding, points), proposer.propose(embedding, points[:1])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(plain, shared):
        assert torch.equal(a.logits, b.logits) and torch.equal(a.quality, b.quality)
    assert len(plain[0]) == 12  # batches of 5, 5 and 2


def test_shared_image_transformer_equals_sams_on_one_batch(proposer_and_embedding):
    from ntt_engine.backbones.sam2_decode import two_way_one_image

    proposer, embedding = proposer_and_embedding
    model = proposer.model
    transformer = model.sam_mask_decoder.transformer
    tokens = torch.randn(6, 9, 256, generator=torch.Generator().manual_seed(3))
    image, image_pe = embedding.image_embed, model.sam_prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        expected = transformer(torch.repeat_interleave(image, 6, 0), torch.repeat_interleave(image_pe, 6, 0), tokens)
        got = two_way_one_image(transformer, image, image_pe, tokens)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("threads", [1, 2])
def test_the_cpu_default_batch_gives_the_references_batches_of_256_bit_for_bit(threads):
    """Issue 18 #1: batches of 4 (the CPU default: no 64 MiB tensors mapped and unmapped per batch) decode the paper's
    grid exactly as batches of 256 do, predicted IoUs included (the IoU head runs on rows padded to 16)."""
    from ntt_engine import EngineConfig
    from ntt_engine.prompting import paper_grid

    assert EngineConfig().decoder_batch("cpu") == 4
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        proposer = Sam2ProposalGenerator("sam2.1_hiera_tiny", None, points_batch_size=256, random_weights=True)
        image = np.random.default_rng(7).integers(0, 255, (120, 160, 3), dtype=np.uint8)
        embedding = proposer.embed(image)
        points = paper_grid(image.shape[:2], 6)  # 36 prompts: 9 batches of 4
        large = proposer.propose(embedding, points)
        proposer.points_batch_size = 4
        small = proposer.propose(embedding, points)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(small.logits, large.logits) and torch.equal(small.quality, large.quality)
