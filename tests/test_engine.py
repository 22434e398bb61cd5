"""Engine API behaviour: caching, atomic memory changes, bad input, persistence (test backbones, small images)."""
import numpy as np
import pytest

from ntt_engine import Engine, EngineConfig, ImageLoadError, MemoryBank, MemoryFormatError, PromptSet, ReferenceError
from ntt_engine.backbones.weightless import ColourTextureEncoder, ConnectedComponentProposer
from ntt_engine.prompting import paper_grid as grid_points
from ntt_engine.synthetic import generate_dataset
from ntt_engine.image_io import load_image
from ntt_engine.export import mask_to_bbox
from pycocotools.coco import COCO


class Counting:
    """Wraps a backbone and counts its forward passes."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, 0

    def encode(self, image):
        self.calls += 1
        return self.inner.encode(image)

    def embed(self, image):
        self.calls += 1
        return self.inner.embed(image)

    def propose(self, embedding, points, min_quality=None):
        return self.inner.propose(embedding, points, min_quality)

    def segment(self, embedding, prompts):
        return self.inner.segment(embedding, prompts)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine-data")
    coco = COCO(str(generate_dataset(root, images=10, classes=2, seed=3, size=(160, 120))))
    samples = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        labels = [coco.loadCats(a["category_id"])[0]["name"] for a in anns]
        samples.append((load_image(root / "images" / info["file_name"]), labels,
                        [coco.annToMask(a).astype(bool) for a in anns]))
    return [s for s in samples if s[1]], [s for s in samples if not s[1]]


def make_engine(**overrides):
    encoder = Counting(ColourTextureEncoder())
    proposer = Counting(ConnectedComponentProposer())
    return Engine(EngineConfig.preset("synthetic", **overrides), encoder=encoder, proposer=proposer), encoder, proposer


def test_empty_memory_predicts_nothing(data):
    engine, _, _ = make_engine()
    assert engine.predict(data[0][0][0]) == []


def test_repredict_after_memory_change_runs_no_backbone(data):
    positives, _ = data
    engine, encoder, proposer = make_engine()
    image, labels, masks = positives[0]
    engine.add_reference("a", image, labels, masks)
    target = positives[1][0]
    first = engine.predict(target)
    engine.add_reference("b", *positives[2])  # a new image: one encoder forward, no proposer
    calls = (encoder.calls, proposer.calls)
    second = engine.predict(target)
    assert (encoder.calls, proposer.calls) == calls  # only matching re-ran
    assert first and second
    # and a reference from an already-analysed image needs no forward either (whole-image pooling)
    engine.add_reference("c", target, positives[1][1], positives[1][2])
    assert (encoder.calls, proposer.calls) == calls


def test_prediction_follows_memory_changes(data):
    positives, _ = data
    engine, _, _ = make_engine()
    image, labels, masks = positives[0]
    engine.add_reference("a", image, labels[:1], masks[:1])
    version = engine.model_version
    found = {i.label for i in engine.predict(positives[1][0])}
    assert found <= {labels[0]}
    engine.remove_reference("a")
    assert engine.model_version != version
    assert engine.predict(positives[1][0]) == []


def test_failed_calls_leave_memory_unchanged(data, tmp_path):
    positives, _ = data
    engine, _, _ = make_engine()
    engine.add_reference("a", *positives[0])
    before = engine.memory.to_bytes()
    image, labels, masks = positives[1]
    bad_calls = [
        lambda: engine.add_reference("x", image, labels, [np.zeros_like(masks[0])] + masks[1:]),  # empty mask
        lambda: engine.add_reference("x", image, labels + ["extra"], masks),  # label/mask count
        lambda: engine.add_reference("x", image, labels, [m[:-1] for m in masks]),  # wrong shape
        lambda: engine.add_reference("x", image, [], []),  # no regions
        lambda: engine.add_reference("x", b"corrupt", labels, masks),
        lambda: engine.add_reference("a", tmp_path / "missing.png", labels, masks),
        lambda: engine.remove_reference("unknown"),
        lambda: engine.add_reference("x", image, labels[:1], boxes=np.array([[10, 10, 5, 5]])),  # empty box
    ]
    for call in bad_calls:
        with pytest.raises((ReferenceError, ImageLoadError, KeyError)):
            call()
        assert engine.memory.to_bytes() == before


def test_one_pixel_mask_nearest_refused_area_accepted(data):
    positives, _ = data
    image = positives[0][0]
    mask = np.zeros(image.shape[:2], bool)
    mask[61, 83] = True
    engine, _, _ = make_engine(reference_mask_sampling="area")
    assert engine.add_reference("px", image, ["thing"], [mask]) == 1
    assert np.isfinite(engine.memory.prototypes().vectors.numpy()).all()
    engine, _, _ = make_engine(reference_mask_sampling="nearest", reference_crop=True)
    mask[:] = False
    mask[60, 83] = True  # not the top-left pixel of any patch of the crop's grid
    with pytest.raises(ReferenceError, match="covers no feature cell"):
        engine.add_reference("px", image, ["thing"], [mask])
    assert len(engine.memory) == 0


def test_boxes_become_masks_and_references(data):
    positives, _ = data
    image, labels, masks = positives[0]
    ys, xs = np.nonzero(masks[0])
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    engine, _, _ = make_engine()
    assert engine.add_reference("boxed", image, labels[:1], boxes=box) == 1
    masks_from_box = engine.segment(image, PromptSet(boxes=box))
    assert len(masks_from_box) == 1
    inter = (masks_from_box[0].mask & masks[0]).sum()
    assert inter / (masks_from_box[0].mask | masks[0]).sum() > 0.8


def test_interactive_click_returns_the_object(data):
    positives, _ = data
    image, _, masks = positives[0]
    ys, xs = np.nonzero(masks[0])
    engine, _, proposer = make_engine()
    point = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
    result = engine.segment(image, PromptSet(points=point, point_labels=np.array([1])), image_key="k")
    engine.segment(image, PromptSet(points=point, point_labels=np.array([1])), image_key="k")
    assert proposer.calls == 1  # embedding reused
    assert len(result) == 1 and result[0].mask[point[0, 1].astype(int), point[0, 0].astype(int)]
    with pytest.raises(ValueError):
        engine.segment(image, PromptSet())


def test_memory_save_load_gives_identical_predictions(data, tmp_path):
    positives, _ = data
    engine, _, _ = make_engine()
    engine.add_reference("a", *positives[0])
    engine.add_reference("b", *positives[1])
    path = tmp_path / "memory.ntt"
    engine.save_memory(path)
    again, _, _ = make_engine()
    again.load_memory(path)
    assert again.model_version == engine.model_version
    one, two = engine.predict(positives[2][0]), again.predict(positives[2][0])
    assert [(i.label, i.score, i.bbox) for i in one] == [(i.label, i.score, i.bbox) for i in two]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(one, two))


def test_memory_from_another_encoder_is_refused(tmp_path):
    bank = MemoryBank("some-other-encoder")
    path = tmp_path / "m.ntt"
    bank.save(path)
    engine, _, _ = make_engine()
    with pytest.raises(MemoryFormatError, match="some-other-encoder"):
        engine.load_memory(path)


def test_negative_images_recorded_and_mined_when_enabled(data):
    positives, negatives = data
    engine, _, _ = make_engine(use_negatives=True)
    engine.add_reference("a", *positives[0])
    revision = engine.memory.revision
    engine.add_negative("neg", negatives[0][0] if negatives else positives[1][0])
    assert "neg" in engine.memory.negative_images and engine.memory.revision == revision + 1
    assert engine.predict(positives[1][0]) is not None


def test_large_array_is_processed_bounded_and_mapped_back(data):
    positives, _ = data
    image, labels, masks = positives[0]
    engine, _, _ = make_engine(max_image_side=80)
    engine.add_reference("a", image, labels, masks)
    big = np.kron(image, np.ones((3, 3, 1), np.uint8))  # 480x360, processed at 80 px
    found = engine.predict(big)
    assert found
    for inst in found:
        assert inst.mask.shape == (60, 80) and inst.original_size == big.shape[:2]  # masks stay at the working size
        full = inst.full_mask()
        assert full.shape == big.shape[:2] and inst.bbox == mask_to_bbox(full)


def test_grid_points_follow_the_paper_frame():
    points = grid_points((480, 640), 32)
    assert points.shape == (1024, 2)
    assert np.isclose(points[:, 0].min(), 0.5 * 640 / 1024) and np.isclose(points[:, 0].max(), 1023.5 * 640 / 1024)
