"""NTT_DEVICES: gunicorn workers spread over several accelerators, one device per worker process."""
from __future__ import annotations

import os
import types

import pytest

from labelstudio_backend import devices
from labelstudio_backend.settings import Settings, SettingsError


def test_devices_are_parsed_and_a_bad_one_is_named():
    assert devices.parse_devices(" cuda:0, cuda:1 ,") == ("cuda:0", "cuda:1")
    assert devices.parse_devices(None) == () and devices.parse_devices("") == ()
    with pytest.raises(ValueError, match="gpu1"):
        devices.parse_devices("cuda:0,gpu1")
    with pytest.raises(SettingsError, match="NTT_DEVICES"):
        Settings.from_env({"NTT_DEVICES": "cuda:0,gpu1"})
    assert Settings.from_env({"NTT_DEVICES": "cuda:0,cuda:1"}).devices == ("cuda:0", "cuda:1")


def test_each_new_worker_takes_the_least_used_device(monkeypatch):
    monkeypatch.setenv("NTT_DEVICES", "cuda:0,cuda:1")
    server = types.SimpleNamespace(WORKERS={}, log=types.SimpleNamespace(info=lambda *a: None))
    workers = []
    for pid in range(1, 5):  # WORKERS=4 over 2 GPUs: two on each
        worker = types.SimpleNamespace()
        devices.pre_fork(server, worker)
        server.WORKERS[pid] = worker
        workers.append(worker)
    assert [w.ntt_device for w in workers] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    del server.WORKERS[3]  # a worker on cuda:0 dies: its replacement goes there
    replacement = types.SimpleNamespace()
    devices.pre_fork(server, replacement)
    assert replacement.ntt_device == "cuda:0"
    monkeypatch.delenv("NTT_DEVICE", raising=False)
    devices.post_fork(server, replacement)  # in the worker, before the app loads
    assert os.environ["NTT_DEVICE"] == "cuda:0" and Settings.from_env(dict(os.environ)).device == "cuda:0"
    monkeypatch.delenv("NTT_DEVICES")
    untouched = types.SimpleNamespace()
    devices.pre_fork(server, untouched)
    assert not hasattr(untouched, devices.ATTRIBUTE)


def test_gunicorn_hands_each_worker_its_device(tmp_path):
    """The hooks are wired in gunicorn_conf: 2 workers over NTT_DEVICES=cpu,cpu each log the device they took."""
    from local_stack import BackendServer, wait_until

    backend = BackendServer(model_dir=tmp_path / "models", log_path=tmp_path / "backend.log", gunicorn_workers=2,
                            env_overrides={"NTT_DEVICES": "cpu,cpu", "NTT_PRESET": "synthetic"})
    backend.start(timeout=120)
    try:
        def device_lines() -> list[str] | None:
            lines = [line for line in backend.log(400).splitlines() if ": device cpu (NTT_DEVICES=cpu,cpu)" in line]
            return lines if len(lines) >= 2 else None

        lines = wait_until(device_lines, 60, what="both workers' device lines")
        assert len({line.split("worker ")[1].split(":")[0] for line in lines}) == 2  # two worker pids
        assert backend.get("/health").json()["engine"] in ("ready", "loading")
    finally:
        backend.stop()
