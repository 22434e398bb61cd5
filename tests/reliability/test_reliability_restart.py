"""Figure 7: a backend restarted with the same MODEL_DIR serves the same model_version and identical predictions:
after a graceful stop, when gunicorn with two workers takes over, and after kill -9."""
from __future__ import annotations

import pytest

from labelstudio_backend.store.versions import revision_of
from support.backend_helpers import LABEL_CONFIG, PROJECT, annotation_result, created_webhook, task_for
from support.reliability import call, gauge, kill9, setup_body, start_backend, strip_ids, wait_idle

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


def test_restart_serves_the_same_version_and_predictions(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    positives = ds.positive_ids()
    model_dir = tmp_path / "models"
    env = {"LOCAL_FILES_DOCUMENT_ROOT": str(ds.root)}
    tasks = [task_for(ds, i) for i in positives[3:7]]
    body = {"tasks": tasks, "project": f"{PROJECT}.1795614847", "label_config": LABEL_CONFIG,
            "params": {"login": None, "password": None, "context": None}}

    def observe(backend) -> tuple[str, str, list[dict]]:
        setup = call(backend, "POST", "/setup", json=setup_body())
        assert setup.status_code == 200, setup.text
        versions = call(backend, "GET", f"/versions?project={PROJECT}").json()["versions"]
        predicted = call(backend, "POST", "/predict", json=body)
        assert predicted.status_code == 200, predicted.text
        return setup.json()["model_version"], versions[0], strip_ids(predicted.json()["results"])

    first = start_backend(tmp_path, "restart", model_dir, env)
    try:
        call(first, "POST", "/setup", json=setup_body())
        for n, (image_id, kind) in enumerate(zip(positives[:3], ("brush", "poly", "rect"))):
            payload = created_webhook(ds, 10 + n, image_id, annotation_result(ds, image_id, kind))
            assert call(first, "POST", "/webhook", json=payload).status_code == 200
        wait_idle(first, lambda m: gauge(m).get("revision") == 3)
        version, listed, predictions = observe(first)
    finally:
        first.stop()
    regions = sum(len(p["result"]) for p in predictions)
    assert version == listed and revision_of(version) == 3 and regions > 0
    assert all(p["model_version"] == version for p in predictions)

    # each run starts on the MODEL_DIR the previous one left; the third one is killed with SIGKILL
    runs = [("development server", None, "stop"), ("gunicorn, 2 workers", 2, "stop"),
            ("development server", None, "kill -9"), ("development server after the kill -9", None, "stop")]
    same = []
    for what, workers, ending in runs:
        backend = start_backend(tmp_path, "restart", model_dir, env, workers=workers)
        try:
            # with several workers, ask several times: each worker loads MODEL_DIR by itself
            seen = [observe(backend) for _ in range(4 if workers else 1)]
        finally:
            kill9(backend) if ending == "kill -9" else backend.stop()
        same.append(all(s == (version, version, predictions) for s in seen))
    figure("7 restart",
           f"{sum(same)}/{len(same)} restarts on the same MODEL_DIR (dev server, gunicorn x2 workers, dev server "
           f"then kill -9, dev server) served model_version {version} on /setup and /versions and predictions "
           f"identical to the first run ({len(tasks)} tasks, {regions} regions, region ids aside)")
    assert all(same)
