#!/usr/bin/env python3
"""Judge the product as an annotator sees it: Label Studio's real web UI in headless Chromium.

    .venv/bin/python scripts/ui_check.py                 # PNGs + report.json under runs/ui_check/
    .venv/bin/python scripts/ui_check.py --out /tmp/ui   # elsewhere

What it does, every wait bounded:
  1. starts a fresh local stack (Label Studio 1.23.2 + this backend, `synthetic` preset) in OUT/stack, with the
     demo's project (one brush control, labels coloured as named) on generated images;
  2. labels the first images of each class through the API (ground truth as brush masks), waits for the memory,
     and pre-labels every task ("Retrieve predictions"), as scripts/run.sh does;
  3. logs in with Chromium, opens the label stream, screenshots the task it serves (with its pre-annotations),
     submits it in the UI (the Submit button, else Ctrl+Enter), and screenshots the task served next;
  4. prints, for both tasks, what the UI showed (task id, regions on the canvas) and, through the API, the
     model_version of each of the task's predictions against the backend's current one; screenshots the Data
     Manager and the backend's dashboard of the project (and its gallery: the memory in pictures); writes
     OUT/report.json.
Exit code 0 when all of it ran (with --strict: only if the next task carries the new model_version and shows one
region type, one region per object), 1 when
--strict fails, 2 on an error (then OUT/failure.png and failure.html show the page). Both servers and the browser are
always stopped. Needs Debian's `chromium` + `chromium-driver` and `selenium`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import run_demo  # noqa: E402  (the demo's project, data and reference helpers)
from local_stack import (APIError, BackendServer, LabelStudioAPI, LabelStudioServer,  # noqa: E402
                                             StartError, label_studio_bin, wait_until)
from local_stack.procutil import free_ls_port  # noqa: E402


class UICheckError(RuntimeError):
    """Printed without a traceback; says what did not happen."""


def say(message: str) -> None:
    print(f"[ui_check] {message}", flush=True)


# ------------------------------------------------------------------------------------------------ the stack


def start_stack(work: Path, args: argparse.Namespace) -> tuple[LabelStudioServer, BackendServer]:
    files_root = work / "files"
    ls = LabelStudioServer(data_dir=work / "ls", files_root=files_root, port=free_ls_port())
    say(f"starting Label Studio on port {ls.port} (fresh data: migrations take 30-90 s); log {ls.log_path}")
    ls.start(timeout=args.start_timeout)
    backend = BackendServer(model_dir=work / "models", log_path=work / "backend.log", python=Path(sys.executable),
                            env_overrides={"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.pat,
                                           "LOCAL_FILES_DOCUMENT_ROOT": str(files_root), "NTT_PRESET": "synthetic",
                                           "OMP_NUM_THREADS": "1"})
    say(f"starting the backend (synthetic preset); log {backend.log_path}")
    try:
        backend.start(timeout=args.start_timeout)
    except BaseException:
        ls.stop()
        raise
    return ls, backend


def prepare_project(ls: LabelStudioServer, backend: BackendServer, args: argparse.Namespace) -> tuple[LabelStudioAPI, int]:
    api = LabelStudioAPI(ls.url, ls.pat)
    wait_until(lambda: backend.get("/health").json().get("engine") == "ready", args.start_timeout,
               what="the backend's engine to load", proc=backend.proc, log=backend.log_path)
    images_dir, coco = run_demo.demo_images(Path(ls.files_root), args.images, args.classes, args.seed)
    project, tasks = run_demo.demo_project(api, [c["name"] for c in coco["categories"]], images_dir,
                                           len(coco["images"]))
    ml = run_demo.connect_backend(api, project, backend)
    if ml.get("state") != "CO":
        raise UICheckError(f"Label Studio could not connect the backend: {ml}")
    run_demo.label_references(api, backend, project, tasks, coco, "synthetic")
    return api, project


# ------------------------------------------------------------------------------------------------ the browser


def browser(args: argparse.Namespace):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={args.width},{args.height}", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
    driver.set_page_load_timeout(args.ui_timeout)
    return driver


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a page in the middle of loading: try again until the deadline
            last_error = exc
        time.sleep(interval)
    raise UICheckError(f"timed out after {timeout:.0f} s waiting for {what}"
                       + (f" (last error: {last_error})" if last_error else ""))


def login(driver, base_url: str, email: str, password: str, timeout: float) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/user/login/")
    wait_for("the login form", lambda: driver.find_element(By.NAME, "email"), timeout)
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
    wait_for("the login to finish", lambda: "/user/login" not in driver.current_url, timeout)


# What the labeling editor (window.Htx, Label Studio Frontend's store) has on screen.
EDITOR_STATE_JS = """
const s = window.Htx;
if (!s || !s.task || !s.annotationStore) return null;
const sel = s.annotationStore.selected;
const kinds = {};
if (sel) for (const r of sel.regions) kinds[r.type] = (kinds[r.type] || 0) + 1;
return {task: s.task.id, regions: sel ? sel.regions.length : null, region_types: kinds,
        predictions: s.annotationStore.predictions.length, annotations: s.annotationStore.annotations.length,
        // the editor names a prediction's author after its model_version
        editor_versions: s.annotationStore.predictions.map(p => p.createdBy),
        // the backend's task-level note (a TextArea result) when it found nothing
        note: (document.body.innerText.match(/ntt-label (looked at|has learnt).*/) || [null])[0],
        loaded: !!document.querySelector('canvas')};
"""


def editor_state(driver) -> dict | None:
    state = driver.execute_script(EDITOR_STATE_JS)
    return state if state and state.get("loaded") else None


def open_label_stream(driver, base_url: str, project: int, timeout: float) -> dict:
    driver.get(f"{base_url}/projects/{project}/data?labeling=1")
    state = wait_for("the label stream to show a task with its image", lambda: editor_state(driver), timeout)
    time.sleep(2.0)  # let the regions render on the canvas before the screenshot
    return editor_state(driver) or state


def show_region_details(driver, path: Path) -> str | None:
    """Select the task's first predicted brush region, as an annotator clicking it would, and screenshot its Details
    (Info) panel; the explanation the backend wrote in the region's meta when the panel shows it, else None."""
    text = driver.execute_script("""
const a = window.Htx.annotationStore.selected;
const r = a && a.regions.find(x => x.type === 'brushregion');
if (!r) return null;
a.selectArea(r);
return r.meta && r.meta.text ? r.meta.text[0] : null;""")
    time.sleep(1.0)
    driver.save_screenshot(str(path))
    return text if text and text in driver.execute_script("return document.body.innerText") else None


def submit_in_ui(driver, timeout: float) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver import ActionChains

    buttons = [b for b in driver.find_elements(By.CSS_SELECTOR, "button[aria-label=submit], button[name=submit]")
               if b.is_displayed() and b.is_enabled()]
    if buttons:
        buttons[0].click()
        return "Submit button"
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    return "Ctrl+Enter"


# ------------------------------------------------------------------------------------------------ the report


def task_report(api: LabelStudioAPI, backend: BackendServer, project: int, shown: dict, current: str | None) -> dict:
    """What the editor showed (`shown`, read when the task appeared; `current`: the backend's model_version then),
    next to what the API says about the task now (a background refresh may have changed it since)."""
    predictions = api.list_predictions(task=shown["task"])
    task = api.get_task(shown["task"])
    editor_versions = shown.get("editor_versions") or []
    return {"task": shown["task"], "regions_on_screen": shown.get("regions"), "region_types": shown.get("region_types"),
            "note_on_screen": shown.get("note"),
            "predictions_in_editor": shown.get("predictions"), "editor_prediction_versions": editor_versions,
            "backend_model_version": current,
            "prediction_ids": [p.get("id") for p in predictions],
            "prediction_versions": [p.get("model_version") for p in predictions],
            "prediction_regions": [len(p.get("result") or []) for p in predictions],
            "has_current_version": current in editor_versions,
            "data_manager_predictions_score": task.get("predictions_score"),
            "annotations": task.get("total_annotations")}


def _shapes(r: dict) -> int:
    """Regions drawn on the image (the note is a text, not a region of the canvas)."""
    return sum(n for kind, n in (r.get("region_types") or {}).items() if kind.endswith("region")
               and not kind.startswith("textarea"))


def print_report(name: str, r: dict) -> None:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted((r.get("region_types") or {}).items()))
    say(f"{name}: task {r['task']}, {r['regions_on_screen']} regions on screen" + (f" ({kinds})" if kinds else "")
        + f"; {r['predictions_in_editor']} prediction(s) loaded in the editor")
    say(f"  model_version of the prediction(s) in the editor: {', '.join(r['editor_prediction_versions']) or 'none'}")
    if r.get("note_on_screen"):
        say(f"  the backend's note on screen: {r['note_on_screen']!r}")
    say("  the task's predictions now, via the API (id model_version: regions): "
        + (", ".join(f"{i} {v}: {n}" for i, v, n in zip(r["prediction_ids"], r["prediction_versions"],
                                                         r["prediction_regions"])) or "none"))
    say(f"  backend's current model_version {r['backend_model_version']}: "
        + ("the editor showed it" if r["has_current_version"] else "the editor showed an older one (stale)"))
    say(f"  Data Manager prediction score: {r['data_manager_predictions_score']}")


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    work = _fresh(out)
    _check_prerequisites(args)
    from selenium.common.exceptions import WebDriverException
    ls = backend = driver = None
    report: dict[str, Any] = {}
    try:
        ls, backend = start_stack(work, args)
        api, project = prepare_project(ls, backend, args)
        say("starting headless Chromium")
        driver = browser(args)
        login(driver, ls.url, ls.email, ls.password, args.ui_timeout)
        say(f"logged in; opening the label stream of project {project}")
        first = open_label_stream(driver, ls.url, project, args.ui_timeout)
        driver.save_screenshot(str(out / "1-served-task.png"))
        print_report("first task served", report.setdefault("first", task_report(api, backend, project, first,
                                                                                   _version(backend, project))))
        before = backend.get("/metrics").json()
        how = submit_in_ui(driver, args.ui_timeout)
        submitted_at = time.monotonic()
        say(f"submitted task {first['task']} in the UI ({how}); waiting for the next task")
        second = wait_for("the next task after the submit",
                          lambda: (s := editor_state(driver)) and s["task"] != first["task"] and s, args.ui_timeout,
                          interval=0.1)
        report["next_task_after_s"] = round(time.monotonic() - submitted_at, 2)
        at_next, current_at_next = backend.get("/metrics").json(), _version(backend, project)
        time.sleep(2.0)
        second = editor_state(driver) or second
        driver.save_screenshot(str(out / "2-next-task.png"))
        report["region_details"] = show_region_details(driver, out / "2b-region-details.png")
        say(f"a predicted region's Details panel: {report['region_details']!r}")
        report["submitted_annotations"] = len(api.list_annotations(first["task"]))
        print_report("next task served", report.setdefault("next", task_report(api, backend, project, second,
                                                                                 current_at_next)))
        # the memory moves after the webhook: show where it stood when the next task was served, and later
        time.sleep(args.settle)
        report["memory_revision"] = {"before_submit": _revision(before, project),
                                     "when_next_task_shown": _revision(at_next, project),
                                     "settled": _revision(backend.get("/metrics").json(), project)}
        _say_revisions(report, args.settle)
        _data_manager_screenshot(driver, ls.url, project, out / "3-data-manager.png", args.ui_timeout)
        driver.get(f"{backend.url}/dashboard/{project}")  # the backend's own page: what the pre-labels saved
        wait_for("the dashboard", lambda: "Classes" in driver.page_source, args.ui_timeout)
        driver.save_screenshot(str(out / "4-dashboard.png"))
        # the memory in pictures, further down: are the thumbnails there and loaded (naturalWidth > 0)?
        driver.execute_script("document.querySelector('.gallery')?.scrollIntoView()")
        time.sleep(0.5)
        driver.save_screenshot(str(out / "5-dashboard-gallery.png"))
        report["gallery_thumbnails_loaded"] = driver.execute_script(
            "return [...document.querySelectorAll('.gallery img')].filter(i => i.complete && i.naturalWidth > 0).length")
        say(f"dashboard gallery: {report['gallery_thumbnails_loaded']} thumbnail(s) loaded")
        report["dashboard"] = backend.get(f"/dashboard/{project}.json").json()["totals"]
        report["screenshots"] = [str(out / f) for f in (
            "1-served-task.png", "2-next-task.png", "2b-region-details.png", "3-data-manager.png", "4-dashboard.png",
            "5-dashboard-gallery.png")]
        if args.strict and not report["region_details"]:
            say("--strict: a predicted region's Details panel does not show why it was predicted")
            return 1
        if args.strict and not report["gallery_thumbnails_loaded"]:
            say("--strict: the dashboard shows no thumbnail of the memory")
            return 1
        if args.strict and not report["next"]["has_current_version"]:
            say("--strict: the task served after the submit does not carry the backend's current model_version")
            return 1
        silent = [name for name in ("first", "next") if not _shapes(report[name]) and not report[name]["note_on_screen"]]
        if args.strict and silent:
            say(f"--strict: the {' and '.join(silent)} task showed neither a region nor the backend's note")
            return 1
        if args.strict and len({k for k in report["next"].get("region_types") or {} if k.endswith("region")}) > 1:
            say(f"--strict: the served task shows several region types {report['next']['region_types']}: one region "
                "per object was expected")
            return 1
        return 0
    except (UICheckError, StartError, TimeoutError, APIError, run_demo.DemoError, WebDriverException) as exc:
        say(f"error: {exc}")
        report["error"] = str(exc)
        if driver is not None:
            _dump_page(driver, out)
        return 2
    finally:
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        if driver is not None:
            driver.quit()
        for server in (backend, ls):
            if server is not None:
                server.stop()
        say(f"servers stopped; report and screenshots in {out}")


def _fresh(out: Path) -> Path:
    """OUT created, its stack/ emptied (a fresh Label Studio each run); returns stack/."""
    work = out / "stack"
    if work.exists():
        shutil.rmtree(work)
    out.mkdir(parents=True, exist_ok=True)
    return work


def _check_prerequisites(args: argparse.Namespace) -> None:
    if not label_studio_bin().exists():
        raise UICheckError(f"Label Studio is not installed at {label_studio_bin()}: run scripts/setup.sh")
    for attr in ("chromium", "chromedriver"):  # selenium wants paths, not names on $PATH
        found = shutil.which(getattr(args, attr))
        if not found:
            raise UICheckError(f"{getattr(args, attr)} not found: apt-get install -y chromium chromium-driver "
                               f"(or pass --{attr} PATH)")
        setattr(args, attr, found)


def _say_revisions(report: dict[str, Any], settle: float) -> None:
    rev = report["memory_revision"]
    say(f"next task on screen {report['next_task_after_s']} s after the submit; memory revision "
        f"{rev['before_submit']} before the submit, {rev['when_next_task_shown']} when the next task was shown, "
        f"{rev['settled']} {settle:.0f} s later")


def _data_manager_screenshot(driver: Any, ls_url: str, project: int, path: Path, timeout: float) -> None:
    driver.get(f"{ls_url}/projects/{project}/data")
    wait_for("the Data Manager's task table",
             lambda: driver.execute_script("return document.querySelectorAll('[class*=\"row\"]').length") > 3,
             timeout)
    time.sleep(2.0)
    driver.save_screenshot(str(path))


def _version(backend: BackendServer, project: int) -> str | None:
    return next((p.get("model_version") for p in backend.get("/metrics").json().get("projects", [])
                 if p.get("project") == project), None)


def _revision(metrics: dict, project: int) -> Any:
    return next((p.get("revision") for p in metrics.get("projects", []) if p.get("project") == project), None)


def _dump_page(driver, out: Path) -> None:
    """What the browser showed when it failed: a screenshot and the page source."""
    try:
        driver.save_screenshot(str(out / "failure.png"))
        (out / "failure.html").write_text(driver.page_source)
        say(f"the page at failure: {out / 'failure.png'} and failure.html ({driver.current_url})")
    except Exception as exc:  # the browser itself may be gone
        say(f"could not capture the page: {exc}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/ui_check.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__[__doc__.index("What it does"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "ui_check", help="screenshots, report.json, and the "
                   "stack's data and logs (OUT/stack, recreated on every run)")
    p.add_argument("--images", type=int, default=12, help="generated images (tasks)")
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chromium", default="chromium", help="the browser executable")
    p.add_argument("--chromedriver", default="chromedriver", help="the matching driver")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--start-timeout", type=float, default=240.0, help="seconds for each server to come up")
    p.add_argument("--ui-timeout", type=float, default=180.0, help="seconds for each page or task to appear")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait after the next task before "
                                                             "reading the memory revision again")
    p.add_argument("--strict", action="store_true", help="exit 1 unless the task served right after the submit "
                                                          "carries the backend's current model_version")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum, frame):  # `timeout`, a closed terminal: unwind, so that run() stops the servers
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        return run(args)
    except UICheckError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
