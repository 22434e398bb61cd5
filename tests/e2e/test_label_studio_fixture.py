"""The Label Studio fixture itself: a real server, a personal access token, a project with local-file tasks."""
from __future__ import annotations

import pytest
import requests

from labelstudio_backend.labelstudio.label_config import DETAIL_ORDER, recommended_label_config
from local_stack import LabelStudioAPI, LabelStudioServer, TokenExistsError, create_personal_access_token

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

def label_config(names: list[str]) -> str:
    """A brush, a polygon and a box control: each predicted object is one brush region (NTT_REGION_CONTROLS=one)."""
    return recommended_label_config(list(names), DETAIL_ORDER)


def test_server_up_on_its_port_with_a_personal_access_token(label_studio: LabelStudioServer, ls_api: LabelStudioAPI):
    health = requests.get(f"{label_studio.url}/health", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "UP"}
    assert ls_api.whoami()["email"] == label_studio.email
    # the PAT is a JWT refresh token: it is not accepted as a bearer token itself, only via /api/token/refresh/
    raw = requests.get(f"{label_studio.url}/api/current-user/whoami",
                       headers={"Authorization": f"Bearer {label_studio.pat}"}, timeout=10)
    assert raw.status_code == 401
    # Label Studio allows one valid PAT per user: a second POST /api/token/ is refused with 409
    with pytest.raises(TokenExistsError):
        create_personal_access_token(label_studio.url, label_studio.email, label_studio.password)
    assert LabelStudioAPI(label_studio.url, label_studio.pat).whoami()["email"] == label_studio.email
    # nobody gets in without a token
    assert requests.get(f"{label_studio.url}/api/projects/", timeout=10).status_code == 401


def test_project_with_local_file_tasks(ls_api: LabelStudioAPI, label_studio: LabelStudioServer, synthetic):
    project = ls_api.create_project("fixture check", label_config(synthetic.label_names))
    parsed = ls_api.get_project(project["id"])["parsed_label_config"]
    assert {parsed[k]["type"] for k in ("brush", "poly", "rect")} == {"BrushLabels", "PolygonLabels",
                                                                      "RectangleLabels"}
    tasks = ls_api.import_local_files(project["id"], synthetic.images_dir, expected=len(synthetic.coco["images"]))
    assert len(tasks) == len(synthetic.coco["images"])
    first = tasks[0]
    url = first["data"]["image"]
    assert url.startswith("/data/local-files/?d=synthetic/images/"), url
    # Label Studio serves the file (it needs the storage; with a token, since local files are not public)
    served = ls_api.session.get(f"{label_studio.url}{url}", timeout=30)
    assert served.status_code == 200
    assert served.content == (synthetic.images_dir / synthetic.image_for_task(first)["file_name"]).read_bytes()
