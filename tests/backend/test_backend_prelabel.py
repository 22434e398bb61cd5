"""Bulk pre-labelling through the (fake) API: only tasks without a current-version prediction, resumable."""
import pytest

from labelstudio_backend.store.versions import revision_of
from labelstudio_backend.__main__ import main
from labelstudio_backend.predict.prelabel import prelabel
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.settings import Settings

from support.backend_helpers import annotation_result
from support.fake_ls import FakeLabelStudio


@pytest.fixture
def setup(tmp_path, dataset, engine):
    ls = FakeLabelStudio(dataset)
    settings = Settings(model_dir=tmp_path / "models", local_files_root=dataset.root, preset="synthetic",
                        preload=False, label_studio_url="http://ls.test:8080", label_studio_api_key="legacy-token")
    runtime = Runtime(settings, engine_factory=lambda: engine)
    runtime.api = ls
    positives = dataset.positive_ids()
    for n, image_id in enumerate(positives[:2]):
        ls.annotate(n + 1, ls.add_task(image_id), annotation_result(dataset, image_id))
    for image_id in positives[2:6]:
        ls.add_task(image_id)
    ls.add_task(12, url="/data/local-files/?d=images/gone.png")
    return settings, runtime, ls


def test_prelabel_predicts_what_is_missing_and_resumes(setup):
    settings, runtime, ls = setup
    stats = prelabel(settings, 4, batch_size=2, runtime=runtime, progress=False)
    assert stats.tasks == 7 and stats.already_current == 0
    assert stats.predicted == stats.uploaded == 6 and stats.failed == 1
    assert "gone.png" in stats.errors[0]
    assert {p["model_version"] for p in ls.predictions} == {stats.model_version}
    assert revision_of(stats.model_version) == 2
    assert sum(len(p["result"]) for p in ls.predictions) > 0

    again = prelabel(settings, 4, runtime=runtime, progress=False)
    assert again.already_current == 6 and again.predicted == 0 and again.failed == 1

    ls.annotate(3, list(ls.tasks)[2], [])  # an empty annotation (negative): the memory moves to a new version
    third = prelabel(settings, 4, limit=4, runtime=runtime, progress=False)
    assert third.model_version != stats.model_version and third.predicted == 4
    # the three labelled tasks got a new prediction next to the old; the unlabelled one had its own replaced
    assert third.replaced == 1
    versions = [[p["model_version"] for p in ls.tasks[t]["predictions"]] for t in list(ls.tasks)[:4]]
    assert versions == [[stats.model_version, third.model_version]] * 3 + [[third.model_version]]


def test_prelabel_cli_needs_the_api(monkeypatch, tmp_path):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("NTT_PRESET", "synthetic")
    with pytest.raises(SystemExit, match="LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"):
        main(["prelabel", "--project", "4"])


def test_prelabel_order_useful_labels_the_most_useful_tasks_first(setup):
    settings, runtime, ls = setup
    engine_id = runtime.engine().model_id
    unlabelled = [t for t in sorted(ls.tasks) if not any(a["task"] == t for a in ls.annotations.values())][:4]
    # earlier predictions of this engine: the memory was sure of the first two, unsure of the third; the fourth
    # was never predicted; another model's low score does not count
    for task, score in zip(unlabelled[:3], (0.9, 0.8, 0.1)):
        ls.create_prediction(task, [], score, f"{engine_id}.r0")
    ls.create_prediction(unlabelled[0], [], 0.0, "someone-else-v1")
    stats = prelabel(settings, 4, runtime=runtime, progress=False, limit=3, order="useful")
    predicted = [p["task"] for p in ls.predictions if p["model_version"] == stats.model_version]
    # the never-predicted unlabelled tasks (one of them has a missing image: it fails), then the least certain
    assert sorted(predicted) == sorted([unlabelled[3], unlabelled[2]]) and stats.failed == 1
    assert "gone.png" in stats.errors[0] and stats.replaced == 1  # the third's stale prediction, in place
    with pytest.raises(ValueError, match="order must be one of"):
        prelabel(settings, 4, runtime=runtime, progress=False, order="random")
