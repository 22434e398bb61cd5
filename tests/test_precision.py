import contextlib

import pytest
import torch

from ntt_engine import EngineConfig
from ntt_engine.backbones.precision import autocast_for


def test_cpu_always_runs_fp32():
    for precision in ("auto", "bf16", "fp16", "fp32"):
        assert isinstance(autocast_for(torch.device("cpu"), precision), contextlib.nullcontext)


def test_cuda_autocast_unless_fp32():
    assert isinstance(autocast_for(torch.device("cuda"), "fp32"), contextlib.nullcontext)
    ctx = autocast_for(torch.device("cuda"), "fp16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="precision"):
        autocast_for(torch.device("cpu"), "int8")
    with pytest.raises(ValueError, match="prompting"):
        EngineConfig.preset("fast", prompting="random")
    assert EngineConfig.preset("paper").precision == "fp32"
    assert EngineConfig.preset("paper").decoder_batch("cuda") == 256
    assert EngineConfig.preset("paper").decoder_batch("cpu") == 4  # bit-identical to 256 on a CPU, 10 GiB less peak
    assert EngineConfig.preset("paper", points_batch_size=256).decoder_batch("cpu") == 256
    assert EngineConfig.preset("fast").decoder_batch("cpu") == 4
