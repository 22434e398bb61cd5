"""`ntt predict --ray`: spread images over Ray actors, one per GPU (or per CPU slot when the cluster has no GPU).

The memory is put once in the object store and every actor receives the same reference. Image bytes are read by the
driver and sent with each call, so the workers need no shared file system. Records come back in completion order;
the caller writes them to the progress file and sorts them at the end, so the output equals the in-process run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ntt_cli.console import CliError, log, plural

IN_FLIGHT_PER_WORKER = 2


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on host:port addresses nobody listens on (ray.init would retry for minutes)."""
    import socket

    if "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except ValueError:
        raise CliError(f"--ray {address!r}: expected host:port, 'auto' or 'local'") from None
    except OSError as exc:
        raise CliError(f"cannot connect to the Ray cluster at {address!r}: {exc.strerror or exc}. Start one with "
                       "`ray start --head`, pass its address (host:port or 'auto'), or use --ray local", 1) from None


def connect(address: str, workers: int | None):
    if address != "local":
        check_reachable(address)
    try:
        import ray
        from ray.job_config import JobConfig
    except ImportError:
        raise CliError("--ray needs the 'ray' package: pip install 'ray[default]'", 1) from None
    # workers on this machine import ntt_cli / ntt_engine from the same checkout as the driver
    root = str(Path(__file__).resolve().parents[1])
    job_config = JobConfig(code_search_path=[root])
    try:
        if address == "local":
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, job_config=job_config,
                     logging_level="WARNING", configure_logging=True)
        else:
            ray.init(address=address, job_config=job_config, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CliError(f"cannot connect to the Ray cluster at {address!r}: {exc}. Start one with "
                       "`ray start --head`, pass its address (host:port or 'auto'), or use --ray local", 1) from None
    return ray


def run_ray(address: str, workers: int | None, config: dict[str, Any], memory_bytes: bytes,
            category_ids: dict[str, int], score_threshold: float, todo: list[tuple[int, Any, Path]],
            on_record: Callable[[dict[str, Any]], None]) -> str:
    """Predict every (index, image_id, path) in `todo`; calls `on_record` in completion order. Returns the model id."""
    ray = connect(address, workers)
    try:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        slots, kind = (gpus, "GPU") if gpus else (cpus, "CPU slot")
        count = workers or slots
        if count < 1:
            raise CliError(f"the Ray cluster at {address!r} has no GPU and no CPU to run workers on", 1)
        if count > slots:
            raise CliError(f"--workers {count} is more than the cluster's {plural(slots, kind)}; lower --workers", 1)
        from ntt_cli.inference import PredictWorker

        options = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
        actor_class = ray.remote(PredictWorker).options(**options)
        memory_ref = ray.put(memory_bytes)  # once; every actor gets the same object
        actors = [actor_class.remote(config, memory_ref, category_ids, score_threshold) for _ in range(count)]
        states = ray.get([actor.ready.remote() for actor in actors])
        errors = [s["error"] for s in states if "error" in s]
        if errors:
            raise CliError(f"the Ray workers could not start the engine: {errors[0]}", 1)
        model_ids = {s["model_id"] for s in states}
        log.info("ray: %s (one per %s) on %s, memory of %d bytes in the object store", plural(count, "worker"), kind,
                 address, len(memory_bytes))
        _dispatch(ray, actors, todo, on_record)
        return model_ids.pop()
    finally:
        ray.shutdown()


def _dispatch(ray, actors: list, todo: list[tuple[int, Any, Path]], on_record) -> None:
    queue = iter(todo)
    pending: dict[Any, Any] = {}

    def submit(actor) -> None:
        item = next(queue, None)
        if item is not None:
            index, image_id, path = item
            try:
                data = path.read_bytes()
            except OSError as exc:
                on_record({"index": index, "image_id": image_id, "error": f"cannot read {path}: {exc}"})
                return submit(actor)
            pending[actor.predict.remote(index, image_id, data)] = actor

    for actor in actors:
        for _ in range(IN_FLIGHT_PER_WORKER):
            submit(actor)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        actor = pending.pop(done[0])
        try:
            record = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            raise CliError(f"a Ray worker failed: {exc}. Rerun the same command to resume", 1) from None
        on_record(record)
        submit(actor)
