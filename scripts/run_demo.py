#!/usr/bin/env python3
"""The demo: Label Studio (sqlite) + this backend + a project of generated images, connected, ready to label.

    python scripts/run_demo.py                      # or scripts/run.sh, which also creates the venvs
    python scripts/run_demo.py --preset fast        # real models (SAM2.1 hiera-tiny + DINOv2 ViT-S/14)

What it does, every step bounded in time:
  1. picks the engine preset: `synthetic` (test backbones, no weights needed) unless --preset, $NTT_PRESET or cached
     `fast` checkpoints say otherwise; for `fast` / `paper` it checks the checkpoints first (downloading them into
     $NTT_CACHE_DIR, default ~/.cache/ntt) and, offline, says exactly which files to fetch and where to put them;
  2. writes a few synthetic images with ground truth to ./demo_data/files/demo/ (once);
  3. starts Label Studio 1.23.2 from ./.venv-ls (data in ./demo_data/ls, local files served from ./demo_data/files)
     and this backend (models in ./demo_data/models), both on 127.0.0.1;
  4. creates the project "ntt-label demo" (one BrushLabels control, labels in the colours their names say), imports the images,
     connects the backend;
  5. with --auto-label-references (default with the synthetic preset) labels the first 3 images of each class from
     the ground truth, so the memory has references and predictions appear at once;
  6. prints the URL, the login and what to try, and runs until Ctrl-C (then stops both servers).
Run it again and it reuses ./demo_data (the project, the login, the token). `--no-wait` sets everything up and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import requests  # noqa: E402

from demo_presets import DemoError, ensure_checkpoints, pick_preset  # noqa: E402
from labelstudio_backend.labelstudio.label_config import recommended_label_config  # noqa: E402
from local_stack import (ADMIN_EMAIL, ADMIN_PASSWORD, APIError, BackendServer,  # noqa: E402
                                             LabelStudioAPI, LabelStudioServer, StartError, TokenExistsError,
                                             create_personal_access_token, free_port, label_studio_bin,
                                             port_in_use, wait_until)

PROJECT_TITLE = "ntt-label demo"
REFERENCES_PER_CLASS = 3


def say(message: str = "") -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------------ data


def demo_images(files_root: Path, images: int, classes: int, seed: int) -> tuple[Path, dict]:
    from ntt_engine.synthetic import generate_dataset

    root = files_root / "demo"
    instances = root / "instances.json"
    if instances.is_file():
        coco = json.loads(instances.read_text())
        gen = coco.get("info", {}).get("generator", {})
        if gen.get("images") == images and gen.get("classes") == classes and gen.get("seed") == seed:
            return root / "images", coco
    say(f"writing {images} synthetic images ({classes} classes) to {root} ...")
    path = generate_dataset(root, images=images, classes=classes, seed=seed, size=(320, 240))
    return root / "images", json.loads(Path(path).read_text())


def reference_images(coco: dict, per_class: int) -> list[int]:
    by_class: dict[int, list[int]] = defaultdict(list)
    for image in sorted(coco["images"], key=lambda im: im["id"]):
        for category in sorted({a["category_id"] for a in coco["annotations"] if a["image_id"] == image["id"]}):
            by_class[category].append(image["id"])
    chosen: set[int] = set()
    for ids in by_class.values():
        chosen.update(ids[:per_class])
    return sorted(chosen)


def brush_results(coco: dict, image_id: int) -> list[dict]:
    import numpy as np
    from label_studio_sdk.converter.brush import mask2rle
    from pycocotools import mask as mask_utils

    names = {c["id"]: c["name"] for c in coco["categories"]}
    results = []
    for index, a in enumerate(a for a in coco["annotations"] if a["image_id"] == image_id):
        mask = mask_utils.decode(a["segmentation"]).astype(np.uint8) * 255  # LS shows the alpha channel: 0/255
        height, width = mask.shape
        results.append({"id": f"ref{index}", "from_name": "brush", "to_name": "image", "type": "brushlabels",
                        "original_width": width, "original_height": height, "image_rotation": 0,
                        "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": [names[a["category_id"]]]}})
    return results


# ------------------------------------------------------------------------------------------------ servers


def pick_port(wanted: int, what: str) -> int:
    if not port_in_use(wanted) and not port_in_use(wanted, "localhost"):
        return wanted
    port = free_port()
    say(f"port {wanted} is busy; {what} uses {port} instead")
    return port


def personal_access_token(server: LabelStudioServer, token_file: Path, given: str | None) -> str:
    """The demo's PAT: --api-key, else the one saved by an earlier run, else a new one (LS allows one per user)."""
    def works(token: str) -> bool:
        r = requests.post(f"{server.url}/api/token/refresh/", json={"refresh": token}, timeout=30)
        return r.status_code == 200

    if given:
        if not works(given):
            raise DemoError("--api-key was refused by Label Studio (POST /api/token/refresh/ failed)")
        return given
    if token_file.is_file():
        token = token_file.read_text().strip()
        if token and works(token):
            return token
    try:
        token = create_personal_access_token(server.url, server.email, server.password)
    except TokenExistsError:
        raise DemoError(f"{server.email} already has a personal access token in this Label Studio, and the demo's "
                        f"copy ({token_file}) is missing or revoked. Copy it from Label Studio (Account & Settings → "
                        f"Personal Access Token) and pass --api-key TOKEN, or start afresh by deleting "
                        f"{server.data_dir}") from None
    token_file.write_text(token + "\n")
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return token


def demo_project(api: LabelStudioAPI, labels: list[str], images_dir: Path, n_images: int) -> tuple[int, list[dict]]:
    existing = [p for p in api.list_projects() if p.get("title") == PROJECT_TITLE]
    if existing:
        project = existing[0]["id"]
        say(f"reusing project {project} '{PROJECT_TITLE}'")
    else:
        config = recommended_label_config(list(labels))
        project = api.create_project(PROJECT_TITLE, config,
                                     description="Few-shot instance masks: label a few images, the rest follows.")["id"]
        say(f"created project {project} '{PROJECT_TITLE}'")
    tasks = api.list_tasks(project)
    if len(tasks) < n_images:
        say(f"importing {n_images} images as local files from {images_dir} ...")
        tasks = api.import_local_files(project, images_dir, expected=n_images)
    return project, tasks


def connect_backend(api: LabelStudioAPI, project: int, backend: BackendServer) -> dict:
    """Connect the backend; a backend left from an earlier run on another port is removed with its webhook."""
    for ml in api.list_ml_backends(project):
        if ml["url"].rstrip("/") == backend.url:
            return ml
        say(f"removing the stale ML backend {ml['url']} from an earlier run")
        api.delete_ml_backend(ml["id"])
        for hook in api.list_webhooks(project):
            if hook["url"].rstrip("/") == ml["url"].rstrip("/") + "/webhook":
                api.delete_webhook(hook["id"])  # LS does not delete it with the backend
    return api.connect_ml_backend(project, backend.url, title="ntt-label", is_interactive=True)


def wait_memory(backend: BackendServer, project: int, annotations: int, timeout: float) -> dict:
    def settled():
        m = backend.get("/metrics").json()
        gauge = next((p for p in m.get("projects", []) if p["project"] == project), None)
        return gauge if gauge and m.get("queue_length") == 0 and gauge.get("annotations", 0) >= annotations else None

    return wait_until(settled, timeout, interval=0.5, what="the references to reach the backend's memory",
                      proc=backend.proc, log=backend.log_path)


# ------------------------------------------------------------------------------------------------ main


def tcp_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:  # Label Studio takes 0 for "its default", 8080: refuse it rather than surprise
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/run_demo.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__[__doc__.index("What it does"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("auto", "synthetic", "fast", "paper"), default="auto",
                   help="engine preset; auto: $NTT_PRESET, else fast when its checkpoints are already cached, "
                        "else synthetic (test backbones, no weights needed)")
    p.add_argument("--data-dir", type=Path, default=REPO / "demo_data",
                   help="everything the demo writes: images, Label Studio's database, the memory, logs "
                        "(default ./demo_data; delete it to start afresh)")
    p.add_argument("--host", default="127.0.0.1", help="address both servers listen on (0.0.0.0: reachable from "
                                                       "other machines; the demo login is then exposed)")
    p.add_argument("--ls-port", type=tcp_port, default=8080, help="Label Studio's port (when busy, a free one is "
                                                              "picked and printed)")
    p.add_argument("--backend-port", type=tcp_port, default=9090, help="the backend's port (when busy, likewise)")
    p.add_argument("--images", type=int, default=12, help="generated images (tasks) in the demo project")
    p.add_argument("--classes", type=int, default=3, help="object classes in the generated images")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--email", default=os.environ.get("NTT_DEMO_EMAIL", ADMIN_EMAIL),
                   help="Label Studio login, created at the first start (default %(default)s; $NTT_DEMO_EMAIL)")
    p.add_argument("--password", default=os.environ.get("NTT_DEMO_PASSWORD", ADMIN_PASSWORD),
                   help="its password (default %(default)s; $NTT_DEMO_PASSWORD)")
    p.add_argument("--api-key", default=os.environ.get("NTT_DEMO_API_KEY"),
                   help="a Label Studio personal access token (default: created and saved by the demo)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--auto-label-references", dest="auto_label", action="store_true", default=None,
                   help=f"label the first {REFERENCES_PER_CLASS} images per class from the ground truth "
                        "(default with the synthetic preset)")
    g.add_argument("--no-auto-label-references", dest="auto_label", action="store_false")
    p.add_argument("--offline", action="store_true", help="never download checkpoints")
    p.add_argument("--no-wait", action="store_true", help="set everything up, then stop both servers and exit")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds for each server to come up")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = pick_preset(args.preset)
    auto_label = args.auto_label if args.auto_label is not None else preset == "synthetic"
    data = args.data_dir.resolve()
    files_root, ls_dir, model_dir, logs = data / "files", data / "ls", data / "models", data / "logs"
    for d in (files_root, ls_dir, model_dir, logs):
        d.mkdir(parents=True, exist_ok=True)
    servers: list = []  # what to stop at the end, started or not

    def on_term(signum, frame):  # SIGTERM / SIGHUP (terminal closed): stop cleanly, as with Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
        if preset != "synthetic":
            ensure_checkpoints(preset, args.offline)
        say(f"engine preset: {preset}")
        images_dir, coco = demo_images(files_root, args.images, args.classes, args.seed)
        labels = [c["name"] for c in coco["categories"]]
        ls_server, api = start_label_studio(args, ls_dir, files_root, servers)
        backend = start_backend(args, ls_server, model_dir, files_root, logs / "backend.log", preset, servers)
        project, tasks = demo_project(api, labels, images_dir, len(coco["images"]))
        ml = connect_backend(api, project, backend)
        if ml.get("state") != "CO":
            raise DemoError(f"Label Studio could not connect the backend: {ml}")
        say(f"backend connected (model_version {ml.get('model_version')})")
        if auto_label:
            label_references(api, backend, project, tasks, coco, preset)
        print_welcome(args, ls_server, backend, project, preset, auto_label)
        if not args.no_wait:
            say("running; press Ctrl-C to stop both servers")
            watch(ls_server, backend)
        return 0
    except KeyboardInterrupt:
        say("\nstopping ...")
        return 0
    except (DemoError, StartError, TimeoutError, APIError) as exc:
        say(f"\nerror: {exc}")
        return 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the shutdown
        for server in reversed(servers):
            server.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_label_studio(args: argparse.Namespace, ls_dir: Path, files_root: Path,
                       servers: list) -> tuple[LabelStudioServer, LabelStudioAPI]:
    binary = label_studio_bin()
    if not binary.exists():
        raise DemoError(f"Label Studio is not installed at {binary}. Run scripts/run.sh (it creates .venv-ls), or "
                        f"`python3 -m venv .venv-ls && .venv-ls/bin/pip install label-studio==1.23.2`, or set "
                        f"NTT_LABEL_STUDIO_BIN to a `label-studio` executable.")
    first = not (ls_dir / "label_studio.sqlite3").exists()
    ls_server = LabelStudioServer(data_dir=ls_dir, files_root=files_root, email=args.email,
                                  password=args.password, bind_host=args.host, create_token=False,
                                  port=pick_port(args.ls_port, "Label Studio"))
    servers.append(ls_server)
    say(f"starting Label Studio on port {ls_server.port}"
        + (" (first start: database migrations take 30-60 s)" if first else "") + f"; log: {ls_server.log_path}")
    ls_server.start(timeout=args.start_timeout)
    token = personal_access_token(ls_server, ls_dir / "ntt-demo-token", args.api_key)
    ls_server.pat = token
    say(f"Label Studio up in {ls_server.start_seconds:.0f} s")
    return ls_server, LabelStudioAPI(ls_server.url, token)


def start_backend(args: argparse.Namespace, ls_server: LabelStudioServer, model_dir: Path, files_root: Path,
                  log_path: Path, preset: str, servers: list) -> BackendServer:
    backend = BackendServer(model_dir=model_dir, host=args.host, port=pick_port(args.backend_port, "the backend"),
                            python=Path(sys.executable), log_path=log_path, env_overrides={
                                "LABEL_STUDIO_URL": ls_server.url, "LABEL_STUDIO_API_KEY": ls_server.pat,
                                "LOCAL_FILES_DOCUMENT_ROOT": str(files_root), "NTT_PRESET": preset})
    servers.append(backend)
    say(f"starting the backend (preset {preset}) on port {backend.port}; log: {backend.log_path}")
    backend.start(timeout=args.start_timeout)
    wait_until(lambda: backend.get("/health").json().get("engine") == "ready", args.start_timeout,
               what="the backend's models to load", proc=backend.proc, log=backend.log_path)
    return backend


def print_welcome(args: argparse.Namespace, ls_server: LabelStudioServer, backend: BackendServer, project: int,
                  preset: str, auto_label: bool) -> None:
    url = f"http://localhost:{ls_server.port}" if args.host in ("127.0.0.1", "0.0.0.0") else \
        f"http://{args.host}:{ls_server.port}"
    say("")
    say("=" * 78)
    say(f"  Label Studio: {url}/projects/{project}/data")
    say(f"  login:        {ls_server.email}   password: {ls_server.password}")
    say(f"  backend:      {backend.url}  (preset {preset}; log {backend.log_path})")
    say(f"  dashboard:    {backend.url}/dashboard/{project}  (what the pre-labels save the annotators)")
    say("")
    say("  Next: click Label All Tasks - each object is pre-labelled as one brush mask in its class colour. Fix")
    say("  or delete a region and submit: the backend's memory updates at once and the next image follows.")
    say("  The Prediction score column (Columns > Prediction score) is the memory's certainty about each")
    say("  image: sort by it ascending, then Label Tasks As Displayed, to label the least certain first.")
    if not auto_label:
        say(f"  The memory is empty: label all objects in {REFERENCES_PER_CLASS} images per class first.")
    say("=" * 78)


def watch(ls_server: LabelStudioServer, backend: BackendServer) -> None:
    """Until Ctrl-C; a server that stops by itself is an error."""
    while True:
        for name, proc, log in (("Label Studio", ls_server.proc, ls_server.log_path),
                                ("the backend", backend.proc, backend.log_path)):
            if proc.poll() is not None:
                raise DemoError(f"{name} stopped (exit code {proc.returncode}); see {log}")
        time.sleep(1.0)


def label_references(api: LabelStudioAPI, backend: BackendServer, project: int, tasks: list[dict],
                     coco: dict, preset: str) -> None:
    by_name = {im["file_name"]: im["id"] for im in coco["images"]}
    task_of_image = {by_name[t["data"]["image"].rsplit("/", 1)[-1]]: t for t in tasks
                     if t["data"]["image"].rsplit("/", 1)[-1] in by_name}
    todo = [i for i in reference_images(coco, REFERENCES_PER_CLASS)
            if i in task_of_image and not task_of_image[i].get("total_annotations")]
    done = sum(1 for t in tasks if t.get("total_annotations"))
    for image_id in todo:
        api.create_annotation(task_of_image[image_id]["id"], brush_results(coco, image_id))
    if todo:
        say(f"labelled {len(todo)} reference images from the ground truth")
    gauge = wait_memory(backend, project, done + len(todo), timeout=300.0)
    say(f"memory: {gauge.get('references')} (model_version {gauge.get('model_version')})")
    # pre-label every task now, in small batches (LS runs this synchronously, 100 s per /predict call)
    ids = [t["id"] for t in tasks]
    batch = 24 if preset == "synthetic" else 4
    for start in range(0, len(ids), batch):
        api.retrieve_predictions(project, ids[start:start + batch])
    current = gauge.get("model_version")
    predicted = {p["task"] for p in api.list_predictions(project=project) if p.get("model_version") == current}
    say(f"pre-labelled {len(predicted)} of {len(ids)} tasks")


if __name__ == "__main__":
    sys.exit(main())
