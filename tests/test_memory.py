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
