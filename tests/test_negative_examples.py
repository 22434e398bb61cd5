"""Negative examples from corrections: stored per annotation, used example by example in matching, undone with it."""
import numpy as np
import pytest
import torch

from ntt_engine import Engine, EngineConfig
from ntt_engine.corrections import LabelledMask
from ntt_engine.matching import penalise_negative_examples
from ntt_engine.memory import MemoryBank, MemoryEntry, Examples, Prototypes


def test_penalty_uses_the_nearest_example_of_the_proposals_class():
    positives = Prototypes(("a", "b"), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    # two negatives of "a": their mean would be far from both proposals; the nearest one is not
    examples = Examples(("a", "a", "b"), torch.tensor([[0.6, 0.8, 0.0], [0.6, 0.0, 0.8], [0.0, 0.6, 0.8]]))
    vectors = torch.tensor([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    label = torch.tensor([0, 0, 0])
    score = torch.tensor([0.6, 1.0, 0.0])
    out = penalise_negative_examples(score, label, vectors, positives, examples, temperature=0.1)
    assert out[0] == pytest.approx(0.6 * np.exp(-(1.0 - 0.6) / 0.1))  # identical to a deleted example
    assert out[1] == pytest.approx(1.0)  # closer to its prototype than to any negative: untouched
    assert out[2] == 0.0  # the "b" example does not count for a proposal labelled "a"
    # a proposal that is a near copy of a kept reference stays, even if a negative is closer than the prototype
    references = Examples(("a",), torch.tensor([[0.6, 0.8, 0.0]]))
    kept = penalise_negative_examples(score, label, vectors, positives, examples, 0.1, references)
    assert kept[0] == pytest.approx(0.6) and kept[1] == pytest.approx(1.0)
    empty = Examples((), torch.zeros((0, 3)))
    assert torch.equal(penalise_negative_examples(score, label, vectors, positives, empty, 0.1), score)


def entry(label, *values, negative=False):
    return MemoryEntry(label, np.array(values, np.float32), negative)


def test_memory_lists_negatives_one_by_one_and_round_trips(tmp_path):
    bank = MemoryBank("enc")
    bank.set_reference("ann-1", [entry("cat", 1, 0), entry("cat", 0, 3, negative=True)])
    bank.set_reference("neg-1", [entry("cat", 3, 4, negative=True)], negative_image=True)
    assert bank.negative_examples().labels == ("cat", "cat")
    assert torch.allclose(bank.negative_examples().vectors, torch.tensor([[0.0, 1.0], [0.6, 0.8]]))
    assert torch.allclose(bank.positive_examples().vectors, torch.tensor([[1.0, 0.0]]))
    assert bank.counts() == {"cat": 1} and len(bank) == 1
    bank.save(tmp_path / "m.npz")
    loaded = MemoryBank.load(tmp_path / "m.npz")
    assert torch.equal(loaded.negative_examples().vectors, bank.negative_examples().vectors)
    held_out = bank.without("ann-1")
    assert len(held_out.negative_examples()) == 1 and "ann-1" in bank and held_out.revision == bank.revision
    assert "ann-1" not in held_out and len(held_out.positive_examples()) == 0
    bank.remove("ann-1")
    assert bank.negative_examples().labels == ("cat",)  # the annotation's negative went with it


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red striped object (the class) and a red solid look-alike on a grey background."""
    image = np.full((96, 160, 3), 128, np.uint8)
    striped, solid = np.zeros((96, 160), bool), np.zeros((96, 160), bool)
    striped[20:76, 10:66] = True
    solid[20:76, 94:150] = True
    stripes = (np.arange(160) // 4) % 2 == 0
    image[striped & stripes[None, :]] = (230, 40, 40)
    image[striped & ~stripes[None, :]] = (120, 10, 10)
    image[solid] = (230, 40, 40)
    return image, striped, solid


def best_iou(instances, mask, label="red"):
    return max([(i.mask & mask).sum() / (i.mask | mask).sum() for i in instances if i.label == label], default=0.0)


@pytest.mark.parametrize("learn", [True, False])
def test_deleted_look_alike_disappears_and_comes_back_when_the_annotation_goes(learn):
    engine = Engine(EngineConfig.preset("synthetic", learn_from_corrections=learn, num_threads=1))
    image, striped, solid = scene()
    engine.add_reference("ref", image, ["red"], [striped])
    before = engine.predict(image, image_key="scene", score_threshold=0.3)
    assert best_iou(before, striped) > 0.9 and best_iou(before, solid) > 0.9  # the look-alike fools it at first
    engine.add_annotation("ann", image, [LabelledMask("red", striped)], [LabelledMask("red", solid)],
                          image_key="scene")
    after = engine.predict(image, image_key="scene", score_threshold=0.3)
    assert best_iou(after, striped) > 0.9
    assert (best_iou(after, solid) > 0.9) is not learn  # switched off, the correction is ignored
    engine.remove_reference("ann")
    undone = engine.predict(image, image_key="scene", score_threshold=0.3)
    assert best_iou(undone, solid) > 0.9


def test_thresholds_filter_per_class():
    engine = Engine(EngineConfig.preset("synthetic", num_threads=1))
    image, striped, solid = scene()
    engine.add_reference("ref", image, ["red"], [striped])
    instances = engine.predict(image, image_key="scene")
    top = max(i.score for i in instances)
    assert engine.predict(image, image_key="scene", thresholds={"red": top + 1e-6}) == []
    assert len(engine.predict(image, image_key="scene", thresholds={"red": top})) >= 1
    assert len(engine.predict(image, image_key="scene", thresholds={"other": 2.0})) == len(instances)


def test_pool_annotation_marks_negatives_and_accepts_only_negatives():
    engine = Engine(EngineConfig.preset("synthetic", num_threads=1))
    image, striped, solid = scene()
    entries = engine.pool_annotation(image, [LabelledMask("red", striped)], [LabelledMask("red", solid)])
    assert [(e.label, e.negative) for e in entries] == [("red", False), ("red", True)]
    only_negatives = engine.pool_annotation(image, [], [LabelledMask("red", solid)])
    assert [e.negative for e in only_negatives] == [True]
    assert engine.pool_annotation(image, [], []) == []


def test_leave_one_out_predicts_without_the_images_own_annotation():
    from ntt_engine.calibration import calibrate_thresholds, leave_one_out

    engine = Engine(EngineConfig.preset("synthetic", num_threads=1))
    image, striped, solid = scene()
    engine.add_reference("ref", image[:, ::-1].copy(), ["red"], [striped[:, ::-1].copy()])  # another image
    engine.add_annotation("ann", image, [LabelledMask("red", striped)], [LabelledMask("red", solid)],
                          image_key="scene")
    observations, missed = leave_one_out(engine, "ann", image, [LabelledMask("red", striped)], image_key="scene")
    # without its own correction the look-alike is predicted again: one right, one wrong, nothing missed
    assert sorted(o.correct for o in observations if o.score > 0.3) == [False, True]
    assert missed == {"red": 0}
    threshold = calibrate_thresholds(observations, missed)["red"]
    wrong = max(o.score for o in observations if not o.correct)
    right = max(o.score for o in observations if o.correct)
    assert (wrong < threshold <= right) if right > wrong else threshold > wrong
    assert "ann" in engine.memory and len(engine.memory.negative_examples()) == 1  # the memory is untouched
