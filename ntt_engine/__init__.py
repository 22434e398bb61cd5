"""ntt_engine: training-free few-shot instance segmentation ("No Time To Train!", arXiv 2507.02798).

The method as a library: no Label Studio, no web server. See ALGORITHM.md for the math of each stage.
"""
from .config import EngineConfig
from .engine import Engine
from .image_io import ImageLoadError, load_image
from .memory import MemoryBank, MemoryFormatError
from .prepared import ImageAnalysis
from .protocols import FeatureEncoder, ProposalGenerator
from .references import ReferenceError
from .types import Detected, Instance, PatchFeatures, PromptSet, Proposals

__all__ = ["Detected", "Engine", "EngineConfig", "FeatureEncoder", "ImageAnalysis", "ImageLoadError", "Instance",
           "MemoryBank", "MemoryFormatError", "PatchFeatures", "PromptSet", "ProposalGenerator", "Proposals",
           "ReferenceError", "load_image"]

__version__ = "0.1.0"
