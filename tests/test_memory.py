import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ntt_engine.memory import MemoryBank, MemoryEntry, MemoryFormatError


def entry(label, *values, negative=False):
    return MemoryEntry(label, np.array(values, np.float32), negative)


def test_prototype_is_normalised_mean_of_raw_vectors():
    bank = MemoryBank("enc")
    bank.set_reference("r1", [entry("cat", 2, 0), entry("dog", 0, 1)])
    bank.set_reference("r2", [entry("cat", 0, 4)])
    protos = bank.prototypes()
    assert protos.labels == ("cat", "dog")
    expected = torch.nn.functional.normalize(torch.tensor([1.0, 2.0]), dim=0)
    assert torch.allclose(protos.vectors[0], expected)
    assert bank.counts() == {"cat": 2, "dog": 1}


def test_replace_remove_and_revision():
    bank = MemoryBank("enc")
    bank.set_reference("r1", [entry("cat", 1, 0)])
    bank.set_reference("r1", [entry("dog", 0, 1)])
    assert bank.revision == 2 and bank.prototypes().labels == ("dog",)
    bank.remove("r1")
    assert bank.revision == 3 and len(bank.prototypes()) == 0 and "r1" not in bank


def test_unknown_reference_id_is_a_clear_error_and_changes_nothing():
    bank = MemoryBank("enc")
    bank.set_reference("r1", [entry("cat", 1, 0)])
    before = bank.to_bytes()
    with pytest.raises(KeyError, match="unknown reference id 'nope'"):
        bank.remove("nope")
    assert bank.to_bytes() == before


def test_bad_vectors_rejected_without_change():
    bank = MemoryBank("enc")
    bank.set_reference("r1", [entry("cat", 1, 0)])
    with pytest.raises(ValueError):
        bank.set_reference("r2", [entry("cat", float("nan"), 0)])
    with pytest.raises(ValueError):
        bank.set_reference("r2", [entry("cat", 1, 0, 0)])
    assert bank.reference_ids() == {"r1"} and bank.revision == 1


def test_cap_uses_earliest_references_and_promotes_after_removal():
    bank = MemoryBank("enc", max_per_class=1)
    bank.set_reference("r1", [entry("cat", 1, 0)])
    bank.set_reference("r2", [entry("cat", 0, 1)])
    assert torch.allclose(bank.prototypes().vectors[0], torch.tensor([1.0, 0.0]))
    bank.remove("r1")
    assert torch.allclose(bank.prototypes().vectors[0], torch.tensor([0.0, 1.0]))


def test_class_without_references_is_absent_never_nan():
    bank = MemoryBank("enc")
    bank.set_reference("neg", [], negative_image=True)
    protos = bank.prototypes()
    assert len(protos) == 0 and not torch.isnan(protos.vectors).any()


def test_save_load_round_trip(tmp_path):
    bank = MemoryBank("enc", max_per_class=5)
    bank.set_reference("r1", [entry("cat", 1, 2), entry("cat", 3, 4)])
    bank.set_reference("n1", [entry("cat", 0, 1, negative=True)], negative_image=True)
    path = tmp_path / "m.ntt"
    bank.save(path)
    loaded = MemoryBank.load(path)
    assert loaded.revision == bank.revision and loaded.encoder_name == "enc"
    assert loaded.reference_ids() == {"r1", "n1"} and loaded.negative_images == {"n1"}
    assert torch.equal(loaded.prototypes().vectors, bank.prototypes().vectors)
    assert torch.equal(loaded.prototypes(negative=True).vectors, bank.prototypes(negative=True).vectors)
    assert loaded.to_bytes() == bank.to_bytes()


def test_memory_file_is_small_per_reference(tmp_path):
    bank = MemoryBank("enc")
    rng = np.random.default_rng(0)
    for i in range(30):
        bank.set_reference(f"r{i}", [MemoryEntry(f"c{c}", rng.random(1024, dtype=np.float32)) for c in range(80)])
    path = tmp_path / "big.ntt"
    bank.save(path)
    assert path.stat().st_size < 20 * 1024 * 1024  # 30-shot x 80 classes, ViT-L width


@pytest.mark.parametrize("payload", [b"", b"garbage", b"PK\x03\x04broken"])
def test_corrupt_files_raise_format_error(tmp_path, payload):
    path = tmp_path / "bad.ntt"
    path.write_bytes(payload)
    with pytest.raises(MemoryFormatError):
        MemoryBank.load(path)
    with pytest.raises(MemoryFormatError, match="cannot read"):
        MemoryBank.load(tmp_path / "missing.ntt")


def test_crash_during_save_keeps_previous_file(tmp_path):
    """A writer killed mid-write (SIGKILL) leaves the last complete memory readable."""
    path = tmp_path / "m.ntt"
    bank = MemoryBank("enc")
    bank.set_reference("r1", [entry("cat", 1, 0)])
    bank.save(path)
    script = f"""
import os, sys, numpy as np
sys.path.insert(0, {str(os.getcwd())!r})
import ntt_engine.memory as m
bank = m.MemoryBank("enc")
bank.set_reference("r2", [m.MemoryEntry("dog", np.ones(2, np.float32))])
real_fsync = os.fsync
def die(fd):
    os.kill(os.getpid(), 9)
os.fsync = die
bank.save({str(path)!r})
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == -9
    assert MemoryBank.load(path).reference_ids() == {"r1"}


def _reference_selection(bank: MemoryBank) -> list[tuple[str, str, float]]:
    """What the matching uses, computed the slow way from every stored entry (the cap's definition): per class,
    the first (or latest) `max_per_class` positive entries in memory order."""
    pairs = [(ref, e) for ref in bank.reference_order() for e in bank.entries(ref) if not e.negative]
    if bank.max_per_class is not None:
        kept = []
        for label in {e.label for _, e in pairs}:
            mine = [p for p in pairs if p[1].label == label]
            kept += mine[:bank.max_per_class] if bank.keep == "first" else mine[-bank.max_per_class:]
        pairs = [p for p in pairs if any(p is k for k in kept)]
    return [(ref, e.label, float(e.vector[0])) for ref, e in pairs]


@pytest.mark.parametrize("keep", ["first", "latest"])
def test_the_memory_length_per_class_keeps_the_first_or_the_latest_and_holds_the_rest_back(keep):
    rng = np.random.default_rng(0)
    bank = MemoryBank("enc", max_per_class=3, keep=keep)
    for i in range(12):  # mixed classes, several entries per reference, a few negatives
        labels = rng.choice(["cat", "dog", "bird"], size=int(rng.integers(1, 4)))
        bank.set_reference(f"r{i}", [MemoryEntry(str(label), rng.standard_normal(4).astype(np.float32),
                                                 negative=bool(rng.random() < 0.2)) for label in labels])
    bank.set_reference("r3", [MemoryEntry("cat", rng.standard_normal(4).astype(np.float32))])  # moves to the end
    bank.remove("r5")
    examples = bank.positive_examples()
    assert list(zip(examples.refs, examples.labels)) == [(r, lb) for r, lb, _ in _reference_selection(bank)]
    counts, active = bank.counts(), bank.active_counts()
    assert active == {label: min(count, 3) for label, count in counts.items()} and sum(counts.values()) == len(bank)
    assert any(counts[label] > active[label] for label in counts)  # some are held back
    for ref in bank.reference_order():  # leave-one-out banks select as a bank built without the reference would
        assert [(r, lb) for r, lb in zip(bank.without(ref).positive_examples().refs,
                                         bank.without(ref).positive_examples().labels)] == \
            [(r, lb) for r, lb, _ in _reference_selection(bank.without(ref))]
    raised = bank.copy()
    raised.max_per_class = None  # raising the cap brings every held-back reference back
    assert len(raised.positive_examples()) == len(bank) and raised.active_counts() == counts


def test_a_capped_prototype_is_the_mean_of_the_selected_vectors():
    bank = MemoryBank("enc", max_per_class=2, keep="latest")
    for i, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        bank.set_reference(f"r{i}", [MemoryEntry("cat", np.array([value, 1.0], np.float32))])
    prototype = bank.prototypes().vectors[0]
    expected = torch.nn.functional.normalize(torch.tensor([3.5, 1.0]), dim=0)
    torch.testing.assert_close(prototype, expected)
