"""The `paper` preset's input steps equal, byte for byte, a plain re-derivation of the reference recipe (ALGORITHM.md
§1, §2.1, §3.1, §4.1, §10) written here with PIL / numpy / torch / torchvision directly, as the reference code does it:

- target: PIL `open → convert('RGB') → resize((1024, 1024))` (PIL's default filter), `/ 255.0` (float64), float32,
  torchvision `Normalize` → SAM2; the [0, 1] 1024² tensor `F.interpolate(mode='bicubic')` to 518, `Normalize` → DINOv2;
- reference: the [0, 1] image at original size, box corners `int()`-truncated, square of side 1.2·max(w, h) around
  their midpoint with `int()` edges clipped to the image, crop, bicubic `F.interpolate` to 518, `Normalize`; the mask
  crop bilinear to 518, then nearest to 37×37.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import Normalize

from ntt_engine import EngineConfig
from ntt_engine.backbones.dinov2 import DinoV2Encoder
from ntt_engine.backbones.sam2_proposer import Sam2ProposalGenerator, to_model_frame
from ntt_engine.export import mask_to_bbox
from ntt_engine.image_io import load_image
from ntt_engine.inputs import (
    reference_crop_box,
    reference_dinov2_crop_input,
    reference_dinov2_target_input,
    reference_sam2_input,
    sam2_dinov2_input,
)
from ntt_engine.pooling import reference_patch_weights
from ntt_engine.prompting import paper_grid
from ntt_engine.references import pool_references
from ntt_engine.types import PatchFeatures

H, W = 241, 333  # non-square, odd
CPU = torch.device("cpu")
NORMALISE = Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def generated_rgb() -> np.ndarray:
    """Smooth gradients, hard edges and noise: every resampling filter gives a different answer on it."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // (W - 1), yy * 255 // (H - 1), (xx + yy) % 256], axis=2).astype(np.int64)
    img[40:120, 60:200] = (250, 10, 30)
    img[150:230, 210:330] = (5, 200, 90)
    img = img + rng.integers(-20, 21, img.shape)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["RGB", "RGBA", "L"])
def image_file(request, tmp_path_factory):
    """A PNG without EXIF, in three modes, so `convert('RGB')` is exercised (alpha dropped, grey replicated)."""
    rgb = Image.fromarray(generated_rgb())
    if request.param == "RGBA":
        alpha = Image.fromarray(np.random.default_rng(3).integers(0, 256, (H, W), dtype=np.uint8))
        image = rgb.copy()
        image.putalpha(alpha)
    else:
        image = rgb.convert(request.param)
    path = tmp_path_factory.mktemp("img") / f"fixed-{request.param}.png"
    image.save(path)
    return path


# ------------------------------------------------------------------------------ the reference recipe, re-derived
def reference_target(path) -> torch.Tensor:
    """[3, 1024, 1024] float32 in [0, 1], as sam2's `_load_img_as_tensor(path, 1024)` + `.to(torch.float32)`."""
    img_np = np.array(Image.open(path).convert("RGB").resize((1024, 1024)))
    assert img_np.dtype == np.uint8
    return torch.from_numpy(img_np / 255.0).permute(2, 0, 1).to(torch.float32)


def reference_original(path) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1] at the original size."""
    img_np = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(img_np / 255.0).permute(2, 0, 1).to(torch.float32)


def reference_crop(bbox_xywh, img_h, img_w, context_ratio=0.2):
    bx1, by1, bw, bh = bbox_xywh
    x1, y1, x2, y2 = [int(v) for v in [bx1, by1, bx1 + bw, by1 + bh]]
    box_w, box_h = x2 - x1, y2 - y1
    mid_x, mid_y = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    crop_size = max(box_w, box_h) * (1.0 + context_ratio)
    return (max(0, int(mid_x - crop_size * 0.5)), max(0, int(mid_y - crop_size * 0.5)),
            min(img_w, int(mid_x + crop_size * 0.5)), min(img_h, int(mid_y + crop_size * 0.5)))


# ------------------------------------------------------------------------------ target steps
def test_sam2_input_is_pil_bicubic_squash_div255_normalise(image_file) -> None:
    ours = reference_sam2_input(load_image(image_file), CPU)
    expected = NORMALISE(reference_target(image_file).unsqueeze(0))
    assert ours.dtype == torch.float32 and ours.shape == (1, 3, 1024, 1024)
    assert torch.equal(ours, expected)


def test_dinov2_target_input_is_bicubic_of_the_1024_squash(image_file) -> None:
    ours = reference_dinov2_target_input(load_image(image_file), 518, CPU)
    tar_img_encoder = F.interpolate(reference_target(image_file).unsqueeze(0), size=(518, 518), mode="bicubic")
    expected = NORMALISE(tar_img_encoder)
    assert ours.shape == (1, 3, 518, 518)
    assert torch.equal(ours, expected)
    # and it is not the other recipe's input (a PIL squash straight to 518): the check can fail
    assert not torch.equal(ours, sam2_dinov2_input(load_image(image_file), 518, CPU))


# ------------------------------------------------------------------------------ reference crop steps
BOXES = [  # (x, y, w, h): interior, touching each border, whole image, tiny, non-integer
    (60.0, 40.0, 140.0, 80.0),
    (0.0, 0.0, 50.0, 30.0),
    (290.0, 200.0, 43.0, 41.0),
    (0.0, 100.0, 333.0, 20.0),
    (0.0, 0.0, 333.0, 241.0),
    (150.0, 120.0, 1.0, 1.0),
    (331.0, 239.0, 2.0, 2.0),
    (12.7, 30.2, 50.6, 20.9),
    (100.49, 7.51, 3.98, 60.02),
]


@pytest.mark.parametrize("box", BOXES)
def test_crop_box_is_the_reference_int_truncation(box) -> None:
    expected = reference_crop(box, H, W)
    assert reference_crop_box(box, (H, W), 0.2) == expected
    x0, y0, x1, y1 = expected
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H


@pytest.mark.parametrize("box", BOXES)
def test_crop_image_and_mask_inputs_match(box, image_file) -> None:
    x0, y0, x1, y1 = reference_crop(box, H, W)
    ref_img_crop = reference_original(image_file)[:, y0:y1, x0:x1]
    expected = NORMALISE(F.interpolate(ref_img_crop.unsqueeze(0), size=(518, 518), mode="bicubic"))
    image = load_image(image_file)
    ours = reference_dinov2_crop_input(np.ascontiguousarray(image[y0:y1, x0:x1]), 518, CPU)
    assert torch.equal(ours, expected)

    mask = np.zeros((H, W), np.uint8)  # the instance: the box's pixels, as annToMask would rasterise it
    mask[int(box[1]):int(np.ceil(box[1] + box[3])), int(box[0]):int(np.ceil(box[0] + box[2]))] = 1
    mask_crop = torch.from_numpy(mask).reshape(1, H, W).to(torch.float)[:, y0:y1, x0:x1]
    mask_518 = F.interpolate(mask_crop.unsqueeze(0), size=(518, 518), mode="bilinear").squeeze(0)
    expected_mask = F.interpolate(mask_518.unsqueeze(0), size=(37, 37), mode="nearest").reshape(37, 37)
    features = PatchFeatures(torch.zeros(37, 37, 1), (y1 - y0, x1 - x0), (518, 518))
    weights = reference_patch_weights(features, mask[y0:y1, x0:x1].astype(bool), "nearest")
    assert torch.equal(weights, expected_mask)


def test_pool_references_encodes_exactly_the_reference_crop() -> None:
    """The wiring: with crops on, the crop handed to the encoder is the reference's box of the mask's extent."""
    image = generated_rgb()
    mask = np.zeros((H, W), bool)
    mask[37:131, 201:289] = True
    mask[60, 300] = True  # an outlying pixel widens the box
    seen = []

    def encode(crop: np.ndarray) -> PatchFeatures:
        seen.append(crop)
        return PatchFeatures(torch.ones(37, 37, 4), crop.shape[:2], (518, 518))

    pool_references(image, [mask], ["thing"], encode, crop=True, context=0.2, sampling="nearest",
                    whole_image_features=lambda: pytest.fail("whole-image features used with crop=True"))
    x0, y0, x1, y1 = reference_crop(mask_to_bbox(mask), H, W)
    assert len(seen) == 1 and np.array_equal(seen[0], image[y0:y1, x0:x1])


# ------------------------------------------------------------------------------ backbones and preset wiring
def test_paper_backbones_use_the_reference_recipe() -> None:
    config = EngineConfig.preset("paper")
    assert config.input_recipe == "reference" and config.decoder_batch("cuda") == 256
    assert EngineConfig.preset("fast").input_recipe == "sam2"
    with pytest.raises(ValueError, match="input_recipe"):
        EngineConfig.preset("paper", input_recipe="pil")
    image = generated_rgb()
    crop = np.ascontiguousarray(image[10:90, 20:150])
    dino = DinoV2Encoder("dinov2_vits14", None, input_size=518, random_weights=True, input_recipe="reference")
    assert dino.name == "dinov2_vits14@518+reference-inputs:random-seed0"  # not interchangeable with sam2-recipe
    assert torch.equal(dino.preprocess(image), reference_dinov2_target_input(image, 518, CPU))
    assert torch.equal(dino.preprocess_crop(crop), reference_dinov2_crop_input(crop, 518, CPU))
    plain = DinoV2Encoder("dinov2_vits14", None, input_size=518, random_weights=True)
    assert plain.name == "dinov2_vits14@518:random-seed0"
    assert torch.equal(plain.preprocess_crop(crop), plain.preprocess(crop))  # sam2 recipe: crops are images
    sam = Sam2ProposalGenerator("sam2.1_hiera_tiny", None, random_weights=True, input_recipe="reference")
    assert sam.name == "sam2.1_hiera_tiny+reference-inputs:random-seed0"
    assert torch.equal(sam.preprocess(image), reference_sam2_input(image, CPU))


def test_paper_grid_reaches_the_decoder_as_the_reference_coordinates() -> None:
    """linspace(0, 1023, 32) + 0.5 in the 1024 frame, exactly, whatever the image size (the +0.5 of SAM's prompt
    encoder comes after, inside sam2)."""
    x, y = torch.meshgrid(torch.linspace(0, 1023, 32), torch.linspace(0, 1023, 32), indexing="ij")
    query_points = torch.stack((x.reshape(-1), y.reshape(-1)), dim=-1) + 0.5  # the reference's, in its order
    for size in ((H, W), (480, 640), (1000, 1), (4096, 3000), (7, 4095)):
        frame = to_model_frame(paper_grid(size, 32), size)
        assert frame.dtype == np.float32
        assert torch.equal(torch.from_numpy(frame), query_points), size


def test_engine_hands_reference_crops_to_encode_crop() -> None:
    """Engine wiring: with crops on, an encoder's `encode_crop` (if it has one) gets the crop; targets use encode."""
    from ntt_engine import Engine
    from ntt_engine.backbones.weightless import ColourTextureEncoder

    class RecordingEncoder(ColourTextureEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.crops: list[np.ndarray] = []

        def encode_crop(self, crop: np.ndarray) -> PatchFeatures:
            self.crops.append(crop)
            return self.encode(crop)

    encoder = RecordingEncoder()
    engine = Engine(EngineConfig.preset("synthetic", reference_crop=True), encoder=encoder)
    image = generated_rgb()
    mask = np.zeros((H, W), bool)
    mask[40:120, 60:200] = True
    engine.add_reference("r", image, ["red"], [mask])
    x0, y0, x1, y1 = reference_crop(mask_to_bbox(mask), H, W)
    assert len(encoder.crops) == 1 and np.array_equal(encoder.crops[0], image[y0:y1, x0:x1])
