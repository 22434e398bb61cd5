"""The objects every route uses, built once per app by create_app and kept in app.extensions["ntt"]."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from labelstudio_backend.learn.sync import Synchronizer
from labelstudio_backend.learn.worker import SyncWorker
from labelstudio_backend.predict.predictor import Predictor
from labelstudio_backend.predict.refresher import Refresher
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.store.in_flight import PredictsInFlight
from labelstudio_backend.web.admission import Admission

EXTENSION = "ntt"


@dataclass
class Backend:
    runtime: Runtime
    worker: SyncWorker
    synchronizer: Synchronizer
    predictor: Predictor
    admission: Admission
    refresher: Refresher
    predicts: PredictsInFlight  # /predict requests running, per project, in any process (the refresh waits)


def current_backend() -> Backend:
    """The Backend of the app handling the current request."""
    return current_app.extensions[EXTENSION]
