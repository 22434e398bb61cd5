import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test may read or write the user's checkpoint cache."""
    monkeypatch.setenv("NTT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ntt-cache"))
