"""The whole engine on the real (smallest) architectures with random weights: a smoke test of the wiring."""
import logging

import numpy as np

from ntt_engine import Engine, EngineConfig


def test_fast_preset_on_random_weights_runs_end_to_end(caplog):
    config = EngineConfig.preset("fast", random_weights=True, prompting="grid", points_per_side=3,
                                 points_batch_size=4, encoder_input_size=224)
    with caplog.at_level(logging.WARNING):
        engine = Engine(config)
    assert "RANDOM WEIGHTS" in caplog.text  # loud
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[30:80, 40:120] = True
    engine.add_reference("r", image, ["thing"], [mask])
    instances = engine.predict(image)
    analysis = engine.analyse(image)
    assert analysis.prompts_used == 9  # 3x3 grid in batches of 4: the last partial batch is not dropped
    assert all(inst.label == "thing" and np.isfinite(inst.score) for inst in instances)
    assert all(inst.mask.shape == (120, 160) for inst in instances)
    assert engine.model_version.startswith("fast-")


def test_paper_preset_with_reference_inputs_runs_end_to_end():
    config = EngineConfig.preset("paper", random_weights=True, proposer="sam2.1_hiera_tiny", encoder="dinov2_vits14",
                                 points_per_side=3)
    engine = Engine(config)
    assert engine.proposer.points_batch_size == 4  # CPU: batches of 4 (bit-identical to the reference's 256 here)
    assert "+reference-inputs" in engine.encoder.name and "+reference-inputs" in engine.proposer.name
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (121, 163, 3), dtype=np.uint8)
    mask = np.zeros((121, 163), bool)
    mask[30:80, 40:120] = True
    engine.add_reference("r", image, ["thing"], [mask])  # an object crop through encode_crop
    instances = engine.predict(image)
    assert engine.analyse(image).prompts_used == 9
    assert all(inst.label == "thing" and inst.mask.shape == (121, 163) for inst in instances)
    assert engine.model_version.startswith("paper-")
