"""Backbone factory: config names → FeatureEncoder / ProposalGenerator instances."""
from __future__ import annotations

import logging

import torch

from ..checkpoints import resolve
from ..config import EngineConfig
from ..protocols import FeatureEncoder, ProposalGenerator

log = logging.getLogger(__name__)

TEST_ENCODERS = ("test_colour_texture", "test_colour_texture_v2")
TEST_PROPOSERS = ("test_connected_components",)


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_encoder(config: EngineConfig) -> FeatureEncoder:
    if config.encoder in TEST_ENCODERS:
        from .weightless import ColourTextureEncoder
        return ColourTextureEncoder(fine_texture=config.encoder == "test_colour_texture_v2")
    from .dinov2 import DinoV2Encoder
    checkpoint = None if config.random_weights else resolve(
        config.encoder_checkpoint or config.encoder, sha256=config.encoder_sha256, config_key="encoder_checkpoint")
    return DinoV2Encoder(config.encoder, checkpoint, input_size=config.encoder_input_size,
                         device=pick_device(config.device), random_weights=config.random_weights,
                         checkpoint_sha256=config.encoder_sha256, precision=config.precision,
                         input_recipe=config.input_recipe)


def build_proposer(config: EngineConfig) -> ProposalGenerator:
    if config.proposer in TEST_PROPOSERS:
        from .weightless import ConnectedComponentProposer
        return ConnectedComponentProposer()
    from .sam2_proposer import Sam2ProposalGenerator
    checkpoint = None if config.random_weights else resolve(
        config.proposer_checkpoint or config.proposer, sha256=config.proposer_sha256, config_key="proposer_checkpoint")
    device = pick_device(config.device)
    return Sam2ProposalGenerator(config.proposer, checkpoint, device=device,
                                 points_batch_size=config.decoder_batch(device),
                                 add_no_mem_embed=config.add_no_mem_embed, random_weights=config.random_weights,
                                 checkpoint_sha256=config.proposer_sha256, precision=config.precision,
                                 input_recipe=config.input_recipe)
