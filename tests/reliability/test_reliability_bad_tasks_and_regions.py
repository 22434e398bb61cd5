"""Figure 8 (issue 12, reliability round 2): one bad task or region never costs good data, and every bound holds.
Each case is an attack that lost good data, answered 500 or passed a bound before; all go through the real routes of
one backend process (development server, payload mode: the webhook body is all the backend gets), and the process
must stay alive throughout. The API-mode cases are in test_reliability_api_mode_resync.py; the disk-full and
DNS-rebinding cases, which need a fault injected in the process, in test_reliability_disk_full_and_dns.py."""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from support.backend_helpers import LABEL_CONFIG, PROJECT, annotation_result, created_webhook, task_for
from labelstudio_backend.labelstudio.regions import encode_brush
from support.local_servers import FakeLabelStudio, slow
from support.reliability import (LogTail, RssSampler, call, gauge, load_memory, memory_bytes, memory_file, metrics,
                         corrupt_reference_row, load_state, rss_bytes, setup_body, single_region, start_backend, wait_idle)
from support.hostile_inputs import (PROM_LINE, Case, bulk_created, env_path, eps_file, fake_ghostscript, flat_png,
                            rle_many_blocks, rle_wide_words, run_cases)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

MiB = 1024 * 1024
EVIL_LABEL = "evil\nntt_forged_metric 1"
EVIL_CONFIG = ('<View><Image name="image" value="$image"/><BrushLabels name="brush" toName="image">'
               '<Label value="evil&#10;ntt_forged_metric 1"/></BrushLabels></View>')


def test_bad_tasks_and_regions_cost_no_good_data(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    bad = ds.root / "bad2"
    bad.mkdir(exist_ok=True)
    for a, b in (("loop_a.png", "loop_b.png"), ("loop_b.png", "loop_a.png")):
        if not (bad / a).is_symlink():
            os.symlink(bad / b, bad / a)
    flat_png(bad / "big.png", 2000, 2000)
    eps_file(bad / "drawing.eps")
    marker = tmp_path / "ghostscript-ran"
    fake_ghostscript(tmp_path / "bin", marker)
    ls = FakeLabelStudio().start()  # serves /data/upload/ media only (payload mode)
    ls.routes["/data/upload/slow.png"] = slow(12, (ds.root / "images" / "000001.png").read_bytes())
    model_dir = tmp_path / "models"
    backend = start_backend(tmp_path, "round2", model_dir, {
        "LOCAL_FILES_DOCUMENT_ROOT": str(ds.root), "LABEL_STUDIO_URL": ls.url, "NTT_ALLOWED_HOSTS": "*",
        "NTT_QUEUE_MAX_BYTES": str(32 * MiB), "PATH": env_path(tmp_path / "bin")})
    try:
        cases = _cases(backend, ds, model_dir, ls, marker)
        started = time.monotonic()
        held, failures = run_cases(cases, lambda: backend.proc.poll() is None)
        elapsed = time.monotonic() - started
        final = load_memory(model_dir)  # still loads, and agrees with the stored state
        assert load_state(model_dir).revision == final.revision
        assert call(backend, "GET", "/health").json()["status"] == "UP"
    finally:
        backend.stop()
        ls.stop()
    figure("8 round 2 (payload mode)", f"{held}/{len(cases)} attacks handled in {elapsed:.0f} s, backend alive, "
                                       f"the stored memory loads and matches its state")
    assert not failures, "\n".join(failures)


def _cases(backend, ds, model_dir: Path, ls, marker: Path) -> list[Case]:
    img_a, img_b, img_c = ds.positive_ids()[:3]
    tail = LogTail(backend.log_path)

    def post(path: str, **kw):
        return call(backend, "POST", path, **kw)

    def raw(path: str, data: bytes):
        return post(path, data=data, headers={"Content-Type": "application/json"})

    def predict(tasks, project=PROJECT, label_config=LABEL_CONFIG):
        return post("/predict", json={"tasks": tasks, "project": f"{project}.1795614847", "label_config": label_config,
                                      "params": {"context": None}})

    def refs() -> set[str]:
        return load_memory(model_dir).reference_ids()

    def hook_and_wait(payload: dict) -> list[str]:
        response = raw("/webhook", json.dumps(payload, separators=(",", ":")).encode())  # compact, as LS sends
        wait_idle(backend, timeout=120)
        return [] if response.status_code == 200 else [f"webhook answered {response.status_code}"]

    def task_with(task_id: int, image) -> dict:
        return {"id": task_id, "data": {"image": image}, "project": PROJECT}

    def bad_pair(annotation_id: int, task_id: int, data) -> tuple[dict, dict]:
        payload = created_webhook(ds, annotation_id, img_c, single_region(ds, img_c))
        payload["annotation"]["task"] = task_id
        return payload, {"id": task_id, "project": PROJECT, "data": data}

    def good_pair(annotation_id: int) -> tuple[dict, dict]:
        payload = created_webhook(ds, annotation_id, img_c, single_region(ds, img_c))
        return payload, payload["task"]

    # ----- the scene: a configured project with references from two annotations
    assert post("/setup", json=setup_body()).status_code == 200
    assert post("/webhook", json=created_webhook(ds, 1, img_a, annotation_result(ds, img_a))).status_code == 200
    assert post("/webhook", json=created_webhook(ds, 2, img_b, annotation_result(ds, img_b, "poly"))).status_code == 200
    wait_idle(backend, lambda m: gauge(m).get("revision") == 2)

    def batch_keeps_good_task(bad_urls: list[str]) -> list[str]:
        response = predict([task_for(ds, img_a)] + [task_with(900 + i, u) for i, u in enumerate(bad_urls)])
        if response.status_code != 200:
            return [f"/predict answered {response.status_code}: {response.text[:200]}"]
        results = response.json()["results"]
        problems = [] if results[0]["result"] else ["the good task got an empty prediction"]
        return problems + [f"bad task {i} got regions" for i, r in enumerate(results[1:]) if r["result"]]

    def event_keeps_good(good_id: int, bad_pairs: list[tuple[dict, dict]]) -> list[str]:
        problems = hook_and_wait(bulk_created([good_pair(good_id)] + bad_pairs, PROJECT))
        held = refs()
        problems += [] if f"annotation:{good_id}" in held else ["the good annotation of the event was lost"]
        return problems + [f"{p['annotation']['id']} was stored" for p, _ in bad_pairs
                           if f"annotation:{p['annotation']['id']}" in held]

    def region_refused(annotation_id: int, region: dict, log: str, image_id: int | None = None,
                       url: str | None = None, rss_limit: int | None = None) -> list[str]:
        payload = created_webhook(ds, annotation_id, image_id or img_c, [region])
        if url:
            payload["task"]["data"]["image"] = url
        before = memory_bytes(model_dir)
        tail.read()
        rss_before = rss_bytes(backend.proc.pid)
        with RssSampler(backend.proc.pid, interval=0.1) as rss:
            problems = hook_and_wait(payload)
        text = tail.read()
        problems += [] if memory_bytes(model_dir) == before else ["memory.ntt changed"]
        problems += [] if log.lower() in text.lower() else [f"no log line with {log!r}"]
        grown = rss.peak_total - rss_before
        if rss_limit and grown > rss_limit:
            problems.append(f"RSS grew {grown / MiB:.0f} MB")
        return problems

    def region_pair_keeps_good(annotation_id: int, bad_region: dict) -> list[str]:
        good = single_region(ds, img_c)
        problems = hook_and_wait(created_webhook(ds, annotation_id, img_c, good + [bad_region]))
        memory = load_memory(model_dir)
        ref = f"annotation:{annotation_id}"
        return problems + ([] if ref in memory and len(memory.entries(ref)) == 1
                           else ["the annotation's valid region was lost"])

    def status_is(response, codes: tuple[int, ...], what: str) -> list[str]:
        return [] if response.status_code in codes else [f"{what} answered {response.status_code}"]

    brush = single_region(ds, img_c)[0]
    square = np.zeros((2000, 2000), bool)
    square[800:1200, 800:1200] = True

    def big_brush(rle: list[int]) -> dict:
        region = copy.deepcopy(brush) | {"original_width": 2000, "original_height": 2000}
        region["value"]["rle"] = rle
        return region

    def on_control(from_name: str, to_name: str) -> dict:
        return copy.deepcopy(brush) | {"from_name": from_name, "to_name": to_name}

    stretched = copy.deepcopy(brush) | {"original_width": 76800, "original_height": 1}
    line = np.zeros((1, 76800), bool)
    line[0, 20000:40000] = True
    stretched["value"]["rle"] = encode_brush(line)
    wide = copy.deepcopy(brush)
    wide["value"]["rle"] = rle_wide_words(brush["original_width"], brush["original_height"])

    def metrics_scrape_is_clean() -> list[str]:
        assert post("/setup", json=setup_body(project=6, schema=EVIL_CONFIG)).status_code == 200
        region = copy.deepcopy(brush)
        region["value"]["brushlabels"] = [EVIL_LABEL]
        problems = hook_and_wait(created_webhook(ds, 300, img_c, [region], project=6, label_config=EVIL_CONFIG))
        if "annotation:300" not in load_memory(model_dir, 6):
            return problems + ["the evil-label reference was not learnt (nothing to scrape)"]
        text = call(backend, "GET", "/metrics?format=prometheus").text
        forged = [ln for ln in text.splitlines() if ln and not ln.startswith("#") and not PROM_LINE.match(ln)]
        return problems + [f"unparseable line {ln!r}" for ln in forged[:3]]

    def metrics_survive_unreadable_project() -> list[str]:
        broken = model_dir / "5"
        broken.mkdir(exist_ok=True)
        (broken / "state.json").write_text("{not json")
        try:
            response = call(backend, "GET", "/metrics")
            problems = status_is(response, (200,), "/metrics")
            if not problems and gauge(response.json()).get("revision") is None:
                problems.append("project 4's gauges are missing")
            return problems + status_is(call(backend, "GET", "/metrics?format=prometheus"), (200,), "prometheus")
        finally:
            shutil.rmtree(broken)

    def corrupt_metadata_is_rebuilt() -> list[str]:
        assert post("/setup", json=setup_body(project=7)).status_code == 200
        problems = hook_and_wait(created_webhook(ds, 301, img_a, single_region(ds, img_a), project=7))
        path = memory_file(model_dir, 7)
        if path.exists():  # NTT_STATE_URL=files
            with np.load(path, allow_pickle=False) as archive:
                meta, vectors = json.loads(bytes(archive["meta"]).decode()), archive["vectors"]
            meta.pop("references")
            with open(path, "wb") as out:
                np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), vectors=vectors)
        else:  # the state database: a reference row whose metadata is not a list, as if another replica wrote it
            corrupt_reference_row(model_dir, 7, "annotation:301", entries=json.dumps({"bad": 1}))
        problems += status_is(call(backend, "GET", "/versions?project=7"), (200,), "/versions")
        problems += status_is(predict([task_for(ds, img_a, project=7)], project=7), (200,), "/predict")
        problems += hook_and_wait(created_webhook(ds, 302, img_b, single_region(ds, img_b), project=7))
        return problems + ([] if "annotation:302" in load_memory(model_dir, 7) else ["no write after it"])

    def queue_bounded_in_bytes() -> list[str]:
        for annotation_id in (303, 304):  # each holds the worker for 12 s
            busy = created_webhook(ds, annotation_id, img_c, single_region(ds, img_c))
            busy["task"]["data"]["image"] = f"/data/upload/slow.png?n={annotation_id}"  # not the loader's cache
            post("/webhook", json=busy)
        pad = "x" * (8 * MiB)
        answers = []
        for n in range(6):
            payload = created_webhook(ds, 310 + n, img_c, "not a list")
            payload["annotation"]["padding"] = pad
            answers.append(post("/webhook", json=payload).status_code)
        wait_idle(backend, timeout=120)
        accepted = answers.count(200)
        problems = [] if 503 in answers else [f"all {len(answers)} 8 MB events were queued (NTT_QUEUE_MAX_BYTES=32MB)"]
        return problems + ([] if accepted * 8 <= 32 + 8 else [f"{accepted} x 8 MB queued"])

    def delete_storm_is_linear() -> list[str]:
        before = metrics(backend)["seconds"].get("sync", 0.0)
        ids = [{"id": 100_000 + i} for i in range(20_000)]
        problems = hook_and_wait({"action": "ANNOTATIONS_DELETED", "annotations": ids, "project": {"id": PROJECT}})
        spent = metrics(backend)["seconds"].get("sync", 0.0) - before
        return problems + ([] if spent < 1.0 else [f"20,000 deletions held the worker {spent:.1f} s"])

    def eps_never_reaches_ghostscript() -> list[str]:
        response = predict([task_with(950, "/data/local-files/?d=bad2/drawing.eps")])
        return status_is(response, (200,), "/predict") + (["Ghostscript ran"] if marker.exists() else [])

    def unicode_ids_alias_nothing() -> list[str]:
        problems = status_is(post("/setup", json=setup_body() | {"project": "١٢.1795614847"}), (400,), "/setup ١٢")
        problems += status_is(predict([task_for(ds, img_a)], project="٤"), (400,), "/predict ٤")
        return problems + (["MODEL_DIR/12 was created"] if (model_dir / "12").exists() else [])

    def setup_says_config_is_unusable() -> list[str]:
        response = post("/setup", json=setup_body(schema="<View><Image name="))
        problems = status_is(response, (200, 400, 422), "/setup")
        return problems + ([] if response.status_code != 200 or "warning" in response.json()
                           else ["answered 200 and silently kept the old config"])

    long_name = "/data/local-files/?d=bad2/" + "n" * 300 + ".png"
    v6 = [f"http://[::127.0.0.1]:{ls.port}/x.png", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
          f"http://[2002:7f00:1::]:{ls.port}/x.png"]

    def embedded_ipv4_refused() -> list[str]:
        tail.read()
        problems = batch_keeps_good_task(v6)
        text = tail.read()
        return problems + [f"{u} not refused by address" for u, ip in zip(v6, ("127.0.0.1", "169.254.169.254",
                                                                               "127.0.0.1"))
                           if f"refused: {ip}" not in text]

    def body(size: int) -> bytes:
        return json.dumps(setup_body() | {"padding": "x" * size}).encode()

    return [
        Case("defect 1", "/predict batch with malformed URLs ([::1, port 99999)",
             lambda: batch_keeps_good_task(["http://[::1", "http://127.0.0.1:99999/x.png"])),
        Case("defect 1", "ANNOTATIONS_CREATED with a malformed image URL", lambda: event_keeps_good(
            201, [bad_pair(202, 5002, {"image": "http://[::1"})])),
        Case("defect 2", "/predict batch with a symlink loop and a 300-character name", lambda: batch_keeps_good_task(
            ["/data/local-files/?d=bad2/loop_a.png", long_name])),
        Case("defect 3", "ANNOTATIONS_CREATED with task.data a list, a string, annotation.task a list",
             lambda: event_keeps_good(203, [bad_pair(204, 5004, ["x"]), bad_pair(205, 5005, "x"),
                                            _task_list(bad_pair(206, 5006, {"image": ds.url(img_c)}))])),
        Case("defect 5", "brush RLE with 16-bit words (value 300) beside a valid region",
             lambda: region_pair_keeps_good(207, wide)),
        Case("defect 6", "brush RLE at the old maximum: 28.5 MB body on a 2000x2000 image", lambda: region_refused(
            208, big_brush(rle_many_blocks(2000, 2000, 2000 * 2000 * 4 // 2 + 64)), "implausibly long",
            url="/data/local-files/?d=bad2/big.png", rss_limit=1024 * MiB)),
        Case("defect 6", "brush RLE at the new maximum (4 MiB of 1-value blocks)", lambda: region_refused(
            209, big_brush(rle_many_blocks(2000, 2000, 4 * MiB)), "blocks", url="/data/local-files/?d=bad2/big.png",
            rss_limit=512 * MiB)),
        Case("defect 7", "region of another <Image> (to_name)", lambda: region_refused(
            210, on_control("brush", "other_image"), "to_name")),
        Case("defect 7", "region of an unknown control (from_name)", lambda: region_refused(
            211, on_control("stranger", "image"), "from_name")),
        Case("defect 8", "label with a newline in /metrics?format=prometheus", metrics_scrape_is_clean),
        Case("defect 9", "JSON nested 50,000 deep on /setup, /predict, /webhook and in extra_params", lambda: sum(
            (status_is(raw(path, b"[" * 50_000), (400,), path) for path in ("/setup", "/predict", "/webhook")), [])
            + status_is(post("/setup", json=setup_body(extra_params="[" * 50_000)), (400,), "extra_params")),
        Case("defect 10", "/setup schema that is a list or a number", lambda: status_is(
            post("/setup", json=setup_body(schema=["<View/>"])), (400,), "list") + status_is(
            post("/setup", json=setup_body(schema=12)), (400,), "number")),
        Case("defect 12", "one unreadable state.json and /metrics", metrics_survive_unreadable_project),
        Case("bound", "IPv4-compatible, NAT64 and 6to4 forms of private addresses", embedded_ipv4_refused),
        Case("bound", "ANNOTATIONS_DELETED naming 20,000 ids", delete_storm_is_linear),
        Case("bound", "event queue bounded in bytes (6 x 8 MB while busy)", queue_bounded_in_bytes),
        Case("bound", "per-route body limits: 2 MB /setup, 40 MB /webhook answered 413", lambda: status_is(
            raw("/setup", body(2 * MiB)), (413,), "/setup 2 MB") + status_is(
            raw("/webhook", body(40 * MiB)), (413,), "/webhook 40 MB")),
        Case("bound", "project ids in Unicode digits", unicode_ids_alias_nothing),
        Case("bound", "brush canvas 76800x1 on a 160x120 image", lambda: region_refused(
            212, stretched, "claims a 76800x1 image")),
        Case("bound", "/setup with an unparseable new config", setup_says_config_is_unusable),
        Case("bound", "EPS task image (Pillow would run Ghostscript)", eps_never_reaches_ghostscript),
        Case("bound", "memory metadata without 'references'", corrupt_metadata_is_rebuilt),  # last: it breaks the old code
    ]


def _task_list(pair: tuple[dict, dict]) -> tuple[dict, dict]:
    """The annotation's `task` as a list (unhashable): it must be skipped, not fail the event."""
    payload, task = pair
    payload["annotation"]["task"] = [task["id"], 1]
    return payload, task
