"""The dashboard: what each project's pre-labels save its annotators (issue 16).

    GET /dashboard                      every project this backend holds, with its headline figures (HTML)
    GET /dashboard/<project>            one project: effort curve, per-class table, last corrections (HTML)
    GET /dashboard/<project>.json       the same figures as JSON
    GET /dashboard/<project>/effort.png the effort curve
    GET /dashboard/<project>/thumb/<annotation>/<index>.png   a gallery thumbnail (the memory in pictures)

Server-rendered (Jinja2 templates in web/templates/), readable without JavaScript; basic auth applies as on every
route. An unknown project is a 404 that says which projects exist.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, render_template

from labelstudio_backend.predict.thresholds import project_thresholds, project_version, threshold_source
from labelstudio_backend.report.chart import effort_png
from labelstudio_backend.report.stats import project_stats
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.store.thumbnails import ThumbnailStore
from labelstudio_backend.web.backend import current_backend
from labelstudio_backend.web.requests import SETUP_ENGINE_WAIT_S

dashboard = Blueprint("dashboard", __name__)


@dashboard.get("/dashboard")
def overview():
    rt = current_backend().runtime
    projects = [_stats(rt, project) for project in sorted(rt.store.projects())]
    return render_template("dashboard_index.html", projects=projects)


@dashboard.get("/dashboard/<project>.json")
def project_json(project: str):
    rt = current_backend().runtime
    return jsonify(_stats(rt, _known(rt, project)))


@dashboard.get("/dashboard/<project>/effort.png")
def project_chart(project: str):
    rt = current_backend().runtime
    return Response(effort_png(_stats(rt, _known(rt, project))), mimetype="image/png",
                    headers={"Cache-Control": "no-store"})


@dashboard.get("/dashboard/<project>/thumb/<int:annotation>/<int:index>.png")
def thumbnail(project: str, annotation: int, index: int):
    rt = current_backend().runtime
    known = _known(rt, project)
    record = rt.store.snapshot(known).state.annotations.get(str(annotation))
    data = ThumbnailStore(rt.store.project_dir(known)).read(annotation, index) \
        if record is not None and index < len(record.thumbs) else None
    if data is None:
        return jsonify(error=f"project {known} has no thumbnail {index} of annotation {annotation}"), 404
    return Response(data, mimetype="image/png", headers={"Cache-Control": "no-store"})


@dashboard.get("/dashboard/<project>")
def project_page(project: str):
    rt = current_backend().runtime
    stats = _stats(rt, _known(rt, project))
    return render_template("dashboard_project.html", stats=stats, label_studio=rt.settings.label_studio_url)


class UnknownProject(Exception):
    pass


@dashboard.errorhandler(UnknownProject)
def _unknown(exc: UnknownProject):
    return jsonify(error=str(exc)), 404


def _known(rt: Runtime, project: str) -> int:
    held = sorted(rt.store.projects())
    if not project.isascii() or not project.isdigit() or int(project) not in held:
        raise UnknownProject(f"no project {project!r} in this backend; it holds {held or 'none yet'} (a project "
                             "appears once Label Studio called /setup for it)")
    return int(project)


def _stats(rt: Runtime, project: int) -> dict[str, Any]:
    snap = rt.store.snapshot(project)
    env = rt.settings.score_threshold
    engine = rt.wait_engine(SETUP_ENGINE_WAIT_S)
    return project_stats(snap.state, snap.memory, project_thresholds(snap.state, env),
                         threshold_source(snap.state, env), project_version(engine, snap, rt.settings))
