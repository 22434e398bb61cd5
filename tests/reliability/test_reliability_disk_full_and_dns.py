"""Figure 8, injected faults (issue 12): a full disk, and a DNS server that answers the address check with one address
and the connection with another. Both need the fault inside the backend, so the app runs in this process (Flask's
test client on the real routes, the real project store and image loader); only the fault is simulated: ENOSPC from
the atomic write, a second DNS answer from getaddrinfo."""
from __future__ import annotations

import errno
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import labelstudio_backend.store.projects as projects_module
from support.backend_helpers import LABEL_CONFIG, PROJECT, annotation_result, created_webhook, sample, task_for
from labelstudio_backend.web.app import create_app
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.settings import Settings
from ntt_engine import Engine, EngineConfig, MemoryBank

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(EngineConfig.preset("synthetic"))


def test_disk_full_reads_keep_working_and_writes_fail_cleanly(tmp_path, rel_dataset, engine, monkeypatch,
                                                                     figure):
    ds = rel_dataset
    settings = Settings(model_dir=tmp_path / "models", local_files_root=ds.root, preset="synthetic", preload=False,
                        state_url="files")  # the file store's two files (the database store: tests/store)
    app = create_app(settings, runtime=Runtime(settings, engine_factory=lambda: engine))
    client, worker = app.test_client(), app.extensions["ntt"].worker
    full: set[str] = set()  # file names whose writes fail with ENOSPC ("*": all)
    real_write = projects_module.atomic_write_bytes

    def write(path, data, before_replace=None):
        if "*" in full or path.name in full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data, before_replace=before_replace)

    monkeypatch.setattr(projects_module, "atomic_write_bytes", write)
    setup = {**sample("setup_from_LS"), "schema": LABEL_CONFIG}
    img_a, img_b = ds.positive_ids()[:2]
    memory_path = settings.model_dir / str(PROJECT) / "memory.ntt"
    try:
        assert client.post("/setup", json=setup).status_code == 200
        assert client.post("/webhook", json=created_webhook(ds, 1, img_a, annotation_result(ds, img_a))).status_code == 200
        assert worker.wait_idle(60)
        full.add("state.json")  # the disk fills between the memory's write and the state's
        answer = client.post("/webhook", json=created_webhook(ds, 2, img_b, annotation_result(ds, img_b)))
        assert answer.status_code == 503 and "No space left" in answer.json["error"], answer.json  # said, not hidden
        assert worker.wait_idle(60)
        saved = memory_path.read_bytes()
        assert MemoryBank.from_bytes(saved).revision == 2  # memory.ntt was written, state.json was not
        reads = {"/predict": client.post("/predict", json={**sample("predict_batch_from_LS"),
                                                            "tasks": [task_for(ds, img_a)], "label_config": LABEL_CONFIG}),
                 "/versions": client.get(f"/versions?project={PROJECT}"),
                 "/setup": client.post("/setup", json=setup),
                 "/metrics": client.get("/metrics")}
        failed_reads = {route: r.status_code for route, r in reads.items() if r.status_code != 200}
        assert reads["/predict"].status_code != 200 or reads["/predict"].json["results"][0]["result"], \
            "the memory the disk holds was not served"
        full.add("*")
        write_answer = client.post("/setup", json={**setup, "extra_params": {"score_threshold": 0.7}})
        after_failed_write = memory_path.read_bytes()
        full.clear()
        recovered = client.post("/setup", json={**setup, "extra_params": {"score_threshold": 0.7}})
        state = projects_module.ProjectState.from_json((memory_path.parent / "state.json").read_text(), PROJECT)
        memory = MemoryBank.from_bytes(memory_path.read_bytes())
    finally:
        worker.stop()
    assert not failed_reads, f"reads failed on a full disk: {failed_reads}"
    assert write_answer.status_code == 503 and "No space left" in write_answer.json["error"], \
        (write_answer.status_code, write_answer.json)
    assert after_failed_write == saved, "a failed write changed memory.ntt"
    assert recovered.status_code == 200 and state.revision == memory.revision and state.score_threshold == 0.7
    assert {"annotation:1", "annotation:2"} <= memory.reference_ids()
    figure("8 round 2 (disk full)", "after ENOSPC between memory.ntt and state.json: /predict, /versions, /setup, "
                                    "/metrics answered 200 from the memory on disk; a write answered 503 naming the "
                                    "cause and left memory.ntt byte-identical; once space came back, state.json "
                                    "matched the memory again")


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _server(address: str, port: int, body: bytes, hits: list[str]) -> _Server:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.headers.get("Host", ""))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _Server((address, port), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def test_dns_rebinding_connects_to_the_checked_address(tmp_path, rel_dataset, engine, monkeypatch, figure):
    png = (rel_dataset.root / "images" / "000001.png").read_bytes()
    checked_hits: list[str] = []
    other_hits: list[str] = []
    checked = _server("127.0.0.1", 0, png, checked_hits)
    port = checked.server_address[1]
    other = _server("127.0.0.2", port, b"not the checked server", other_hits)  # the rebinding answer
    answers: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host, *args, **kwargs):
        if host != "rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        answers.append("127.0.0.1" if not answers else "127.0.0.2")  # first the check, then the connection
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answers[-1], port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    settings = Settings(model_dir=tmp_path / "models", preset="synthetic", preload=False,
                        allowed_hosts=("rebind.test",), allow_private_networks=True)
    runtime = Runtime(settings, engine_factory=lambda: engine)
    try:
        image = runtime.images.load(f"http://rebind.test:{port}/ok.png")
    finally:
        checked.shutdown()
        other.shutdown()
    assert image.shape[:2] == (120, 160)
    assert other_hits == [] and checked_hits == [f"rebind.test:{port}"], (checked_hits, other_hits)
    assert answers == ["127.0.0.1"], f"the host was resolved again to connect: {answers}"
    figure("8 round 2 (DNS rebinding)", "a host resolved once for the address check: the download connected to "
                                        "that address (Host header kept), never to the second DNS answer")
