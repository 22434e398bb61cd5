"""Figure 5: with BASIC_AUTH_USER / BASIC_AUTH_PASS, every route but /health (and /webhook when an API key makes
webhooks mere notifications) refuses every attempt without the right credentials; forged webhooks change nothing
when Label Studio (a fake LS HTTP server on 127.0.0.1) does not confirm them."""
from __future__ import annotations

import base64
import copy

import pytest

from support.backend_helpers import LABEL_CONFIG, PROJECT, annotation_result, created_webhook
from support.local_servers import TOKEN, FakeLabelStudio
from support.reliability import (api_webhook, call, gauge, load_memory, memory_bytes, setup_body, single_region,
                         start_backend, wait_idle)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

USER, PASSWORD = "mluser", "ml-pass-123"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# (what, requests auth tuple or None, extra headers)
ATTEMPTS: list[tuple[str, tuple | None, dict]] = [
    ("no credentials", None, {}),
    ("wrong user", ("admin", PASSWORD), {}),
    ("wrong password", (USER, "ml-pass-124"), {}),
    ("both wrong", ("admin", "admin"), {}),
    ("empty user and password", ("", ""), {}),
    ("password with a trailing space", (USER, PASSWORD + " "), {}),
    ("password prefix", (USER, PASSWORD[:-1]), {}),
    ("password plus a character", (USER, PASSWORD + "4"), {}),
    ("user in capitals", (USER.upper(), PASSWORD), {}),
    ("user and password swapped", (PASSWORD, USER), {}),
    ("malformed: 'Basic' without a value", None, {"Authorization": "Basic"}),
    ("malformed: not base64", None, {"Authorization": "Basic !!!not-base64!!!"}),
    ("malformed: no colon", None, {"Authorization": "Basic " + b64(USER.encode() + PASSWORD.encode())}),
    ("malformed: only the user", None, {"Authorization": "Basic " + b64(f"{USER}:".encode())}),
    ("malformed: NUL after the password", None, {"Authorization": "Basic " + b64(f"{USER}:{PASSWORD}\0".encode())}),
    ("malformed: invalid UTF-8", None, {"Authorization": "Basic " + b64(f"{USER}:".encode() + b"\xff\xfe")}),
    ("wrong scheme: Bearer", None, {"Authorization": f"Bearer {b64(f'{USER}:{PASSWORD}'.encode())}"}),
    ("wrong scheme: Label Studio token", None, {"Authorization": f"Token {TOKEN}"}),
    ("wrong scheme: Digest", None, {"Authorization": f'Digest username="{USER}", realm="ntt-label"'}),
    ("an 8 KB garbage header", None, {"Authorization": "Basic " + "A" * 8000}),
    ("credentials in the query string", None, {}),
]

ROUTES = [("POST", "/setup"), ("POST", "/predict"), ("GET", "/versions"), ("POST", "/versions"),
          ("GET", "/metrics"), ("GET", "/metrics?format=prometheus"), ("POST", "/nonexistent")]


def attempt(backend, method: str, path: str, what: str, auth, headers: dict):
    if what == "credentials in the query string":
        path += ("&" if "?" in path else "?") + f"user={USER}&password={PASSWORD}"
    return call(backend, method, path, auth=auth, headers=headers, json=setup_body(), timeout=30)


def test_basic_auth_refuses_every_attempt_and_forged_webhooks_change_nothing(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    ls = FakeLabelStudio().start()
    ls.add_project(PROJECT, LABEL_CONFIG)
    positives = ds.positive_ids()
    tasks = {i: ls.add_task(100 + i, PROJECT, ds.url(i)) for i in positives[:3]}
    ls.annotate(1, tasks[positives[0]], annotation_result(ds, positives[0], "brush"))
    ls.annotate(2, tasks[positives[1]], annotation_result(ds, positives[1], "poly"))
    auth_env = {"BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD, "LOCAL_FILES_DOCUMENT_ROOT": str(ds.root)}
    api_mode = start_backend(tmp_path, "auth-api", tmp_path / "models-api", {
        **auth_env, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": TOKEN})
    payload_mode = start_backend(tmp_path, "auth-payload", tmp_path / "models-payload", auth_env)
    try:
        # ----- every protected route x every credential variant
        refused, total, leaks = 0, 0, []
        for backend, routes in ((api_mode, ROUTES), (payload_mode, ROUTES + [("POST", "/webhook")])):
            for method, path in routes:
                for what, auth, headers in ATTEMPTS:
                    response = attempt(backend, method, path, what, auth, headers)
                    total += 1
                    if response.status_code == 401 and "Basic" in response.headers.get("WWW-Authenticate", ""):
                        refused += 1
                    else:
                        leaks.append(f"{method} {path} with {what}: {response.status_code}")
        assert not leaks, leaks
        # the right credentials pass, /health is open, and with an API key so is /webhook (a notification only)
        for backend in (api_mode, payload_mode):
            assert call(backend, "GET", "/health", auth=None).status_code == 200
            assert call(backend, "POST", "/setup", auth=(USER, PASSWORD), json=setup_body()).status_code == 200
            assert call(backend, "GET", "/metrics", auth=(USER, PASSWORD)).status_code == 200
        assert call(payload_mode, "POST", "/webhook", auth=(USER, PASSWORD),
                    json={"action": "PROJECT_UPDATED", "project": {"id": PROJECT}}).status_code == 200

        # ----- forged webhooks against a project with real references (API mode, no credentials, as LS sends)
        model_dir = tmp_path / "models-api"
        for annotation_id, image_id in ((1, positives[0]), (2, positives[1])):
            response = call(api_mode, "POST", "/webhook", auth=None,
                            json=api_webhook("ANNOTATION_CREATED", annotation_id, tasks[image_id]))
            assert response.status_code == 200
        wait_idle(api_mode, lambda m: gauge(m).get("revision") == 2)
        real = load_memory(model_dir).reference_ids()
        assert real == {"annotation:1", "annotation:2"}

        attacker = created_webhook(ds, 777, positives[2], annotation_result(ds, positives[2], "brush"))
        rewritten = copy.deepcopy(attacker)
        rewritten["annotation"].update(id=1, task=tasks[positives[0]], result=single_region(ds, positives[2]))
        other_project = copy.deepcopy(attacker)
        other_project["annotation"].update(project=999)
        other_project["project"].update(id=999)
        stolen_id = copy.deepcopy(rewritten)
        stolen_id["project"].update(id=999)
        stolen_id["annotation"].update(project=999)
        forged = [
            ("ANNOTATION_CREATED for an annotation LS does not have (404), full attacker payload", attacker),
            ("ANNOTATION_UPDATED of a real annotation with an attacker's result", {**rewritten,
                                                                                  "action": "ANNOTATION_UPDATED"}),
            ("ANNOTATIONS_DELETED of a real annotation LS still has", api_webhook("ANNOTATIONS_DELETED", 2)),
            ("ANNOTATIONS_DELETED of an annotation never seen", api_webhook("ANNOTATIONS_DELETED", 424242)),
            ("ANNOTATION_CREATED for a project LS does not have", other_project),
            ("a real annotation id claimed for another project", stolen_id),
            ("START_TRAINING (a resync: everything is already current)", {"action": "START_TRAINING",
                                                                          "project": {"id": PROJECT}}),
            ("ANNOTATIONS_CREATED (bulk) of two unknown annotations", {
                "action": "ANNOTATIONS_CREATED", "project": {"id": PROJECT},
                "annotation": [dict(attacker["annotation"], id=778), dict(attacker["annotation"], id=779)],
                "task": [attacker["task"]]}),
        ]
        unchanged = 0
        changed = []
        for what, payload in forged:
            before = memory_bytes(model_dir)
            response = call(api_mode, "POST", "/webhook", auth=None, json=payload)
            assert response.status_code == 200, (what, response.text)
            wait_idle(api_mode)
            if memory_bytes(model_dir) == before and not (model_dir / "999").exists():
                unchanged += 1
            else:
                changed.append(what)
        assert load_memory(model_dir).reference_ids() == real
        figure("5 auth",
               f"{refused}/{total} attempts without the right credentials refused with 401 + WWW-Authenticate "
               f"({len(ATTEMPTS)} variants: none, wrong user, wrong password, malformed headers, other schemes... "
               f"x {len(ROUTES)} routes, + /webhook when there is no API key); /health open, right credentials "
               f"accepted; {unchanged}/{len(forged)} forged webhooks (API mode, fake LS answering 404 or the real "
               f"annotation) left memory.ntt byte-identical")
        assert not changed, changed
    finally:
        api_mode.stop()
        payload_mode.stop()
        ls.stop()
