"""SSRF allow-list (pure functions over resolved addresses), local-file confinement, and the loader's HTTP policy
with a fake session (no network)."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from labelstudio_backend.fetch.images import (ImageFetchError, ImageLoader, address_refusal, check_addresses, host_allowed,
                                        local_file_path)
from labelstudio_backend.settings import Settings


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                     "::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "100.64.0.1",
                                     "0.0.0.0", "224.0.0.1", "fc00::1", "not-an-ip"])
def test_private_and_special_addresses_are_refused(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(address) is None


def test_allow_private_opens_private_networks_but_never_link_local():
    for address in ("10.0.0.5", "127.0.0.1", "192.168.0.10", "::1", "100.64.3.3"):
        assert address_refusal(address, allow_private=True) is None
    for address in ("169.254.169.254", "fe80::1", "0.0.0.0"):
        assert address_refusal(address, allow_private=True) is not None


def test_one_bad_record_refuses_the_host():
    check_addresses(["8.8.8.8", "1.1.1.1"])
    with pytest.raises(ImageFetchError, match="10.0.0.1"):
        check_addresses(["8.8.8.8", "10.0.0.1"])
    with pytest.raises(ImageFetchError):
        check_addresses([])


def test_host_allow_list_patterns():
    allowed = ("images.example.com", "*.cdn.example.org")
    assert host_allowed("images.example.com", allowed)
    assert host_allowed("IMAGES.example.com.", allowed)
    assert host_allowed("a.cdn.example.org", allowed) and host_allowed("cdn.example.org", allowed)
    assert not host_allowed("evilcdn.example.org", allowed)
    assert not host_allowed("example.com", allowed)
    assert not host_allowed("images.example.com.evil.net", allowed)
    assert host_allowed("anything.net", ("*",))
    assert not host_allowed("anything.net", ())


# ------------------------------------------------------------------------------------------------ local files
@pytest.fixture
def docroot(tmp_path):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 6), (200, 10, 10)).save(root / "images" / "a.png")
    Image.new("RGB", (8, 6)).save(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", root / "images" / "escape.png")
    os.symlink(root / "images" / "a.png", root / "inside.png")
    return root


def test_local_file_inside_the_root(docroot):
    assert local_file_path(docroot, "/data/local-files/?d=images/a.png") == (docroot / "images" / "a.png").resolve()
    assert local_file_path(docroot, "/data/local-files/?d=images%2Fa.png").name == "a.png"
    assert local_file_path(docroot, "/data/local-files/?d=inside.png").name == "a.png"  # symlink within the root


@pytest.mark.parametrize("url", [
    "/data/local-files/?d=../secret.png",
    "/data/local-files/?d=images/../../secret.png",
    "/data/local-files/?d=%2e%2e/secret.png",
    "/data/local-files/?d=%252e%252e/secret.png",  # double-encoded
    "/data/local-files/?d=/etc/passwd",
    "/data/local-files/?d=%2Fetc%2Fpasswd",
    "/data/local-files/?d=images/escape.png",  # symlink out of the root
    "/data/local-files/?d=images\\..\\..\\secret.png",
    "/data/local-files/?d=",
])
def test_path_traversal_is_refused(docroot, url):
    with pytest.raises(ImageFetchError, match="refused|without"):
        local_file_path(docroot, url)


def test_loader_reads_local_files_and_refuses_traversal(docroot):
    loader = ImageLoader(Settings(local_files_root=docroot))
    image = loader.load("/data/local-files/?d=images/a.png")
    assert image.shape == (6, 8, 3) and tuple(image[0, 0]) == (200, 10, 10)
    with pytest.raises(ImageFetchError):
        loader.load("/data/local-files/?d=../secret.png")
    with pytest.raises(ImageFetchError, match="no such file"):
        loader.load("/data/local-files/?d=images/missing.png")


# ------------------------------------------------------------------------------------------------ http policy
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 5, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeResponse:
    def __init__(self, status=200, body=b"", headers=None):
        self.status_code, self._body, self.headers = status, body, headers or {}

    @property
    def is_redirect(self):
        return self.status_code in (301, 302, 303, 307, 308) and "location" in self.headers

    def iter_content(self, chunk_size):
        for start in range(0, len(self._body), chunk_size):
            yield self._body[start:start + chunk_size]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeSession:
    def __init__(self, routes):
        self.routes, self.calls = routes, []

    def get(self, url, headers=None, **kwargs):
        self.calls.append((url, dict(headers or {})))
        assert kwargs["allow_redirects"] is False and kwargs["stream"] is True
        return self.routes.get(url, FakeResponse(404))


class FakeAPI:
    def auth_headers(self, force_refresh=False):
        return {"Authorization": "Bearer access-token"}


RESOLVE = {"ls.internal": ["10.0.0.2"], "img.example.com": ["93.184.216.34"], "evil.example.com": ["10.0.0.7"],
           "bucket.s3.amazonaws.com": ["52.1.2.3"],
           "169.254.169.254": ["169.254.169.254"]}


def loader_with(routes, **settings):
    values = dict(label_studio_url="http://ls.internal:8080", allowed_hosts=("img.example.com", "evil.example.com"))
    values.update(settings)
    session = FakeSession(routes)
    loader = ImageLoader(Settings(**values), FakeAPI(), resolver=lambda host, port: RESOLVE[host], session=session)
    return loader, session


def test_label_studio_urls_get_the_token_other_hosts_never_do():
    loader, session = loader_with({"http://ls.internal:8080/data/upload/4/a.png": FakeResponse(body=png_bytes()),
                                   "https://img.example.com/a.png": FakeResponse(body=png_bytes())})
    assert loader.load("/data/upload/4/a.png").shape == (4, 5, 3)
    assert loader.load("https://img.example.com/a.png").shape == (4, 5, 3)
    assert session.calls[0][1] == {"Authorization": "Bearer access-token"}
    assert "Authorization" not in session.calls[1][1]


def test_hosts_outside_the_allow_list_are_refused():
    loader, session = loader_with({})
    with pytest.raises(ImageFetchError, match="NTT_ALLOWED_HOSTS"):
        loader.load("http://elsewhere.net/a.png")
    with pytest.raises(ImageFetchError, match="private"):
        loader.load("http://evil.example.com/a.png")  # allowed name, private address
    assert session.calls == []


def test_redirects_are_rechecked():
    metadata = "http://169.254.169.254/latest/meta-data/"
    loader, session = loader_with({"https://img.example.com/r": FakeResponse(302, headers={"location": metadata})})
    with pytest.raises(ImageFetchError, match="169.254.169.254"):
        loader.load("https://img.example.com/r")
    loader.settings = loader.settings.replace(allowed_hosts=("*",))  # allow-listed, yet link-local: refused
    with pytest.raises(ImageFetchError, match="link-local"):
        loader.load("https://img.example.com/r")
    assert [url for url, _ in session.calls] == ["https://img.example.com/r"] * 2


def test_presigned_cloud_url_follows_label_studio_redirect_without_the_token():
    target = "https://bucket.s3.amazonaws.com/a.png?sig=1"
    loader, session = loader_with({})

    def route(url, headers=None, **kwargs):
        session.calls.append((url, dict(headers or {})))
        if url.startswith("http://ls.internal:8080/tasks/7/presign/?fileuri="):
            return FakeResponse(303, headers={"location": target})
        return FakeResponse(body=png_bytes()) if url == target else FakeResponse(404)

    session.get = route
    assert loader.load("s3://bucket/a.png", task_id=7).shape == (4, 5, 3)
    assert "Authorization" in session.calls[0][1] and "Authorization" not in session.calls[1][1]


def test_size_limit_and_http_errors():
    declared_too_big = FakeResponse(body=b"", headers={"content-length": "9999"})
    loader, _ = loader_with({"https://img.example.com/big.png": FakeResponse(body=b"x" * 5000),
                             "https://img.example.com/cl.png": declared_too_big,
                             "http://ls.internal:8080/data/upload/4/x.png": FakeResponse(401)},
                            download_max_bytes=1000)
    with pytest.raises(ImageFetchError, match="NTT_DOWNLOAD_MAX_BYTES"):
        loader.load("https://img.example.com/big.png")
    with pytest.raises(ImageFetchError, match="NTT_DOWNLOAD_MAX_BYTES"):
        loader.load("https://img.example.com/cl.png")
    with pytest.raises(ImageFetchError, match="HTTP 401.*LABEL_STUDIO_API_KEY"):
        loader.load("/data/upload/4/x.png")


def test_other_schemes_and_missing_urls_are_refused():
    loader, _ = loader_with({})
    for url in ("file:///etc/passwd", "ftp://img.example.com/a.png", "gopher://x", None, ""):
        with pytest.raises(ImageFetchError):
            loader.load(url)


def test_relative_urls_need_label_studio_url(tmp_path):
    loader = ImageLoader(Settings())
    with pytest.raises(ImageFetchError, match="LABEL_STUDIO_URL"):
        loader.load("/data/upload/4/a.png")


def test_data_uri():
    import base64

    loader, _ = loader_with({})
    uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert loader.load(uri).shape == (4, 5, 3)
    with pytest.raises(ImageFetchError):
        loader.load("data:text/html;base64,PGgxPg==")


def test_absolute_label_studio_media_urls(docroot):
    """Task URLs carry Label Studio's public HOST, which may differ from LABEL_STUDIO_URL (docker, proxies)."""
    loader, session = loader_with({"http://ls.internal:8080/data/upload/4/a.png": FakeResponse(body=png_bytes())},
                                  local_files_root=docroot)
    image = loader.load("http://localhost:8080/data/local-files/?d=images/a.png")  # from disk, no request
    assert image.shape == (6, 8, 3) and session.calls == []
    with pytest.raises(ImageFetchError, match="refused"):
        loader.load("http://localhost:8080/data/local-files/?d=../secret.png")
    assert loader.load("https://public.example.net/data/upload/4/a.png").shape == (4, 5, 3)
    assert session.calls == [("http://ls.internal:8080/data/upload/4/a.png", {"Authorization": "Bearer access-token"})]
