"""The dashboard of a large project: how long the figures, the page and the chart take for 10,000 labelled tasks.

    python benchmarks/bench_dashboard.py [--tasks 10000]

Builds a project state as the backend keeps it (one annotation record per labelled task, each with the cost of its
annotation, a mix of corrections and drawings over 8 classes, and gallery thumbnails) and a memory of 30 references
per class, then serves
/dashboard/<project>.json, /dashboard/<project> and the effort chart through Flask's test client, several times
each. Prints the median seconds of each (the issue's goal: the page under 1 s at 10,000 tasks).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = [f"class_{i}" for i in range(8)]


def effort(rng: random.Random) -> dict:
    per_class = {}
    counts = dict.fromkeys(("unchanged", "redrawn", "relabelled", "deleted", "added"), 0)
    source = "correction" if rng.random() < 0.9 else "drawn"
    for label in rng.sample(CLASSES, 3):
        predicted = rng.randint(0, 4) if source == "correction" else 0
        kept = rng.randint(0, predicted)
        added = rng.randint(0, 2)
        per_class[label] = {"predicted": predicted, "kept": kept, "deleted": predicted - kept, "added": added,
                            "final": kept + added}
        counts["unchanged"] += kept
        counts["deleted"] += predicted - kept
        counts["added"] += added
    return {"source": source, **counts, "lead_time": round(rng.uniform(2, 60), 1), "per_class": per_class}


def build(model_dir: Path, tasks: int) -> None:
    import numpy as np

    from labelstudio_backend.store.projects import AnnotationRecord, ProjectState
    from ntt_engine import MemoryBank
    from ntt_engine.memory import MemoryEntry

    rng = random.Random(0)
    state = ProjectState(4, label_config=LABEL_CONFIG)
    for n in range(1, tasks + 1):
        labels = rng.sample(CLASSES, 3)
        state.annotations[str(n)] = AnnotationRecord(n, "reference", labels, 3, f"2026-12-01T10:{n % 60:02d}:00Z",
                                                     effort=effort(rng), thumbs=[[lb, "reference"] for lb in labels])
    memory = MemoryBank("test-colour-texture-v1")
    vectors = np.random.default_rng(0).standard_normal((len(CLASSES) * 30, 64)).astype(np.float32)
    for i, vector in enumerate(vectors):
        memory.set_reference(f"annotation:{i + 1}", [MemoryEntry(CLASSES[i % len(CLASSES)], vector)])
    directory = model_dir / "4"
    directory.mkdir(parents=True)
    memory.save(directory / "memory.ntt")
    state.revision = memory.revision
    (directory / "state.json").write_text(state.to_json())


LABEL_CONFIG = ('<View><Image name="image" value="$image"/><BrushLabels name="brush" toName="image">'
                + "".join(f'<Label value="{c}"/>' for c in CLASSES) + "</BrushLabels></View>")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from labelstudio_backend.settings import Settings
    from labelstudio_backend.web.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "models"
        started = time.perf_counter()
        build(model_dir, args.tasks)
        print(f"state of {args.tasks} labelled tasks built in {time.perf_counter() - started:.1f} s "
              f"({(model_dir / '4' / 'state.json').stat().st_size / 2 ** 20:.1f} MiB state.json)")
        app = create_app(Settings(model_dir=model_dir, preset="synthetic", preload=True, log_level="WARNING"))
        client = app.test_client()
        while client.get("/health").json["engine"] != "ready":
            time.sleep(0.1)
        for path in ("/dashboard/4.json", "/dashboard/4", "/dashboard/4/effort.png", "/dashboard"):
            seconds = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                response = client.get(path)
                seconds.append(time.perf_counter() - started)
                assert response.status_code == 200, (path, response.status_code)
            print(f"{path:28s} median {statistics.median(seconds):.3f} s  (min {min(seconds):.3f}, "
                  f"max {max(seconds):.3f}; {len(response.data) / 1024:.0f} KiB)")
        app.extensions["ntt"].worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
