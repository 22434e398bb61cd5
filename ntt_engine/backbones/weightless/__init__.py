"""Weightless TEST backbones: deterministic stand-ins for DINOv2 and SAM2, for logic tests on generated images.

They are *not* models of anything and must never be used for real labelling. They look only at the pixels of the
image they are given (no ground truth, no knowledge of the generator's palette) and are designed for the kind of
images `ntt_engine.synthetic` draws: flat-hued textured objects on a low-saturation background.

- `ColourTextureEncoder` ("test-colour-texture-v1"): a `FeatureEncoder` whose cell features are a soft hue
  histogram (weighted by how chromatic the pixels are), an achromatic brightness histogram, and local gradient
  orientation statistics (texture), all non-negative.
- `ColourTextureEncoder(fine_texture=True)` ("test-colour-texture-v2"): the same colour channels, with the texture
  channels replaced by soft one-hot texture codes (dominant orientation × edge share, dark share), weighted as much
  as colour, so that two textures of one hue (stripes vs waves, dots vs rings, checker vs grid) are told apart, as
  DINOv2 tells them apart. The labelling-effort benchmark
  uses it (look-alikes of a class's exact hue); the `synthetic` preset keeps v1.
- `ConnectedComponentProposer` ("test-connected-components-v2"): a `ProposalGenerator` that splits the image into
  connected regions of one hue (chromatic pixels whose neighbours differ by < `hue_tolerance` degrees) or of
  achromatic pixels, and answers every click with the region under it.
"""
from .colour import hsv_planes
from .encoder import ColourTextureEncoder
from .proposer import ComponentMap, ConnectedComponentProposer, connected_components

__all__ = ["ColourTextureEncoder", "ComponentMap", "ConnectedComponentProposer", "connected_components",
           "hsv_planes"]
