"""SAM2's prompt decoder under other runtimes against the eager default, measured in one run (issue 18 #2).

    python benchmarks/bench_runtimes.py                     # 256 prompts of the paper's grid, 2 threads
    pip install onnxruntime openvino onnxscript             # the optional runtimes (skipped, with a line, if absent)

The decoder's two-way transformer with the image's work shared (ntt_engine/backbones/sam2_decode.py: ~80 % of the
decoder's time) is what each runtime runs; the rest of the decoder (prompt encoder, IoU head, upscaling) stays eager
in every variant, so the parity check below is end to end:
- eager: the default (torch, batches of 4);
- torch.compile (inductor, C++ on a CPU) of that function;
- ONNX Runtime, CPU execution provider, on its ONNX export (dynamic batch; exported once per run);
- OpenVINO, CPU, on the same ONNX file.
For each: median wall seconds for the prompts (rounds alternating, after one warm-up batch), ms per prompt, the
speed-up over eager, and parity against eager (gate decisions at 0.4 identical, masks' IoU >= 0.999, predicted IoUs
within 1e-4: the bar for adopting a runtime as a default). SAM2.1 hiera-T, random weights perturbed as in
benchmarks/paper_parity.py (so the gate sees realistic predicted IoUs), a 640×480 image. Writes
benchmarks/results/bench_runtimes_cpu.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ntt_engine.backbones.sam2_proposer as proposer_module  # noqa: E402
from ntt_engine.backbones.sam2_decode import two_way_one_image  # noqa: E402
from ntt_engine.backbones.sam2_proposer import Sam2ProposalGenerator  # noqa: E402
from ntt_engine.prompting import paper_grid  # noqa: E402
from paper_parity import perturb_sam2  # noqa: E402

GATE = 0.4
TwoWay = Callable[[object, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SharedTwoWay(torch.nn.Module):
    """two_way_one_image as a module, for torch.compile and the ONNX export."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        return two_way_one_image(self.transformer, image, image_pe, tokens)


def tokens_per_prompt(decoder) -> int:
    """Output tokens (object score, IoU, masks) then the prompt's: one point and the not-a-point padding."""
    return int(decoder.pred_obj_scores) + 1 + decoder.num_mask_tokens + 2


def compiled(transformer) -> TwoWay:
    module = torch.compile(SharedTwoWay(transformer), dynamic=False)
    return lambda _t, image, pe, tokens: module(image, pe, tokens)


def exported(transformer, image, pe, tokens, folder: Path) -> Path:
    path = folder / "two_way.onnx"
    torch.onnx.export(SharedTwoWay(transformer), (image, pe, tokens), str(path),
                      input_names=["image", "image_pe", "tokens"], output_names=["queries", "keys"],
                      dynamic_axes={"tokens": {0: "batch", 1: "tokens"}, "queries": {0: "batch", 1: "tokens"},
                                    "keys": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def onnxruntime_runner(path: Path, threads: int) -> TwoWay:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(_t, image, pe, tokens):
        queries, keys = session.run(None, {"image": image.numpy(), "image_pe": pe.numpy(), "tokens": tokens.numpy()})
        return torch.from_numpy(queries), torch.from_numpy(keys)
    return run


def openvino_runner(path: Path, threads: int) -> TwoWay:
    import openvino as ov

    core = ov.Core()
    model = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})

    def run(_t, image, pe, tokens):
        out = model([image.numpy(), pe.numpy(), tokens.numpy()])
        return torch.from_numpy(out[0].copy()), torch.from_numpy(out[1].copy())
    return run


def decode(sam: Sam2ProposalGenerator, embedding, points: np.ndarray, two_way: TwoWay):
    proposer_module.two_way_one_image = two_way  # what _decode_best calls for a batch of prompts
    try:
        started = time.perf_counter()
        out = sam.propose(embedding, points)
        return time.perf_counter() - started, out
    finally:
        proposer_module.two_way_one_image = two_way_one_image


def parity(eager, other) -> dict:
    gate = int(((eager.quality > GATE) != (other.quality > GATE)).sum())
    a, b = eager.logits > 0, other.logits > 0
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float().clamp(min=1)
    iou = inter / union
    quality = float((eager.quality - other.quality).abs().max())
    return {"gate_decisions_differ": gate, "mask_iou_min": round(float(iou.min()), 6),
            "pred_iou_max_abs_diff": quality, "logits_max_abs_diff": float((eager.logits - other.logits).abs().max()),
            "within_tolerance": bool(gate == 0 and float(iou.min()) >= 0.999 and quality <= 1e-4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_runtimes_cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    sam = Sam2ProposalGenerator("sam2.1_hiera_tiny", None, points_batch_size=4, random_weights=True,
                                input_recipe="reference")
    perturb_sam2(sam, image)
    embedding = sam.embed(image)
    side = max(1, round(args.prompts ** 0.5))
    points = paper_grid(image.shape[:2], side)[:args.prompts]
    transformer = sam.model.sam_mask_decoder.transformer
    runners: dict[str, TwoWay] = {"eager": two_way_one_image}
    notes: dict[str, str] = {}
    example = (embedding.image_embed, sam.model.sam_prompt_encoder.get_dense_pe(),
               torch.zeros((4, tokens_per_prompt(sam.model.sam_mask_decoder), 256)))
    setup_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        started = time.perf_counter()
        try:
            runners["torch.compile"] = compiled(transformer)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run here is reported, not fatal
            notes["torch.compile"] = f"{type(exc).__name__}: {exc}"
        setup_s["torch.compile"] = time.perf_counter() - started
        onnx_path = None
        try:
            started = time.perf_counter()
            onnx_path = exported(transformer, *example, Path(tmp))
            setup_s["onnx export"] = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001
            notes["onnx export"] = f"{type(exc).__name__}: {exc}"
        for name, module, make in (("onnxruntime", "onnxruntime", onnxruntime_runner),
                                   ("openvino", "openvino", openvino_runner)):
            if onnx_path is None or importlib.util.find_spec(module) is None:
                notes[name] = notes.get(name) or (f"pip install {module}" if onnx_path else "no ONNX export")
                continue
            try:
                started = time.perf_counter()
                runners[name] = make(onnx_path, args.threads)
                setup_s[name] = time.perf_counter() - started
            except Exception as exc:  # noqa: BLE001
                notes[name] = f"{type(exc).__name__}: {exc}"

        for name, runner in list(runners.items()):  # warm-up (compiles torch.compile's graph)
            try:
                decode(sam, embedding, points[:8], runner)
            except Exception as exc:  # noqa: BLE001
                notes[name] = f"{type(exc).__name__}: {exc}"
                del runners[name]
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        outputs = {}
        for _ in range(args.rounds):
            for name, runner in runners.items():
                elapsed, outputs[name] = decode(sam, embedding, points, runner)
                seconds[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    result = {"prompts": len(points), "threads": args.threads, "torch": torch.__version__,
              "median_s": median, "ms_per_prompt": {k: 1000 * v / len(points) for k, v in median.items()},
              "speedup_over_eager": {k: round(median["eager"] / v, 3) for k, v in median.items()},
              "setup_s": setup_s, "parity_against_eager": {k: parity(outputs["eager"], v) for k, v in outputs.items()
                                                           if k != "eager"},
              "not_run": notes, "seconds": seconds}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name in median:
        print(f"{name:14} {1000 * median[name] / len(points):7.1f} ms/prompt  x{result['speedup_over_eager'][name]}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
