"""Predictions per second of one backend replica against two, each held to one CPU core, sharing one PostgreSQL.

    python benchmarks/bench_replicas.py [--seconds 20] [--clients 4] [--preset synthetic]

Each replica is a real backend process (the development server, NTT_STATE_URL pointing at a PostgreSQL server
started for the run: Debian's binaries, initdb in a temporary folder, loopback only), pinned to one core with
`taskset` (every thread). Two annotations are applied through the first replica; then `--clients` threads send
/predict requests (one task each, the synthetic images in turn) for `--seconds`, to the one replica, then spread over
both. Prints the predictions per second of each and their ratio (the issue's goal: two replicas at least 1.8x one)
and writes JSON. The client threads run in this process, on the first replica's core in both runs (there is no third
core here): they slow that replica alike in both, so the ratio is a lower bound of what separate machines give.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def pin(pid: int, core: int) -> None:
    """Every thread of `pid` (and of its children) on one core."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True, capture_output=True)


def throughput(replicas, body_for, seconds: float, clients: int) -> float:
    import requests

    done, stop = [0], threading.Event()
    lock = threading.Lock()

    def client(index: int) -> None:
        session, n = requests.Session(), index
        while not stop.is_set():
            replica = replicas[n % len(replicas)]
            response = session.post(f"{replica.url}/predict", json=body_for(n), timeout=120)
            assert response.status_code == 200, response.text[:300]
            n += clients
            with lock:
                done[0] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    return done[0] / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--preset", default="synthetic")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "replicas.json")
    args = parser.parse_args()
    from bench_state_store import make_dataset
    from local_stack import BackendServer
    from ntt_engine.synthetic import generate_dataset
    from support.backend_helpers import LABEL_CONFIG, PROJECT, annotation_result, created_webhook, task_for
    from support.local_postgres import LocalPostgres

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("two CPU cores are needed (one per replica)")
    with tempfile.TemporaryDirectory(prefix="ntt-bench-replicas-") as tmp:
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o755)  # the PostgreSQL server runs as its own user when this runs as root
        dataset = make_dataset(tmp_path / "data", generate_dataset)
        server = LocalPostgres(tmp_path / "pg")
        server.start()
        url = server.new_database()
        env = {"NTT_PRESET": args.preset, "NTT_STATE_URL": url, "LOCAL_FILES_DOCUMENT_ROOT": str(dataset.root),
               "LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", "LABEL_STUDIO_URL": None, "LABEL_STUDIO_API_KEY": None,
               "NTT_CACHE_DIR": str(tmp_path / "cache"), "NTT_REFRESH_TASKS": "0"}
        replicas = [BackendServer(model_dir=tmp_path / f"models-{i}", env_overrides=env,
                                  log_path=tmp_path / f"replica-{i}.log").start(timeout=180) for i in range(2)]
        try:
            for replica, core in zip(replicas, cores):
                pin(replica.proc.pid, core)
            import requests

            images = dataset.positive_ids()
            for annotation_id, image_id in ((1, images[0]), (2, images[1])):
                payload = created_webhook(dataset, annotation_id, image_id, annotation_result(dataset, image_id))
                assert requests.post(f"{replicas[0].url}/webhook", json=payload, timeout=60).ok
            time.sleep(2.0)

            def body_for(n: int) -> dict:
                return {"tasks": [task_for(dataset, images[n % len(images)])], "project": f"{PROJECT}.1",
                        "label_config": LABEL_CONFIG, "params": {"login": None, "password": None, "context": None}}

            # the clients share the first replica's core in both runs, so that they weigh on both alike (one replica
            # alone would otherwise get the second core's help for its client work)
            os.sched_setaffinity(0, {cores[0]})
            throughput(replicas, body_for, 3.0, args.clients)  # warm both: models, caches, connections
            one = throughput(replicas[:1], body_for, args.seconds, args.clients)
            two = throughput(replicas, body_for, args.seconds, args.clients)
        finally:
            for replica in replicas:
                replica.stop()
            server.stop()
    result = {"preset": args.preset, "seconds": args.seconds, "clients": args.clients,
              "one_replica_per_s": round(one, 2), "two_replicas_per_s": round(two, 2), "ratio": round(two / one, 3)}
    print(f"one replica on one core: {one:.1f} predictions/s; two replicas, one core each: {two:.1f}/s "
          f"({two / one:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
