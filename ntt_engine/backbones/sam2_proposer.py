"""SAM2 as a ProposalGenerator: one image-encoder pass, then many cheap prompt decodes (ALGORITHM.md §3).

Built on the official `sam2` package (model construction, weights, prompt encoder, mask decoder), but not on
`SAM2ImagePredictor`: the reference's "noAMG" path needs all four mask tokens per prompt, no object-score gating and
the embedding without `no_mem_embed`, none of which the predictor exposes.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sam2.build_sam import build_sam2
from sam2.utils.transforms import SAM2Transforms

from .precision import autocast_for
from .sam2_decode import two_way_one_image
from .weights import random_init, require_checkpoint
from .. import inputs
from ..checkpoints import CheckpointError, describe_mismatch, weights_id
from ..types import PromptSet, Proposals

logger = logging.getLogger(__name__)

_SIZE_CODE = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
# registry name → sam2 hydra config (shipped inside the sam2 package)
SAM2_CONFIGS: dict[str, str] = {
    **{f"sam2_hiera_{s}": f"configs/sam2/sam2_hiera_{c}.yaml" for s, c in _SIZE_CODE.items()},
    **{f"sam2.1_hiera_{s}": f"configs/sam2.1/sam2.1_hiera_{c}.yaml" for s, c in _SIZE_CODE.items()},
}
BOX_LABELS = (2, 3)  # SAM's point labels for a box's top-left and bottom-right corners


LARGE_BATCH_ROWS = 16  # CPU GEMMs of this many rows or more round as the reference's batches of 256 do


def _rows_as_in_a_large_batch(head: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """`head(rows)` for a few rows, computed on rows padded with zeros to `LARGE_BATCH_ROWS` (rows are independent):
    a CPU GEMM of fewer rows takes another kernel and rounds differently in the last bit, which would move predicted
    IoUs of small decoder batches off those of the reference's batches of 256."""
    if rows.shape[0] >= LARGE_BATCH_ROWS:
        return head(rows)
    padding = rows.new_zeros((LARGE_BATCH_ROWS - rows.shape[0], *rows.shape[1:]))
    return head(torch.cat([rows, padding]))[:rows.shape[0]]


def to_model_frame(points_xy: np.ndarray, image_size: tuple[int, int], resolution: int = 1024) -> np.ndarray:
    """Original-pixel (x, y) → the squashed resolution² input frame: x·R/W, y·R/H (SAM2's transform_coords).

    In float64, multiply first: the paper grid's points (33k + ½)·W/1024 come back as exactly 33k + ½, the
    reference's own prompt coordinates (a float32 product with R/W would be off by an ulp)."""
    h, w = image_size
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return (pts * resolution / np.array([w, h], dtype=np.float64)).astype(np.float32)


def from_model_frame(points_xy: np.ndarray, image_size: tuple[int, int], resolution: int = 1024) -> np.ndarray:
    """Inverse of `to_model_frame`."""
    h, w = image_size
    pts = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)
    return pts * np.array([w / resolution, h / resolution], dtype=np.float32)


@dataclass(frozen=True)
class Sam2Embedding:
    """The image encoder's output for one image, reused by every decode."""

    image_embed: torch.Tensor  # [1, 256, 64, 64]
    high_res_feats: tuple[torch.Tensor, torch.Tensor]  # [1, 32, 256, 256], [1, 64, 128, 128] (conv_s0/s1 applied)
    image_size: tuple[int, int]  # (H, W) of the original image

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.image_embed, *self.high_res_feats))


class Sam2ProposalGenerator:
    """ProposalGenerator on the official SAM2 / SAM2.1 models."""

    def __init__(self, model_name: str, checkpoint: Path | None, device: str = "cpu", points_batch_size: int = 64,
                 add_no_mem_embed: bool = False, random_weights: bool = False,
                 checkpoint_sha256: str | None = None, precision: str = "fp32", input_recipe: str = "sam2") -> None:
        if model_name not in SAM2_CONFIGS:
            raise ValueError(f"unknown SAM2 model {model_name!r}; choose one of {', '.join(SAM2_CONFIGS)}")
        if points_batch_size < 1:
            raise ValueError(f"points_batch_size must be >= 1, got {points_batch_size}")
        require_checkpoint(model_name, checkpoint, random_weights)
        self.model_name = model_name
        self.device = torch.device(device)
        self.precision = precision
        autocast_for(self.device, precision)  # validates the value early
        self.points_batch_size = points_batch_size
        # the first two-way block's image-only projections once per batch, not once per prompt (sam2_decode.py)
        self.share_image_work = True
        self.add_no_mem_embed = add_no_mem_embed
        self.input_recipe = inputs.check_recipe(input_recipe)
        config = SAM2_CONFIGS[model_name]

        if random_weights:
            self.model, weights = random_init(model_name, lambda: build_sam2(config, None, device=str(self.device)))
        else:
            path = Path(checkpoint)  # type: ignore[arg-type]
            self.model = self._build(config, path)
            weights = weights_id(path, checkpoint_sha256)
        self.model.eval()
        recipe = "" if input_recipe == "sam2" else f"+{input_recipe}-inputs"
        self.name = f"{model_name}{'+nomem' if add_no_mem_embed else ''}{recipe}:{weights}"
        self.resolution = int(self.model.image_size)
        self._transforms = SAM2Transforms(resolution=self.resolution, mask_threshold=0.0)
        decoder = self.model.sam_mask_decoder
        # the configs put the sigmoid inside the IoU head; apply it here only if a config does not
        self._iou_needs_sigmoid = not getattr(decoder.iou_prediction_head, "sigmoid_output", False)

    def _build(self, config: str, path: Path) -> torch.nn.Module:
        expected = f"{self.model_name} ({config})"
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} for {expected} does not exist")
        try:
            # sam2 loads strictly: torch.load(weights_only)["model"], then load_state_dict with strict=True
            return build_sam2(config, str(path), device=str(self.device))
        except torch.OutOfMemoryError:  # a device problem, not a checkpoint problem
            raise
        except KeyError as exc:
            raise CheckpointError(f"checkpoint {path} for {expected} has no {exc} entry: a SAM2 checkpoint is "
                                  f"{{'model': state_dict}}") from exc
        except (RuntimeError, EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError,
                zipfile.BadZipFile) as exc:
            detail = self._diagnose(config, path) or f"{type(exc).__name__}: {exc}"
            if len(detail) > 1500:
                detail = detail[:1500] + " …"
            raise CheckpointError(f"checkpoint {path} could not be loaded as {expected} (wrong model, truncated "
                                  f"or corrupt file?): {detail}") from exc

    @staticmethod
    def _diagnose(config: str, path: Path) -> str | None:
        """On a failed load only: which keys / shapes differ (sam2's own error lists every key)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model"]
            with torch.random.fork_rng(devices=[]):
                reference = build_sam2(config, None, device="cpu").state_dict()
        except Exception:  # unreadable file: the original error says more
            return None
        return describe_mismatch(reference, state) or None

    # ------------------------------------------------------------------ image encoder
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] → the normalised resolution² input [1, 3, R, R] on the model's device."""
        inputs.check_rgb(image)
        if self.input_recipe == "reference":  # PIL bicubic squash, ÷255, mean/std (ALGORITHM.md §3.1)
            return inputs.reference_sam2_input(image, self.device, self.resolution)
        # sam2's own transforms: torchvision bilinear squash (antialiased), then mean/std
        return self._transforms.transforms(self._transforms.to_tensor(image).to(self.device))[None]

    def embed(self, image: np.ndarray) -> Sam2Embedding:
        x = self.preprocess(image)
        with torch.inference_mode(), autocast_for(self.device, self.precision):
            out = self.model.forward_image(x)  # also applies conv_s0 / conv_s1 to the two high-res levels
            s0, s1, embed = out["backbone_fpn"][-3:]
            if self.add_no_mem_embed:  # stock SAM2ImagePredictor does this; the reference does not (§3.2)
                embed = embed + self.model.no_mem_embed.view(1, -1, 1, 1)
        return Sam2Embedding(image_embed=embed, high_res_feats=(s0, s1),
                             image_size=(int(image.shape[0]), int(image.shape[1])))

    # ------------------------------------------------------------------ decoder
    def _decode(self, emb: Sam2Embedding, coords: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Straightforward decode, all 4 tokens: logits [B, 4, 256, 256], IoU [B, 4]. Kept as the reference that
        `_decode_best` must reproduce (tests compare them)."""
        m = self.model
        # no `boxes` argument: the prompt encoder then appends its not-a-point padding token, as SAM2's predictor does
        sparse, dense = m.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        # predict_masks (not forward): every token, and the object-score logit is simply ignored (§3.4 bypass)
        logits, iou, _, _ = m.sam_mask_decoder.predict_masks(
            image_embeddings=emb.image_embed,
            image_pe=m.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=True,
            high_res_features=list(emb.high_res_feats),
        )
        if self._iou_needs_sigmoid:
            iou = iou.sigmoid()
        return logits, iou

    def _decode_best(self, emb: Sam2Embedding, coords: torch.Tensor, labels: torch.Tensor, multimask: bool,
                     min_quality: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`predict_masks` restructured so the expensive mask upscaling (≈40 % of the decoder) runs only for the
        prompts that pass the quality gate, and only the chosen token's mask is kept. Same operations in the same
        order on the rows it keeps: bit-identical to `_decode` on a CPU (`tests/test_sam2_exact_speedups.py`).

        Returns (logits [k, 256, 256], quality [k], kept row indices [k])."""
        m = self.model
        decoder = m.sam_mask_decoder
        sparse, dense = m.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        shift = 1 if decoder.pred_obj_scores else 0
        weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if decoder.pred_obj_scores:
            weights.insert(0, decoder.obj_score_token.weight)
        output_tokens = torch.cat(weights, dim=0).unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        b, (c, h, w) = tokens.shape[0], emb.image_embed.shape[1:]
        # without a mask prompt every prompt has one dense embedding; one prompt alone has nothing to share
        if self.share_image_work and b > 1 and dense.stride(0) == 0:
            hs, src = two_way_one_image(decoder.transformer, emb.image_embed + dense[:1],
                                        m.sam_prompt_encoder.get_dense_pe(), tokens)
        else:  # as predict_masks: the image repeated per prompt
            src = torch.repeat_interleave(emb.image_embed, b, dim=0) + dense
            pos_src = torch.repeat_interleave(m.sam_prompt_encoder.get_dense_pe(), b, dim=0)
            hs, src = decoder.transformer(src, pos_src, tokens)
        iou = _rows_as_in_a_large_batch(decoder.iou_prediction_head, hs[:, shift, :])
        if self._iou_needs_sigmoid:
            iou = iou.sigmoid()
        mask_tokens_out = hs[:, shift + 1: shift + 1 + decoder.num_mask_tokens, :]
        rows = torch.arange(b, device=iou.device)
        best = iou[:, 1:].argmax(dim=1) + 1 if multimask else torch.zeros(b, dtype=torch.long, device=iou.device)
        quality = iou[rows, best]
        keep = rows if min_quality is None else torch.nonzero(quality > min_quality).flatten()
        if keep.numel() == 0:
            return torch.zeros((0, 4 * h, 4 * w), device=iou.device), quality[keep], keep
        upscale_src = src[keep].transpose(1, 2).reshape(keep.numel(), c, h, w)
        if decoder.use_high_res_features:
            dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
            feat_s0, feat_s1 = emb.high_res_feats
            upscaled = act1(ln1(dc1(upscale_src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)
        else:
            upscaled = decoder.output_upscaling(upscale_src)
        # every token's hypernetwork on the whole batch, then one [k, 4, c] @ [k, c, h·w] product, as predict_masks
        # forms them: the chosen token's logits come out bit-identical to the straightforward decode. (CPU GEMMs
        # of < 4 rows, or a [k, 1, c] product, sum in another order: ~1e-7 apart.) Both are cheap next to upscaling.
        hyper = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                            dim=1)[keep]
        k, uc, uh, uw = upscaled.shape
        logits = (hyper @ upscaled.view(k, uc, uh * uw))[torch.arange(k, device=iou.device), best[keep]]
        return logits.view(k, uh, uw), quality[keep], keep

    def _run(self, emb: Sam2Embedding, coords: torch.Tensor, labels: torch.Tensor, multimask: bool,
             min_quality: float | None = None) -> Proposals:
        """Decode B prompts in batches of points_batch_size, the last partial batch included."""
        out_logits, out_quality, out_index = [], [], []
        with torch.inference_mode(), autocast_for(self.device, self.precision):
            for start in range(0, coords.shape[0], self.points_batch_size):
                stop = start + self.points_batch_size
                logits, quality, kept = self._decode_best(emb, coords[start:stop], labels[start:stop], multimask,
                                                          min_quality)
                out_logits.append(logits.float().cpu())
                out_quality.append(quality.float().cpu())
                out_index.append(kept.cpu() + start)
        if not out_logits:
            return Proposals.empty(emb.image_size)
        # clone: plain tensors rather than inference tensors, so callers may modify them
        return Proposals(torch.cat(out_logits).clone(), torch.cat(out_quality).clone(), emb.image_size,
                         torch.cat(out_index).clone())

    def _frame(self, points_xy: np.ndarray, emb: Sam2Embedding) -> torch.Tensor:
        return torch.from_numpy(to_model_frame(points_xy, emb.image_size, self.resolution)).to(self.device)

    def propose(self, embedding: Sam2Embedding, points_xy: np.ndarray, min_quality: float | None = None) -> Proposals:
        """One single-click proposal per point, in input order, 256×256 logits. With `min_quality`, prompts whose
        best predicted IoU is not above it are dropped before their masks are upscaled (`prompt_index` says which
        prompts remain)."""
        pts = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)
        if len(pts) == 0:
            return Proposals.empty(embedding.image_size)
        coords = self._frame(pts, embedding)[:, None, :]  # [N, 1, 2]
        labels = torch.ones((len(pts), 1), dtype=torch.int, device=self.device)
        return self._run(embedding, coords, labels, multimask=True, min_quality=min_quality)

    def segment(self, embedding: Sam2Embedding, prompts: PromptSet) -> Proposals:
        """One proposal per box (single-mask token 0; any points are added to every box's prompt), or — without
        boxes — one proposal for all points together (best multimask token by predicted IoU)."""
        points = np.asarray(prompts.points, dtype=np.float32).reshape(-1, 2)
        point_labels = torch.as_tensor(np.asarray(prompts.point_labels).reshape(-1), dtype=torch.int,
                                       device=self.device)
        if len(point_labels) != len(points):
            raise ValueError(f"{len(points)} points but {len(point_labels)} point labels")
        boxes = np.asarray(prompts.boxes, dtype=np.float32).reshape(-1, 4)
        point_coords = self._frame(points, embedding)  # [P, 2]
        if len(boxes):
            corners = self._frame(boxes.reshape(-1, 2), embedding).reshape(-1, 2, 2)  # [B, 2, 2]
            n = len(boxes)
            box_labels = torch.tensor(BOX_LABELS, dtype=torch.int, device=self.device).expand(n, 2)
            # box corners first, then the points, as SAM2's predictor concatenates them
            coords = torch.cat([corners, point_coords[None].expand(n, -1, -1)], dim=1)
            labels = torch.cat([box_labels, point_labels[None].expand(n, -1)], dim=1)
            return self._run(embedding, coords, labels, multimask=False)
        if len(points) == 0:
            return Proposals.empty(embedding.image_size)
        return self._run(embedding, point_coords[None], point_labels[None], multimask=True)
