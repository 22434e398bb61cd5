"""Figure 1: bad input through the real HTTP routes of a backend process (development server, payload mode: the
webhook body is all the backend gets, the most exposed mode). Every case must be answered with a clear 4xx, or be
accepted (Label Studio ignores webhook answers) and skipped with a log line, and leave MODEL_DIR/4/memory.ntt
byte-identical, with no stray project directory and the process alive."""
from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from support.backend_helpers import LABEL_CONFIG, PROJECT, annotation_result, created_webhook, region_for, task_for
from support.local_servers import FakeLabelStudio, slow
from support.reliability import (LogTail, call, gauge, load_memory, memory_bytes, png_bomb, rss_bytes,
                         setup_body, single_region, start_backend, wait_idle)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

CHOICES_ONLY = ('<View><Image name="image" value="$image"/><Choices name="c" toName="image">'
                '<Choice value="a"/></Choices></View>')


def brush_rle_bomb(width: int, height: int) -> list[int]:
    """A valid Label Studio brush RLE of a width x height RGBA canvas, all 255: ~27 bits per 65536 values, so a
    200 KB list decodes to width*height*4 bytes."""
    total = width * height * 4
    header = format(total, "032b") + format(7, "05b") + format(15, "04b") * 4  # 8-bit words, 16-bit run lengths
    run = "1" + "00" + format(65535, "016b") + format(255, "08b")
    bits = header + run * -(-total // 65536)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


@dataclass
class Case:
    name: str
    send: Callable[[], object]  # returns a requests.Response
    expect: str  # "4xx" or "skipped" (2xx, then the event is dropped with a log line) or "unchanged" (2xx, no-op)
    log: str = ""  # a fragment the backend log must show for a skipped case
    before: list[Callable[[], object]] = field(default_factory=list)  # legitimate events that set the scene
    no_project: int | None = None  # this project id must not appear in MODEL_DIR


def test_bad_input_is_refused_or_skipped_and_memory_unchanged(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    bad = ds.root / "bad"
    bad.mkdir(exist_ok=True)
    good_png = (ds.root / "images" / "000001.png").read_bytes()
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(0).randbytes(4000))
    (bad / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (bad / "bomb.png").write_bytes(png_bomb(40000, 40000, bit_depth=1))  # 1.6 G pixels in ~200 KB
    (bad / "huge.png").write_bytes(png_bomb(20000, 20000, bit_depth=8))  # 20000 x 20000
    (bad / "text.png").write_text("not an image at all")

    ls = FakeLabelStudio().start()  # serves /data/upload/ media only (no API key: payload mode)
    ls.routes["/data/upload/slow.png"] = slow(8, good_png)
    model_dir = tmp_path / "models"
    backend = start_backend(tmp_path, "bad-input", model_dir, {
        "LOCAL_FILES_DOCUMENT_ROOT": str(ds.root), "LABEL_STUDIO_URL": ls.url, "NTT_DOWNLOAD_TIMEOUT": "2"})
    try:
        _run(backend, ds, model_dir, figure)
    finally:
        backend.stop()
        ls.stop()


def _run(backend, ds, model_dir: Path, figure) -> None:
    positives = ds.positive_ids()
    img_a, img_b, img_c = positives[0], positives[1], positives[2]

    def post(path: str, **kw):
        return call(backend, "POST", path, **kw)

    def raw(path: str, data: bytes, method: str = "POST"):
        return call(backend, method, path, data=data, headers={"Content-Type": "application/json"})

    def hook(payload: dict):
        return post("/webhook", json=payload)

    def created(annotation_id: int, image_id: int, result, **kw) -> dict:
        return created_webhook(ds, annotation_id, image_id, result, **kw)

    def with_image(payload: dict, url) -> dict:
        payload = copy.deepcopy(payload)
        if url is None:
            payload["task"]["data"] = {}
        else:
            payload["task"]["data"]["image"] = url
        return payload

    def with_result(payload: dict, result, drop: bool = False) -> dict:
        payload = copy.deepcopy(payload)
        if drop:
            payload["annotation"].pop("result")
        else:
            payload["annotation"]["result"] = result
        return payload

    def predict(tasks, project=PROJECT, label_config=LABEL_CONFIG, context=None):
        return post("/predict", json={"tasks": tasks, "project": f"{project}.1795614847", "label_config": label_config,
                                      "params": {"login": None, "password": None, "context": context}})

    def local(name: str) -> str:
        return f"/data/local-files/?d=bad/{name}"

    # ----- the scene: a configured project with references from two annotations
    assert post("/setup", json=setup_body()).status_code == 200
    assert hook(created(1, img_a, annotation_result(ds, img_a, "brush"))).status_code == 200
    assert hook(created(2, img_b, annotation_result(ds, img_b, "poly"))).status_code == 200
    wait_idle(backend, lambda m: gauge(m).get("revision") == 2)

    base = created(100, img_c, single_region(ds, img_c))  # a good annotation, bent into bad ones below
    brush = base["annotation"]["result"][0]
    label, mask = ds.instances(img_c)[0]
    wrong_size = copy.deepcopy(brush) | {"original_width": 100}
    truncated_rle = copy.deepcopy(brush)
    truncated_rle["value"]["rle"] = brush["value"]["rle"][: len(brush["value"]["rle"]) // 2]
    not_bytes_rle = copy.deepcopy(brush)
    not_bytes_rle["value"]["rle"] = [1000, -3, "x"] + brush["value"]["rle"][3:]
    canvas_bomb = copy.deepcopy(brush) | {"original_width": 30000, "original_height": 30000}
    canvas_bomb["value"]["rle"] = brush_rle_bomb(30000, 30000)
    poly = region_for("poly", label, mask)[0]
    poly_out = copy.deepcopy(poly)
    poly_out["value"]["points"] = [[-10, 5], [120, 5], [50, 150]]
    poly_nan = copy.deepcopy(poly)
    poly_nan["value"]["points"][0] = [math.nan, 5]
    poly_two = copy.deepcopy(poly)
    poly_two["value"]["points"] = poly["value"]["points"][:2]
    rect = region_for("rect", label, mask)[0]
    rect_empty = copy.deepcopy(rect)
    rect_empty["value"].update(width=0)
    rect_out = copy.deepcopy(rect)
    rect_out["value"].update(x=90, width=30)
    unknown_label = region_for("brush", "unicorn", mask)[0]
    no_label = copy.deepcopy(brush)
    no_label["value"]["brushlabels"] = []

    def at(payload: dict, stamp: str, action: str | None = None) -> dict:
        payload = copy.deepcopy(payload)
        payload["annotation"]["updated_at"] = stamp
        if action:
            payload["action"] = action
        return payload

    deleted = lambda i: {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i}], "project": {"id": PROJECT}}  # noqa: E731
    dup = created(50, img_c, single_region(ds, img_c))
    newer = at(created(52, img_c, single_region(ds, img_c)), "2026-11-25T15:00:00Z", "ANNOTATION_UPDATED")
    older = at(created(52, img_c, single_region(ds, img_c, which=-1)), "2026-11-25T14:00:00Z")
    late = at(created(53, img_c, single_region(ds, img_c)), "2026-11-25T16:00:00Z", "ANNOTATION_UPDATED")
    task_ok = task_for(ds, img_c)
    unknown_project = created(101, img_c, single_region(ds, img_c), project=80)
    unknown_project["project"].pop("label_config")
    unknown_project["project"].pop("parsed_label_config", None)

    cases = [
        # ---- /webhook: malformed or incomplete bodies -> 400
        Case("webhook: malformed JSON", lambda: raw("/webhook", b'{"action": "ANNOTATION_CREATED", '), "4xx"),
        Case("webhook: JSON array body", lambda: raw("/webhook", b"[1, 2, 3]"), "4xx"),
        Case("webhook: empty body", lambda: raw("/webhook", b""), "4xx"),
        Case("webhook: no action", lambda: hook({"project": {"id": PROJECT}}), "4xx"),
        Case("webhook: ANNOTATION_CREATED without annotation", lambda: hook(
            {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}}), "4xx"),
        Case("webhook: annotation without id", lambda: hook(
            {**base, "annotation": {k: v for k, v in base["annotation"].items() if k != "id"}}), "4xx"),
        Case("webhook: ANNOTATIONS_DELETED with a string id", lambda: hook(
            {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "1"}], "project": {"id": PROJECT}}), "4xx"),
        Case("webhook: START_TRAINING without project", lambda: hook({"action": "START_TRAINING"}), "4xx"),
        # ---- /setup, /predict, /versions: malformed -> 400, wrong method/route -> 405/404
        Case("setup: malformed JSON", lambda: raw("/setup", b"{nope"), "4xx"),
        Case("setup: no project", lambda: post("/setup", json={"schema": LABEL_CONFIG}), "4xx"),
        Case("setup: absurd project id", lambda: post("/setup", json=setup_body() | {"project": "9" * 40}), "4xx"),
        Case("setup: score_threshold out of range", lambda: post("/setup", json=setup_body(
            extra_params={"score_threshold": 7})), "4xx"),
        Case("setup: label config with no supported control (new project)", lambda: post(
            "/setup", json=setup_body(project=77, schema=CHOICES_ONLY)), "4xx", no_project=77),
        Case("predict: malformed JSON", lambda: raw("/predict", b'{"tasks": ['), "4xx"),
        Case("predict: no tasks", lambda: post("/predict", json={"project": "4.1"}), "4xx"),
        Case("predict: tasks not a list", lambda: post("/predict", json={"project": "4.1", "tasks": "t"}), "4xx"),
        Case("predict: no project", lambda: post("/predict", json={"tasks": [{"data": {}}]}), "4xx"),
        Case("predict: label config with no supported control (new project)", lambda: predict(
            [task_ok], project=78, label_config=CHOICES_ONLY), "4xx", no_project=78),
        Case("versions: bad project", lambda: call(backend, "GET", "/versions?project=abc"), "4xx"),
        Case("predict: GET instead of POST", lambda: call(backend, "GET", "/predict"), "4xx"),
        Case("unknown route", lambda: post("/train", json={}), "4xx"),
        # ---- images that cannot be used: accepted, logged, skipped
        Case("task without an image", lambda: hook(with_image(base, None)), "skipped", "no image URL"),
        Case("image URL that is not a string", lambda: hook(with_image(base, 12345)), "skipped", "no image URL"),
        Case("image URL that 404s", lambda: hook(with_image(base, "/data/upload/1/missing.png")), "skipped",
             "HTTP 404"),
        Case("image URL that times out (2 s limit, server sleeps 8 s)", lambda: hook(
            with_image(base, "/data/upload/slow.png")), "skipped", "timed out"),
        Case("unsupported URL scheme (file://)", lambda: hook(with_image(base, "file:///etc/passwd")), "skipped",
             "unsupported image URL scheme"),
        Case("data: URI with invalid base64", lambda: hook(with_image(base, "data:image/png;base64,@@@")),
             "skipped", "not valid base64"),
        Case("corrupt image", lambda: hook(with_image(base, local("corrupt.png"))), "skipped", "cannot decode"),
        Case("truncated image", lambda: hook(with_image(base, local("truncated.png"))), "skipped",
             "cannot decode"),
        Case("a text file named .png", lambda: hook(with_image(base, local("text.png"))), "skipped",
             "cannot decode"),
        Case("decompression bomb (40000x40000 1-bit PNG, 200 KB)", lambda: hook(
            with_image(base, local("bomb.png"))), "skipped", "too large"),
        Case("20000x20000 image", lambda: hook(with_image(base, local("huge.png"))), "skipped", "too large"),
        # ---- regions that cannot be used: the region is skipped with a log line
        Case("brush RLE of the wrong length (header of another size)", lambda: hook(
            with_result(base, [wrong_size])), "skipped", "brush rle encodes"),
        Case("brush RLE truncated to half its length", lambda: hook(with_result(base, [truncated_rle])),
             "skipped", "rle is corrupt"),
        Case("brush RLE with values that are not bytes", lambda: hook(with_result(base, [not_bytes_rle])),
             "skipped", "byte values"),
        Case("brush RLE claiming a 30000x30000 canvas (a 3.6 GB memory bomb)", lambda: hook(
            with_result(base, [canvas_bomb])), "skipped", "claims a 30000x30000 image"),
        Case("polygon points outside 0-100", lambda: hook(with_result(base, [poly_out])), "skipped",
             "outside 0"),
        Case("polygon point NaN", lambda: raw("/webhook", json.dumps(with_result(base, [poly_nan])).encode()),
             "skipped", "is not a number"),
        Case("polygon of 2 points", lambda: hook(with_result(base, [poly_two])), "skipped", "at least 3 points"),
        Case("rectangle of width 0", lambda: hook(with_result(base, [rect_empty])), "skipped", "is empty"),
        Case("rectangle past the right edge", lambda: hook(with_result(base, [rect_out])), "skipped",
             "outside the image"),
        Case("label not in the labeling config", lambda: hook(with_result(base, [unknown_label])), "skipped",
             "not in the label config"),
        Case("region without a label", lambda: hook(with_result(base, [no_label])), "skipped", "has no label"),
        Case("result that is not a list", lambda: hook(with_result(base, "oops")), "skipped", "not a list"),
        Case("annotation without a result", lambda: hook(with_result(base, None, drop=True)), "skipped",
             "not a list"),
        Case("labeling config with no supported control (new project's webhook)", lambda: hook(
            created(102, img_c, single_region(ds, img_c), project=79, label_config=CHOICES_ONLY)), "skipped",
             "cannot be used", no_project=79),
        Case("annotation for an unknown project (never set up, no config)", lambda: hook(unknown_project),
             "skipped", "no label config known", no_project=80),
        # ---- events that change nothing
        Case("cancelled (skipped) annotation", lambda: hook(created(103, img_c, single_region(ds, img_c),
                                                                    cancelled=True)), "unchanged"),
        Case("duplicate event (the same ANNOTATION_CREATED twice)", lambda: hook(dup), "unchanged",
             before=[lambda: hook(dup)]),
        Case("event out of order (update, then the older create)", lambda: hook(older), "unchanged",
             before=[lambda: hook(newer)]),
        Case("delete twice", lambda: hook(deleted(51)), "unchanged",
             before=[lambda: hook(created(51, img_c, single_region(ds, img_c))), lambda: hook(deleted(51))]),
        Case("update after delete (a late event)", lambda: hook(late), "unchanged",
             before=[lambda: hook(created(53, img_c, single_region(ds, img_c))), lambda: hook(deleted(53))]),
        Case("delete of an annotation never seen", lambda: hook(deleted(987654)), "unchanged"),
        Case("unknown action", lambda: hook({"action": "SOMETHING_ELSE", "project": {"id": PROJECT}}), "unchanged"),
        Case("predict: task without an image", lambda: predict([{"id": 9, "data": {}}]), "unchanged"),
        Case("predict: corrupt image", lambda: predict([{"id": 9, "data": {"image": local("corrupt.png")}}]),
             "unchanged"),
        Case("predict: decompression bomb", lambda: predict([{"id": 9, "data": {"image": local("bomb.png")}}]),
             "unchanged"),
        Case("predict: interactive clicks outside the image", lambda: predict([task_ok], context={"result": [
            {"type": "keypointlabels", "value": {"x": 250, "y": -4, "keypointlabels": [label]}}]}), "unchanged"),
    ]
    assert len({c.name for c in cases}) == len(cases)

    tail = LogTail(backend.log_path)
    pid = backend.proc.pid
    rss_before = rss_bytes(pid)
    outcomes: dict[str, int] = {"4xx": 0, "skipped": 0, "unchanged": 0}
    failures = []
    started = time.monotonic()
    for case in cases:
        for step in case.before:
            assert step().status_code == 200, case.name
        wait_idle(backend, timeout=30)
        before = memory_bytes(model_dir)
        tail.read()
        response = case.send()
        wait_idle(backend, timeout=30)
        after = memory_bytes(model_dir)
        text = tail.read()
        problems = []
        if case.expect == "4xx":
            if not 400 <= response.status_code < 500:
                problems.append(f"answered {response.status_code}")
            elif "json" in response.headers.get("Content-Type", "") and not response.json().get("error"):
                problems.append("a 4xx without an error message")
        elif response.status_code != 200:
            problems.append(f"answered {response.status_code}: {response.text[:200]}")
        if case.expect == "skipped" and case.log.lower() not in text.lower():
            problems.append(f"no log line with {case.log!r}")
        if after != before:
            problems.append("memory.ntt changed")
        if case.no_project is not None and (model_dir / str(case.no_project)).exists():
            problems.append(f"created MODEL_DIR/{case.no_project}")
        if "Traceback" in text:
            problems.append("a traceback in the log")
        if backend.proc.poll() is not None:
            problems.append("the backend died")
            failures.append((case.name, problems))
            break
        if problems:
            failures.append((case.name, problems))
        else:
            outcomes[case.expect] += 1
    elapsed = time.monotonic() - started
    rss_after = rss_bytes(pid)

    # the documented exception: an empty annotation marks its image as a negative (no reference vector changes)
    before_refs = load_memory(model_dir)
    assert call(backend, "POST", "/webhook", json=created(104, ds.negative_ids()[0], [])).status_code == 200
    m = wait_idle(backend)
    empty_memory = load_memory(model_dir)
    assert empty_memory.counts() == before_refs.counts()
    assert empty_memory.negative_images == before_refs.negative_images | {"annotation:104"}
    assert call(backend, "GET", "/health").json()["status"] == "UP"
    assert m["counters"].get("events_failed", 0) == 0, m["counters"]

    ok = sum(outcomes.values())
    figure("1 bad input",
           f"{ok}/{len(cases)} cases handled in {elapsed:.0f} s: {outcomes['4xx']} answered 4xx with a message, "
           f"{outcomes['skipped']} accepted then skipped with a log line, {outcomes['unchanged']} no-op events; "
           f"memory.ntt byte-identical after each, no stray project dir, no traceback, backend alive "
           f"(RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MB); an empty annotation only marks a "
           f"negative image, as documented")
    assert not failures, "\n".join(f"{name}: {', '.join(p)}" for name, p in failures)
    assert len(cases) >= 30
