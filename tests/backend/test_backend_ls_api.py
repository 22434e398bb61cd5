"""Token handling of the Label Studio client: legacy tokens, personal access tokens (JWT refresh → Bearer access)."""
import json
import time

import jwt
import pytest

from labelstudio_backend.labelstudio.client import LabelStudioAPI, LabelStudioAPIError


def token(kind: str, ttl: float = 300) -> str:
    return jwt.encode({"token_type": kind, "exp": int(time.time() + ttl), "jti": str(time.time())}, "k" * 32,
                      algorithm="HS256")


class Response:
    def __init__(self, status=200, body=None):
        self.status_code, self._body = status, body
        self.content = json.dumps(body).encode() if body is not None else b""
        self.text = str(body)

    def json(self):
        return self._body


class Session:
    def __init__(self, pages=None):
        self.requests, self.refreshes = [], 0
        self.valid = set()
        self.pages = pages or {}

    def post(self, url, json=None, timeout=None):
        assert url == "http://ls:8080/api/token/refresh/"
        if json["refresh"] == "revoked":
            return Response(401, {"detail": "Token is invalid"})
        self.refreshes += 1
        access = token("access")
        self.valid = {access}
        return Response(200, {"access": access})

    def request(self, method, url, headers=None, **kwargs):
        self.requests.append((method, url, headers["Authorization"], kwargs.get("params")))
        scheme, value = headers["Authorization"].split(" ", 1)
        if scheme == "Bearer" and value not in self.valid:
            return Response(401, {"detail": "expired"})
        if url.endswith("/api/annotations/404/"):
            return Response(404, {"detail": "Not found."})
        if url.endswith("/api/tasks/"):
            return Response(200, self.pages[kwargs["params"]["page"]])
        return Response(200, {"id": 1})


def test_legacy_token_is_sent_as_token():
    session = Session()
    api = LabelStudioAPI("http://ls:8080/", "0123456789abcdef", session=session)
    assert api.get_task(1) == {"id": 1}
    assert session.requests[0][:3] == ("GET", "http://ls:8080/api/tasks/1/", "Token 0123456789abcdef")
    assert session.refreshes == 0


def test_personal_access_token_is_refreshed_once_and_cached():
    session = Session()
    api = LabelStudioAPI("http://ls:8080", token("refresh"), session=session)
    api.get_task(1)
    api.get_project(2)
    assert session.refreshes == 1
    assert all(auth.startswith("Bearer ") for _, _, auth, _ in session.requests)


def test_a_401_refreshes_the_access_token_and_retries_once():
    session = Session()
    api = LabelStudioAPI("http://ls:8080", token("refresh"), session=session)
    api.get_task(1)
    session.valid = set()  # the server revoked the access token
    assert api.get_task(1) == {"id": 1}
    assert session.refreshes == 2


def test_a_rejected_token_is_a_clear_error():
    api = LabelStudioAPI("http://ls:8080", "revoked", session=Session())
    api._is_refresh_token = True  # as if it were a JWT refresh token
    with pytest.raises(LabelStudioAPIError, match="refused LABEL_STUDIO_API_KEY"):
        api.get_task(1)


def test_missing_settings_are_clear_errors():
    with pytest.raises(LabelStudioAPIError, match="LABEL_STUDIO_URL"):
        LabelStudioAPI("", "x")
    with pytest.raises(LabelStudioAPIError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioAPI("http://ls:8080", "")


def test_404_means_none_and_tasks_are_paged():
    pages = {1: {"tasks": [{"id": 1}, {"id": 2}], "total": 3}, 2: {"tasks": [{"id": 3}], "total": 3}}
    session = Session(pages)
    api = LabelStudioAPI("http://ls:8080", "legacy", session=session)
    assert api.get_annotation(404) is None
    assert [t["id"] for t in api.iter_tasks(4, page_size=2)] == [1, 2, 3]
    assert session.requests[-1][3] == {"project": 4, "fields": "all", "page": 2, "page_size": 2}


def test_label_studio_url_matching():
    api = LabelStudioAPI("http://ls:8080", "legacy", session=Session())
    assert api.is_label_studio_url("http://ls:8080/data/upload/1/a.png")
    assert not api.is_label_studio_url("http://ls:8081/data/upload/1/a.png")
    assert not api.is_label_studio_url("https://ls:8080/x")


def test_an_answer_that_is_not_json_is_an_api_error_and_non_finite_numbers_become_null():
    class Html(Session):
        def request(self, method, url, headers=None, **kwargs):
            response = Response(200, {})
            if url.endswith("/api/tasks/1/"):
                response.content, response.text = b"<html>proxy error</html>", "<html>proxy error</html>"
            else:
                response.content = b'{"id": 2, "score": NaN, "other": 1e999, "ok": 0.5}'
            return response

    api = LabelStudioAPI("http://ls:8080/", "0123456789abcdef", session=Html())
    with pytest.raises(LabelStudioAPIError, match="not JSON"):
        api.get_task(1)
    assert api.get_task(2) == {"id": 2, "score": None, "other": None, "ok": 0.5}

