"""`ntt predict --ray` on a real local Ray cluster gives the same file as the in-process run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import cli

pytestmark = pytest.mark.ray


def _ray_binary() -> str | None:
    local = Path(sys.executable).with_name("ray")
    return str(local) if local.exists() else shutil.which("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A real head node on 127.0.0.1, run in the foreground (`--block`) in its own process group, so that teardown
    stops exactly the processes it started (`ray stop` would stop every Ray cluster of this machine)."""
    pytest.importorskip("ray")
    binary = _ray_binary()
    if binary is None:
        pytest.skip("the `ray` command is not installed")
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ntt-ray-", dir="/tmp")  # short: Ray's unix sockets live under it
    # plain local test cluster: no token auth (Ray 2.5x+ turns it on for new local clusters), no usage stats;
    # no PYTHONPATH either: the workers find ntt_cli through the driver's job config
    settings = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **settings}
    log = open(Path(temp_dir) / "ray-start.log", "w")
    process = subprocess.Popen([binary, "start", "--head", "--block", "--port", str(port), "--node-ip-address",
                                "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard=false",
                                "--disable-usage-stats", "--temp-dir", temp_dir],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (Path(temp_dir) / "ray-start.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
                time.sleep(0.5)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in settings.items():
                patch.setenv(key, value)  # the driver (this process) must agree with the cluster
            yield f"127.0.0.1:{port}"
    finally:
        _stop_group(process)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM our `ray start --block` process group, then SIGKILL whatever is left of it (bounded)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    # the leader may be gone while members (gcs_server, raylet) linger: one last SIGKILL to the group
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_two_ray_workers_match_in_process(chain, ray_cluster, tmp_path, capsys):
    output = tmp_path / "results.json"
    assert cli("predict", chain.memory, chain.test, "-o", output, "--ray", ray_cluster, "--workers", "2") == 0
    err = capsys.readouterr().err
    assert "ray: 2 workers (one per CPU slot)" in err
    assert output.read_bytes() == chain.results.read_bytes()
    meta = json.loads((tmp_path / "results.meta.json").read_text())
    assert meta == json.loads(chain.results.with_name("results.meta.json").read_text())


def test_too_many_workers_is_a_clear_error(chain, ray_cluster, tmp_path, capsys):
    assert cli("predict", chain.memory, chain.test, "-o", tmp_path / "r.json", "--ray", ray_cluster,
               "--workers", "5") == 1
    assert "more than the cluster's 2 CPU slots" in capsys.readouterr().err


def test_unreachable_cluster_is_a_clear_error(chain, tmp_path, capsys):
    pytest.importorskip("ray")
    port = _free_port()
    code = cli("predict", chain.memory, chain.test, "-o", tmp_path / "r.json", "--ray", f"127.0.0.1:{port}")
    err = capsys.readouterr().err
    assert code == 1 and "cannot connect to the Ray cluster" in err and "Traceback" not in err
