"""The real pipeline with the shipped test backbones on a generated COCO dataset, scored by pycocotools COCOeval."""
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ntt_engine import Engine, EngineConfig
from ntt_engine.export import mask_to_rle
from ntt_engine.image_io import load_image
from ntt_engine.synthetic import generate_dataset

SHOTS = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    instances = generate_dataset(root, images=48, classes=3, seed=7, size=(320, 240))
    return COCO(str(instances)), root / "images"


def pick_references(coco: COCO) -> dict[int, list[int]]:
    """SHOTS annotations per category, each from a different image, in image-id order."""
    chosen: dict[int, list[int]] = {}
    for cat_id in sorted(coco.getCatIds()):
        used_images, anns = set(), []
        for ann in coco.loadAnns(coco.getAnnIds(catIds=[cat_id])):
            if ann["image_id"] not in used_images and len(anns) < SHOTS:
                anns.append(ann["id"])
                used_images.add(ann["image_id"])
        chosen[cat_id] = anns
    return chosen


@pytest.fixture(scope="module", params=["grid", "similarity"])
def fitted(dataset, request):
    coco, images = dataset
    engine = Engine(EngineConfig.preset("synthetic", prompting=request.param))
    references = pick_references(coco)
    reference_images = set()
    for cat_id, ann_ids in references.items():
        name = coco.loadCats(cat_id)[0]["name"]
        for ann in coco.loadAnns(ann_ids):
            info = coco.loadImgs(ann["image_id"])[0]
            engine.add_reference(f"ann-{ann['id']}", load_image(images / info["file_name"]), [name],
                                 [coco.annToMask(ann).astype(bool)])
            reference_images.add(ann["image_id"])
    return engine, reference_images


def test_segm_and_bbox_ap_at_least_090(dataset, fitted):
    coco, images = dataset
    engine, reference_images = fitted
    name_to_id = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    eval_ids = [i for i in sorted(coco.getImgIds()) if i not in reference_images]
    results = []
    for image_id in eval_ids:
        info = coco.loadImgs(image_id)[0]
        for inst in engine.predict(images / info["file_name"]):
            results.append({"image_id": image_id, "category_id": name_to_id[inst.label], "score": inst.score,
                            "segmentation": mask_to_rle(inst.mask), "bbox": list(inst.bbox)})
    assert results, "no detections at all"
    detections = coco.loadRes(json.loads(json.dumps(results)))
    stats = {}
    for kind in ("segm", "bbox"):
        evaluator = COCOeval(coco, detections, kind)
        evaluator.params.imgIds = eval_ids
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
        stats[kind] = evaluator.stats[0]
    print(f"synthetic 3-shot: segm AP {stats['segm']:.3f}, bbox AP {stats['bbox']:.3f}")
    assert stats["segm"] >= 0.9 and stats["bbox"] >= 0.9
    if engine.config.prompting == "similarity":
        used = [engine.analyse(images / coco.loadImgs(i)[0]["file_name"]).prompts_used for i in eval_ids]
        print(f"similarity prompting: {np.mean(used):.1f} prompts per image on average, at most {max(used)}")
        assert max(used) <= 1024 // 12


def test_similarity_prompting_repredicts_without_backbones_after_memory_change(dataset, fitted):
    coco, images = dataset
    engine, _ = fitted
    ann = coco.loadAnns(coco.getAnnIds())[-1]
    path = images / coco.loadImgs(ann["image_id"])[0]["file_name"]
    before = engine.analyse(path)
    engine.add_reference("extra", load_image(path), [coco.loadCats(ann["category_id"])[0]["name"]],
                         [coco.annToMask(ann).astype(bool)])
    try:
        after = engine.analyse(path)
        # the new memory may add peaks, but never re-decodes what is already decoded or covered
        assert after.prompts_used >= before.prompts_used
        assert after.features is before.features
    finally:
        engine.remove_reference("extra")


def test_negative_images_have_no_confident_detections(dataset, fitted):
    coco, images = dataset
    engine, _ = fitted
    negatives = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=[i])]
    assert negatives, "the generated dataset must contain negative images"
    for image_id in negatives:
        info = coco.loadImgs(image_id)[0]
        scores = [inst.score for inst in engine.predict(images / info["file_name"])]
        assert all(score <= 0.5 for score in scores), (info["file_name"], scores)


def test_bboxes_match_mask_extent_and_masks_are_original_size(dataset, fitted):
    coco, images = dataset
    engine, _ = fitted
    info = coco.loadImgs(sorted(coco.getImgIds())[-1])[0]
    for inst in engine.predict(images / info["file_name"]):
        assert inst.mask.shape == (info["height"], info["width"])
        ys, xs = np.nonzero(inst.mask)
        assert inst.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert 0 < inst.score <= 1 and np.isfinite(inst.score)


def test_detect_scores_every_detection_but_builds_masks_only_above_the_threshold(dataset, fitted):
    coco, images = dataset
    engine, reference_images = fitted
    below_seen = False
    for image_id in [i for i in sorted(coco.getImgIds()) if i not in reference_images][:6]:
        path = images / coco.loadImgs(image_id)[0]["file_name"]
        cut, everything = engine.detect(path, score_threshold=0.5), engine.detect(path, score_threshold=0.0)
        assert cut.scores == everything.scores  # the scores do not depend on the cut
        assert [s for _, s in cut.scores] == sorted((s for _, s in cut.scores), reverse=True)
        assert all(i.score > 0.5 for i in cut.instances)
        assert [(i.label, i.score) for i in cut.instances] == [(i.label, i.score) for i in everything.instances
                                                               if i.score > 0.5]
        assert len(everything.instances) <= len(everything.scores)
        below_seen |= any(s <= 0.5 for _, s in cut.scores)
        assert [i.score for i in engine.predict(path, score_threshold=0.5)] == [i.score for i in cut.instances]
    assert below_seen, "no detection under the threshold on 6 images: the test shows nothing"
