import numpy as np
import torch

from ntt_engine.cache import ByteLRU, estimate_nbytes


def test_lru_is_bounded_in_bytes_and_evicts_least_recent():
    cache = ByteLRU(capacity_bytes=3000)
    for key in "abc":
        cache.put(key, np.zeros(1000, np.uint8))
    assert cache.get("a") is not None  # a is now most recent
    cache.put("d", np.zeros(1000, np.uint8))
    assert "b" not in cache and "a" in cache and "d" in cache
    assert cache.nbytes <= 3000
    cache.put("huge", np.zeros(10_000, np.uint8))
    assert "huge" not in cache and len(cache) == 3


def test_estimate_nbytes_recurses():
    value = {"a": torch.zeros(10), "b": [np.zeros(5, np.uint8), (torch.zeros(2, dtype=torch.float64),)]}
    assert estimate_nbytes(value) == 40 + 5 + 16
