"""Fixtures for the end-to-end tests: a real Label Studio 1.23.2 server (session), synthetic images served as local
files, and this backend as separate processes.

Label Studio comes from $NTT_LABEL_STUDIO_BIN or <repo>/.venv-ls/bin/label-studio; its first start on an empty data
directory runs the migrations (about 30-60 s on 2 cores), so one server serves the whole session.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from local_stack import BackendServer, LabelStudioAPI, LabelStudioServer

# The synthetic data set every e2e test shares: small images keep the whole module within a few minutes.
N_IMAGES = 24
N_CLASSES = 3
SEED = 11
SIZE = (256, 192)  # width, height


@dataclass
class SyntheticData:
    root: Path  # under the Label Studio document root
    images_dir: Path
    coco: dict
    files_root: Path  # LOCAL_FILES_DOCUMENT_ROOT

    @property
    def label_names(self) -> list[str]:
        return [c["name"] for c in self.coco["categories"]]

    def image_for_task(self, task: dict) -> dict:
        """The COCO image record of a Label Studio task (matched by file name in the local-files URL)."""
        name = task["data"]["image"].rsplit("/", 1)[-1]
        return next(im for im in self.coco["images"] if im["file_name"] == name)

    def annotations_of(self, image_id: int) -> list[dict]:
        return [a for a in self.coco["annotations"] if a["image_id"] == image_id]


@pytest.fixture(scope="session")
def e2e_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def ls_files_root(e2e_root: Path) -> Path:
    root = e2e_root / "files"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def label_studio(e2e_root: Path, ls_files_root: Path):
    """A real Label Studio on 127.0.0.1 (free port, fresh sqlite data dir, local files, PAT created)."""
    server = LabelStudioServer(data_dir=e2e_root / "ls", files_root=ls_files_root)
    server.start(timeout=150.0)
    print(f"\n[e2e] Label Studio {server.url} up in {server.start_seconds:.1f} s", file=sys.stderr)
    try:
        yield server
    finally:
        t0 = time.monotonic()
        server.stop()
        print(f"[e2e] Label Studio stopped in {time.monotonic() - t0:.1f} s", file=sys.stderr)


@pytest.fixture(scope="session")
def ls_api(label_studio: LabelStudioServer) -> LabelStudioAPI:
    return LabelStudioAPI(label_studio.url, label_studio.pat)


@pytest.fixture(scope="session")
def synthetic(ls_files_root: Path) -> SyntheticData:
    from ntt_engine.synthetic import generate_dataset

    root = ls_files_root / "synthetic"
    path = generate_dataset(root, images=N_IMAGES, classes=N_CLASSES, seed=SEED, size=SIZE)
    return SyntheticData(root=root, images_dir=root / "images", coco=json.loads(Path(path).read_text()),
                         files_root=ls_files_root)


@pytest.fixture(scope="session")
def start_backend(e2e_root: Path, label_studio: LabelStudioServer, ls_files_root: Path
                  ) -> Callable[..., BackendServer]:
    """start_backend(name, api_key=True, gunicorn_workers=None, **env) -> a running backend (NTT_PRESET=synthetic,
    its own MODEL_DIR); all are stopped at the end of the session. `api_key=False` leaves LABEL_STUDIO_API_KEY
    unset; `gunicorn_workers=N` serves it with gunicorn (as in the Docker image) instead of the development server."""
    started: list[BackendServer] = []

    def start(name: str, api_key: bool = True, gunicorn_workers: int | None = None, **env: str | None
              ) -> BackendServer:
        overrides: dict[str, str | None] = {
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.pat if api_key else None,
            "LOCAL_FILES_DOCUMENT_ROOT": str(ls_files_root),
            "NTT_CACHE_DIR": str(e2e_root / "ntt-cache"),
            "HOME": str(e2e_root / "home"),  # the SDK caches downloads under ~/.cache
            "NTT_PRESET": "synthetic",
            "LOG_LEVEL": "INFO",
            **env,
        }
        backend = BackendServer(model_dir=e2e_root / f"models-{name}", env_overrides=overrides,
                                log_path=e2e_root / f"backend-{name}.log", gunicorn_workers=gunicorn_workers)
        started.append(backend)
        backend.start(timeout=120.0)
        print(f"[e2e] backend {name} {backend.url} up in {backend.start_seconds:.1f} s", file=sys.stderr)
        return backend

    try:
        yield start
    finally:
        for backend in started:
            backend.stop()
