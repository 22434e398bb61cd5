"""Project state at scale: the file store against SQLite against PostgreSQL, through the backend's routes.

    python benchmarks/bench_state_store.py [--sizes 100,1000,10000] [--stores files,sqlite,postgresql]
                                           [--applies 20] [--projects 1,100,1000] [--out benchmarks/results/...]

For each store, one in-process backend (synthetic preset, payload-mode webhooks, the real Flask app):
- apply latency: a project is grown to each size (records and references cloned from a real annotation, written
  through the store in chunks, as a long-lived project holds them), then `--applies` real ANNOTATION_CREATED webhooks
  with new ids are sent and timed from the POST to the event applied (median and p90);
- /metrics (JSON and Prometheus text) and /versions with 1, 100 and 1,000 projects of 5 annotations each, warm
  (after one scrape has read the projects that changed), median of 5.
PostgreSQL is a real server started for the run (Debian's binaries, initdb in a temporary folder, loopback only).
Writes JSON with every figure; prints a table.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PROJECT = 4
CHUNK = 500  # records written per edit while growing a project


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Backend:
    """One in-process backend on a store; `url` is NTT_STATE_URL ("files", "" for SQLite, or postgresql://...)."""

    def __init__(self, folder: Path, url: str, dataset, **settings):
        from labelstudio_backend.settings import Settings
        from labelstudio_backend.web.app import create_app

        self.dataset = dataset
        settings = Settings(model_dir=folder / "models", local_files_root=dataset.root, preset="synthetic",
                            preload=True, log_level="WARNING", state_url=url, score_threshold=0.5, **settings)
        self.app = create_app(settings)
        self.client = self.app.test_client()
        self.runtime = self.app.extensions["ntt"].runtime
        while self.client.get("/health").json["engine"] != "ready":
            time.sleep(0.05)
        self.next_id = 1

    def apply(self, image_id: int, project: int = PROJECT) -> float:
        from support.backend_helpers import annotation_result, created_webhook

        payload = created_webhook(self.dataset, self.next_id, image_id, annotation_result(self.dataset, image_id),
                                  project=project)
        self.next_id += 1
        started = time.perf_counter()
        response = self.client.post("/webhook", json=payload)
        assert response.status_code == 200, response.json
        assert self.app.extensions["ntt"].worker.wait_idle(120)
        return time.perf_counter() - started

    def grow(self, project: int, size: int) -> None:
        """Clone the project's first annotation (record and reference) until it holds `size` annotations."""
        store = self.runtime.store
        template = store.snapshot(project)
        first = sorted(template.state.annotations, key=int)[0]
        record, entries = template.state.annotations[first], template.memory.entries(f"annotation:{first}")
        held = len(template.state.annotations)
        while held < size:
            with store.edit(project) as snap:
                for _ in range(min(CHUNK, size - held)):
                    key = str(self.next_id)
                    self.next_id += 1
                    snap.state.annotations[key] = copy.copy(record)
                    snap.memory.set_reference(f"annotation:{key}", entries)
                    held += 1

    def timed_get(self, path: str, repeat: int = 5) -> float:
        seconds = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = self.client.get(path)
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, (path, response.status_code)
        return statistics.median(seconds)

    def stop(self) -> None:
        self.app.extensions["ntt"].worker.stop()


def measure_store(name: str, url: str, folder: Path, dataset, sizes: list[int], applies: int,
                  project_counts: list[int], **settings) -> dict:
    result: dict = {"apply": {}, "metrics": {}, "metrics_prometheus": {}, "versions": {}}
    backend = Backend(folder, url, dataset, **settings)
    images = dataset.positive_ids()
    try:
        backend.apply(images[0])
        for size in sizes:
            backend.grow(PROJECT, size - applies // 2)
            seconds = [backend.apply(images[i % len(images)]) for i in range(applies)]
            held = len(backend.runtime.store.snapshot(PROJECT).state.annotations)
            result["apply"][str(size)] = {"median_ms": 1000 * statistics.median(seconds),
                                          "p90_ms": 1000 * percentile(seconds, 0.9), "annotations": held}
            print(f"{name:10s} apply at {held:6d} annotations: median {1000 * statistics.median(seconds):7.1f} ms, "
                  f"p90 {1000 * percentile(seconds, 0.9):7.1f} ms", flush=True)
    finally:
        backend.stop()
    backend = Backend(folder / "many", url, dataset, **settings)
    try:
        made = 0
        for count in project_counts:
            while made < count:
                project = 1000 + made
                backend.apply(images[made % len(images)], project=project)
                backend.grow(project, 5)
                made += 1
            backend.timed_get("/metrics", repeat=1)  # the first scrape after a change reads the changed projects
            result["metrics"][str(count)] = 1000 * backend.timed_get("/metrics")
            result["metrics_prometheus"][str(count)] = 1000 * backend.timed_get("/metrics?format=prometheus")
            result["versions"][str(count)] = 1000 * backend.timed_get("/versions")
            print(f"{name:10s} {count:5d} projects: /metrics {result['metrics'][str(count)]:8.1f} ms (Prometheus "
                  f"{result['metrics_prometheus'][str(count)]:.1f} ms), /versions {result['versions'][str(count)]:8.1f}"
                  " ms", flush=True)
    finally:
        backend.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--stores", default="files,sqlite,postgresql")
    parser.add_argument("--applies", type=int, default=20)
    parser.add_argument("--projects", default="1,100,1000")
    parser.add_argument("--max-references-per-class", type=int, default=None,
                        help="NTT_MAX_REFERENCES_PER_CLASS for every backend (default: none, every reference used)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "state_store.json")
    args = parser.parse_args()
    from support.local_postgres import LocalPostgres
    from ntt_engine.synthetic import generate_dataset

    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(s) for s in args.projects.split(",")]
    results = {"machine": platform.processor() or platform.machine(), "applies": args.applies,
               "max_references_per_class": args.max_references_per_class, "stores": {}}
    with tempfile.TemporaryDirectory(prefix="ntt-bench-state-") as tmp:
        tmp_path = Path(tmp)
        dataset = make_dataset(tmp_path / "data", generate_dataset)
        server = None
        for store in args.stores.split(","):
            url = {"files": "files", "sqlite": ""}.get(store)
            if store == "postgresql":
                server = LocalPostgres(tmp_path / "pg")
                server.start()
                url = server.new_database()
            results["stores"][store] = measure_store(store, url, tmp_path / store, dataset, sizes, args.applies,
                                                     counts, max_references_per_class=args.max_references_per_class)
        if server is not None:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


def make_dataset(folder: Path, generate):
    """The tests' synthetic set (12 images, 2 classes), served from a local-files document root."""
    from support.backend_helpers import HEIGHT, WIDTH, Dataset

    path = generate(folder, images=12, classes=2, seed=3, size=(WIDTH, HEIGHT))
    return Dataset(folder, json.loads(path.read_text()))


if __name__ == "__main__":
    sys.exit(main())
