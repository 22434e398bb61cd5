"""The generated COCO dataset (`ntt_engine.synthetic`) and the TEST backbones (`backbones.weightless`)."""
from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ntt_engine.backbones.weightless import ColourTextureEncoder, ConnectedComponentProposer, hsv_planes
from ntt_engine.protocols import FeatureEncoder, ProposalGenerator
from ntt_engine.synthetic import CLASS_APPEARANCES, generate_dataset, main
from ntt_engine.types import PromptSet

IMAGES, CLASSES, SEED = 32, 8, 0


def _load_coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _image(root, info) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / info["file_name"]).convert("RGB"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = generate_dataset(tmp_path_factory.mktemp("synthetic"), IMAGES, CLASSES, SEED)
    return path, _load_coco(path)


@pytest.fixture(scope="module")
def samples(dataset):
    """[(image, [(category_id, mask)])] for every image of the module dataset."""
    path, coco = dataset
    out = []
    for info in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
        out.append((_image(path.parent, info), [(a["category_id"], coco.annToMask(a).astype(bool)) for a in anns]))
    return out


# ------------------------------------------------------------------------------------------------ dataset


def test_dataset_is_valid_coco(dataset):
    path, coco = dataset
    assert [c["id"] for c in coco.dataset["categories"]] == list(range(1, CLASSES + 1))
    assert [c["name"] for c in coco.dataset["categories"]] == [a.name for a in CLASS_APPEARANCES[:CLASSES]]
    assert len(coco.dataset["images"]) == IMAGES
    assert len({c["name"] for c in coco.dataset["categories"]}) == CLASSES
    for info in coco.dataset["images"]:
        image = Image.open(path.parent / "images" / info["file_name"])
        assert image.size == (info["width"], info["height"]) == (320, 240) and image.mode == "RGB"
        occupied = np.zeros((info["height"], info["width"]), bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=info["id"])):
            mask = coco.annToMask(ann)
            assert isinstance(ann["segmentation"]["counts"], str)
            np.testing.assert_array_equal(mask, mask_utils.decode(ann["segmentation"]))
            assert mask.shape == (info["height"], info["width"])
            assert ann["area"] == int(mask.sum()) >= 64
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= CLASSES
            assert ann["area"] >= 0.3 * ann["drawn_area"]
            assert not (occupied & mask.astype(bool)).any(), "visible masks of one image must not overlap"
            occupied |= mask.astype(bool)
    assert {a["id"] for a in coco.dataset["annotations"]} == set(range(1, len(coco.dataset["annotations"]) + 1))


def test_dataset_has_negatives_occlusions_and_distractors(dataset, samples):
    path, coco = dataset
    negatives = [info["id"] for info in coco.dataset["images"] if not coco.getAnnIds(imgIds=info["id"])]
    assert sorted(negatives) == coco.dataset["info"]["generator"]["negative_image_ids"]
    assert len(negatives) == round(IMAGES * 0.15)
    occluded = [a for a in coco.dataset["annotations"] if a["area"] < a["drawn_area"]]
    assert len(occluded) >= 3
    per_image = [len(anns) for _, anns in samples if anns]
    assert min(per_image) >= 1 and max(per_image) >= 4
    # Negative images may hold distractors: coloured pixels, none of them in a class hue.
    class_hues = np.array([a.hue for a in CLASS_APPEARANCES[:CLASSES]])
    coloured_negatives = 0
    for image_id in negatives:
        hue, sat, val = hsv_planes(samples[image_id - 1][0])
        colour = (sat > 0.5) & (val > 0.3)
        if colour.sum() > 100:
            coloured_negatives += 1
            gap = np.abs((hue[colour][:, None] - class_hues[None] + 180) % 360 - 180).min(1)
            assert np.median(gap) > 15
    assert coloured_negatives >= 1
    # The background is low-saturation: no class pixel is grey and no background pixel is strongly coloured.
    image, anns = next(s for s in samples if s[1])
    objects = np.any([m for _, m in anns], axis=0)
    _, sat, _ = hsv_planes(image)
    assert np.median(sat[~objects]) < 0.15 and np.median(sat[objects]) > 0.6


def test_dataset_is_deterministic(tmp_path):
    a = generate_dataset(tmp_path / "a", 6, 3, seed=7)
    b = generate_dataset(tmp_path / "b", 6, 3, seed=7)
    c = generate_dataset(tmp_path / "c", 6, 3, seed=8)
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()
    for name in sorted(p.name for p in (tmp_path / "a" / "images").iterdir()):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()


def test_cli_and_argument_checks(tmp_path, capsys):
    assert main([str(tmp_path / "out"), "--images", "4", "--classes", "2", "--seed", "3", "--size", "96x64",
                 "--negative-fraction", "0.5"]) == 0
    data = json.loads((tmp_path / "out" / "instances.json").read_text())
    assert len(data["images"]) == 4 and len(list((tmp_path / "out" / "images").glob("*.png"))) == 4
    assert {(i["width"], i["height"]) for i in data["images"]} == {(96, 64)}
    assert [c["name"] for c in data["categories"]] == ["red_stripes", "green_checker"]
    assert len(data["info"]["generator"]["negative_image_ids"]) == 2
    for bad in (["--classes", "9"], ["--classes", "0"], ["--size", "ten"]):
        with pytest.raises(SystemExit):
            main([str(tmp_path / "bad"), *bad])


# ------------------------------------------------------------------------------------------------ test backbones


def test_backbones_satisfy_protocols_and_are_labelled_as_test():
    encoder, proposer = ColourTextureEncoder(), ConnectedComponentProposer()
    assert isinstance(encoder, FeatureEncoder) and isinstance(proposer, ProposalGenerator)
    assert encoder.name.startswith("test-") and proposer.name.startswith("test-")
    assert ColourTextureEncoder(cell=4).name != encoder.name
    assert ConnectedComponentProposer(resolution=64).name != proposer.name


@pytest.mark.parametrize("height,width,cell", [(240, 320, 8), (300, 100, 8), (61, 45, 7), (16, 16, 1)])
def test_encoder_grid_covers_the_image(height, width, cell):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    features = ColourTextureEncoder(cell=cell).encode(image)
    assert features.grid.shape[:2] == (math.ceil(height / cell), math.ceil(width / cell))
    assert features.grid.dtype == torch.float32 and features.image_size == (height, width)
    assert torch.isfinite(features.grid).all() and (features.grid >= 0).all()
    assert (features.grid.norm(dim=-1) > 0).all()
    assert torch.equal(features.grid, ColourTextureEncoder(cell=cell).encode(image).grid)


def test_encoder_cells_follow_the_frame_convention():
    """A red left third and a blue rest: cells left of x = W/3 are red, cells right of it blue."""
    image = np.zeros((50, 90, 3), np.uint8)
    image[:, :30] = (220, 20, 20)
    image[:, 30:] = (20, 20, 220)
    grid = ColourTextureEncoder(cell=10).encode(image).grid  # 5 x 9 cells, 10 px each
    red_bin, blue_bin = 0, round(240 / 15)
    assert (grid[:, :3, red_bin] > grid[:, :3, blue_bin]).all()
    assert (grid[:, 3:, blue_bin] > grid[:, 3:, red_bin]).all()


def _pooled(features, mask: np.ndarray) -> torch.Tensor:
    """Mask-mean of the raw cell features (area weights), then L2-normalised."""
    weights = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], features.grid.shape[:2])
    vector = (weights[0, 0, ..., None] * features.grid).sum((0, 1)) / weights.sum()
    return F.normalize(vector, dim=0)


def test_encoder_separates_classes(samples):
    encoder = ColourTextureEncoder()
    vectors, labels = [], []
    for image, anns in samples:
        if anns:
            features = encoder.encode(image)
            for category_id, mask in anns:
                vectors.append(_pooled(features, mask))
                labels.append(category_id)
    vectors, labels = torch.stack(vectors), torch.tensor(labels)
    references = {c: torch.nonzero(labels == c).flatten()[:3] for c in range(1, CLASSES + 1)}
    assert all(len(r) == 3 for r in references.values()), "the module dataset needs 3 instances of every class"
    prototypes = torch.stack([F.normalize(vectors[r].mean(0), dim=0) for r in references.values()])
    used = torch.cat(list(references.values()))
    rest = torch.tensor([i for i in range(len(labels)) if i not in set(used.tolist())])
    predicted = (vectors[rest] @ prototypes.T).argmax(1) + 1
    accuracy = (predicted == labels[rest]).float().mean().item()
    print(f"encoder nearest-prototype accuracy {accuracy:.3f} over {len(rest)} instances")
    assert accuracy >= 0.95


def _grid_points(height: int, width: int, side: int = 24) -> np.ndarray:
    xs, ys = (np.arange(side) + 0.5) * width / side, (np.arange(side) + 0.5) * height / side
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)


def test_proposer_recovers_instances(samples):
    proposer = ConnectedComponentProposer()
    found = total = 0
    for image, anns in samples:
        if not anns:
            continue
        height, width = image.shape[:2]
        gt = torch.from_numpy(np.stack([m for _, m in anns]).reshape(len(anns), -1).astype(np.float32))
        best = torch.zeros(len(anns))
        embedding = proposer.embed(image)
        points = _grid_points(height, width)
        for start in range(0, len(points), 64):
            proposals = proposer.propose(embedding, points[start:start + 64])
            keep = proposals.masks[proposals.quality > 0.4].reshape(-1, height * width).float()
            if len(keep):
                inter = keep @ gt.T
                iou = inter / (keep.sum(1, keepdim=True) + gt.sum(1)[None] - inter)
                best = torch.maximum(best, iou.max(0).values)
        found += int((best >= 0.8).sum())
        total += len(anns)
    print(f"proposer recall@IoU0.8 {found / total:.3f} ({found}/{total})")
    assert found >= 0.9 * total


def test_proposer_output_contract(samples):
    image, anns = next(s for s in samples if len(s[1]) >= 2)
    height, width = image.shape[:2]
    proposer = ConnectedComponentProposer()
    embedding = proposer.embed(image)
    category_id, mask = anns[0]
    ys, xs = np.nonzero(mask)
    inside = np.array([[xs[len(xs) // 2] + 0.5, ys[len(ys) // 2] + 0.5]], np.float32)
    corner = np.array([[0.5, 0.5]], np.float32)
    points = np.concatenate([corner, inside, corner, inside])
    proposals = proposer.propose(embedding, points)
    assert len(proposals) == 4 and proposals.logits.shape == (4, height, width)
    assert proposals.logits.dtype == torch.float32 and proposals.image_size == (height, width)
    assert set(proposals.logits.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(proposals.logits[1], proposals.logits[3])
    assert torch.equal(proposals.logits[0], proposals.logits[2])
    q = proposals.quality.tolist()
    _, sat, _ = hsv_planes(image[:1, :1])
    if sat[0, 0] < 0.3:
        assert q[0] <= 0.3, "the background is not a confident proposal"
    assert q[1] > 0.4
    got = proposals.masks[1].numpy()
    assert (got & mask).sum() / (got | mask).sum() >= 0.8
    assert len(proposer.propose(embedding, np.zeros((0, 2), np.float32))) == 0

    low = ConnectedComponentProposer(resolution=(60, 80))
    small = low.propose(low.embed(image), points)
    assert small.logits.shape == (4, 60, 80) and small.image_size == (height, width)
    assert torch.equal(small.masks[1], proposals.masks[1][2::4, 2::4])  # nearest at output pixel centres

    # Box prompts: one mask per box, inside the box.
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    boxed = proposer.segment(embedding, PromptSet(boxes=np.concatenate([box, box])))
    assert len(boxed) == 2
    got = boxed.masks[0].numpy()
    assert (got & mask).sum() / (got | mask).sum() >= 0.8
    outside = np.ones_like(got)
    outside[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = False
    assert not (got & outside).any()

    # Point prompts: the positive click's region; a negative click on the same region does not erase it.
    clicked = proposer.segment(embedding, PromptSet(points=np.concatenate([inside, corner]),
                                                    point_labels=np.array([1, 0])))
    assert len(clicked) == 1 and torch.equal(clicked.masks[0], proposals.masks[1])
    only_negative = proposer.segment(embedding, PromptSet(points=inside, point_labels=np.array([0])))
    assert len(only_negative) == 1 and not only_negative.masks.any()


def test_touching_objects_of_different_hues_separate():
    image = np.full((40, 60, 3), 128, np.uint8)
    image[10:30, 10:30] = (220, 30, 30)  # red
    image[10:30, 30:50] = (220, 140, 30)  # orange, touching
    image[10:30:2, 10:30] = (130, 15, 15)  # darker red stripes: same hue, same region
    proposer = ConnectedComponentProposer()
    proposals = proposer.propose(proposer.embed(image), np.array([[15.5, 15.5], [40.5, 20.5]], np.float32))
    red, orange = proposals.masks.numpy()
    assert red.sum() == 400 and red[10:30, 10:30].all()
    assert orange.sum() == 400 and orange[10:30, 30:50].all()
    assert (proposals.quality > 0.4).all()
