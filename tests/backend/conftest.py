"""Shared fixtures: a tiny synthetic dataset served from a tmp LOCAL_FILES_DOCUMENT_ROOT, one synthetic-preset
engine for the whole session (models are built once, like in a real process), and an app factory."""
from __future__ import annotations

import json

import pytest

from labelstudio_backend.web.app import create_app
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.settings import Settings
from ntt_engine import Engine, EngineConfig
from ntt_engine.synthetic import generate_dataset

from support.backend_helpers import HEIGHT, WIDTH, Dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Dataset:
    root = tmp_path_factory.mktemp("docroot")
    path = generate_dataset(root, images=12, classes=2, seed=3, size=(WIDTH, HEIGHT))
    return Dataset(root, json.loads(path.read_text()))


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(EngineConfig.preset("synthetic"))


@pytest.fixture
def make_app(tmp_path, dataset, engine):
    """make_app(**settings overrides) → Flask app; all apps of one test share MODEL_DIR unless overridden."""
    apps = []

    def factory(runtime_hook=None, **overrides):
        values = dict(model_dir=tmp_path / "models", local_files_root=dataset.root, preset="synthetic",
                      preload=False, score_threshold=0.5, log_level="INFO")
        values.update(overrides)
        settings = Settings(**values)
        runtime = Runtime(settings, engine_factory=lambda: engine)
        if runtime_hook:
            runtime_hook(runtime)
        app = create_app(settings, runtime=runtime)
        app.testing = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["ntt"].worker.stop()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()
