"""Brush RLE decoding: label-studio-sdk's decoder against the bounded one the backend uses (brush_rle.py), measured
in one run on this machine, each in its own subprocess so that its peak RSS is its own.

    python benchmarks/bench_brush_decode.py

Inputs: a hand-drawn-like mask (one disc) at 2000x2000, a noise mask at 800x600 (the worst an editor could draw, within
the block bound), and the hostile RLE at the backend's new limit on a 2000x2000 canvas (4 MiB of 1-value blocks),
which the bounded decoder refuses after MAX_BLOCKS blocks. Prints seconds, peak RSS and the ratios.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.hostile_inputs

SIZES = {"blob": (2000, 2000), "noise": (600, 800), "hostile": (2000, 2000)}  # (height, width)


def measure(decoder: str, kind: str) -> dict:
    import resource
    import time

    import numpy as np
    from label_studio_sdk.converter import brush

    from labelstudio_backend.labelstudio.brush_rle import BrushRleError, decode_brush_values
    from labelstudio_backend.labelstudio.regions import encode_brush
    from support.hostile_inputs import rle_many_blocks

    height, width = SIZES[kind]
    if kind == "hostile":
        rle = rle_many_blocks(width, height, 4 * 1024 * 1024)
    elif kind == "blob":
        yy, xx = np.ogrid[:height, :width]
        rle = encode_brush((yy - 900) ** 2 + (xx - 1100) ** 2 < 600 ** 2)
    else:
        rle = encode_brush(np.random.default_rng(0).random((height, width)) > 0.5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    outcome = "decoded"
    try:
        if decoder == "sdk":
            brush.decode_rle(rle)
        else:
            decode_brush_values(bytes(rle), height * width * 4)
    except BrushRleError as exc:
        outcome = f"refused ({exc})"
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"decoder": decoder, "kind": kind, "rle_bytes": len(rle), "seconds": round(seconds, 3),
            "rss_growth_mib": round(peak - before), "outcome": outcome}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], sys.argv[2])))
        return
    rows = {}
    for kind in ("blob", "noise", "hostile"):
        for decoder in ("sdk", "bounded"):
            out = subprocess.run([sys.executable, __file__, decoder, kind], capture_output=True, text=True,
                                 check=True).stdout
            rows[(decoder, kind)] = row = json.loads(out.strip().splitlines()[-1])
            print(f"{kind:8s} {decoder:8s} {row['rle_bytes']:>9d} B  {row['seconds']:7.3f} s  "
                  f"+{row['rss_growth_mib']:5d} MiB  {row['outcome']}")
    for kind in ("blob", "noise", "hostile"):
        sdk, bounded = rows[("sdk", kind)], rows[("bounded", kind)]
        print(f"{kind}: bounded decoder {sdk['seconds'] / max(bounded['seconds'], 1e-6):.1f}x faster, "
              f"{max(sdk['rss_growth_mib'], 1) / max(bounded['rss_growth_mib'], 1):.1f}x less RSS growth")


if __name__ == "__main__":
    main()
