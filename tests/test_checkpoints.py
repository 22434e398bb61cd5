"""Checkpoint registry, download/cache/verify, and strict loading of files in the official key layouts (offline)."""
from __future__ import annotations

import dataclasses
import re
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest
import timm
import torch

from ntt_engine import checkpoints
from ntt_engine.backbones.dinov2 import DinoV2Encoder
from ntt_engine.backbones.sam2_proposer import SAM2_CONFIGS, Sam2ProposalGenerator
from ntt_engine.checkpoints import REGISTRY, CheckpointError, resolve


# ----------------------------------------------------------------------------------------------- fixtures / helpers
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        route = self.server.routes.get(self.path)  # type: ignore[attr-defined]
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        if route is None:
            self.send_error(404)
            return
        path, mode = route
        size = path.stat().st_size
        self.send_response(200)
        # "short": announce more bytes than are sent, then drop the connection
        self.send_header("Content-Length", str(size + 1000 if mode == "short" else size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile)

    def log_message(self, *args: object) -> None:
        pass


class Server:
    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}  # type: ignore[attr-defined]
        self.httpd.hits = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, route: str, path: Path, mode: str = "ok") -> str:
        self.httpd.routes[route] = (path, mode)  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{self.httpd.server_port}{route}"

    @property
    def hits(self) -> list[str]:
        return self.httpd.hits  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def closed_port_url(name: str = "x.pth") -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timm_to_official_dinov2(state: dict[str, torch.Tensor], registers: bool) -> dict[str, torch.Tensor]:
    """Inverse of timm's `_convert_dinov2`: a timm DINOv2 state dict in Meta's published key layout."""
    out = {k: v.clone() for k, v in state.items()}
    dim = out["cls_token"].shape[-1]
    out["mask_token"] = torch.zeros(1, dim)  # unused at inference, present in Meta's files
    if registers:
        # Meta: pos_embed covers CLS + patches, registers get none; timm folds the CLS position into cls_token
        pos_cls = torch.randn(1, 1, dim) * 0.02
        out["register_tokens"] = out.pop("reg_token")
        out["cls_token"] = out["cls_token"] - pos_cls[:, 0]
        out["pos_embed"] = torch.cat([pos_cls, out["pos_embed"]], dim=1)
    return out


def make_dinov2_file(root: Path, arch: str, registers: bool) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # not the encoder's random-weights seed, so equality below means "loaded"
    model = timm.create_model(arch, pretrained=False, img_size=518, num_classes=0)
    with torch.no_grad():  # LayerScale gammas start constant; make every tensor distinctive
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = root / f"{arch}.pth"
    torch.save(timm_to_official_dinov2(state, registers), path)
    return path, state


@pytest.fixture(scope="module")
def dino_s(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    return make_dinov2_file(tmp_path_factory.mktemp("dino"), "vit_small_patch14_dinov2", registers=False)


@pytest.fixture(scope="module")
def dino_s_reg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    return make_dinov2_file(tmp_path_factory.mktemp("dino_reg"), "vit_small_patch14_reg4_dinov2", registers=True)


@pytest.fixture(scope="module")
def sam2_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    from sam2.build_sam import build_sam2

    torch.manual_seed(1)
    model = build_sam2(SAM2_CONFIGS["sam2.1_hiera_tiny"], None, device="cpu")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)  # the official layout
    return path, state


def point_registry_at(monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], url=url))


def assert_state_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    # exact, except the reg4 CLS token that the layout conversion rebuilds as (cls - pos0) + pos0
    bad = [k for k, v in expected.items() if not (torch.equal(got[k], v) or torch.allclose(got[k], v, rtol=0, atol=1e-6))]
    assert bad == []


# ----------------------------------------------------------------------------------------------- registry
def test_registry_has_official_urls() -> None:
    for size in ("tiny", "small", "base_plus", "large"):
        assert REGISTRY[f"sam2_hiera_{size}"].url == \
            f"https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_{size}.pt"
        assert REGISTRY[f"sam2.1_hiera_{size}"].url == \
            f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{size}.pt"
    for arch in ("s", "b", "l", "g"):
        base = f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{arch}14"
        assert REGISTRY[f"dinov2_vit{arch}14"].url == f"{base}/dinov2_vit{arch}14_pretrain.pth"
        assert REGISTRY[f"dinov2_vit{arch}14_reg"].url == f"{base}/dinov2_vit{arch}14_reg4_pretrain.pth"
    for spec in REGISTRY.values():
        assert spec.sha256 is None and spec.url.endswith("/" + spec.filename) and spec.min_bytes > 10_000_000
    assert set(SAM2_CONFIGS) | {n for n in REGISTRY if n.startswith("dinov2")} == set(REGISTRY)


# ----------------------------------------------------------------------------------------------- resolve()
def test_download_cache_tofu_and_load(server: Server, dino_s, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    src, state = dino_s
    point_registry_at(monkeypatch, "dinov2_vits14", server.serve("/dinov2_vits14_pretrain.pth", src))
    monkeypatch.setenv("NTT_CACHE_DIR", str(tmp_path / "cache"))

    with caplog.at_level("WARNING"):
        path = resolve("dinov2_vits14", progress=False)
    digest = sha256(src)
    assert path == tmp_path / "cache" / "dinov2_vits14_pretrain.pth"
    assert sha256(path) == digest
    assert (tmp_path / "cache" / "dinov2_vits14_pretrain.pth.sha256").read_text().split()[0] == digest
    assert digest in caplog.text  # trust on first use is announced
    assert [p.name for p in files_under(tmp_path / "cache")] == [path.name, path.name + ".sha256"]

    server.stop()  # the second resolve must not need the network
    point_registry_at(monkeypatch, "dinov2_vits14", closed_port_url())
    assert resolve("dinov2_vits14", progress=False) == path
    assert server.hits == ["/dinov2_vits14_pretrain.pth"]

    enc = DinoV2Encoder("dinov2_vits14", path, input_size=518)
    assert_state_equal(enc.model, state)
    assert enc.name == f"dinov2_vits14@518:{digest[:12]}"


def test_registers_layout_loads(dino_s_reg) -> None:
    path, state = dino_s_reg
    enc = DinoV2Encoder("dinov2_vits14_reg", path, input_size=518)
    assert_state_equal(enc.model, state)
    # another input size: everything but the resampled position embedding is loaded as is
    small = DinoV2Encoder("dinov2_vits14_reg", path, input_size=224)
    assert small.model.pos_embed.shape == (1, 16 * 16, 384)
    torch.testing.assert_close(small.model.state_dict()["blocks.3.attn.qkv.weight"], state["blocks.3.attn.qkv.weight"])


def test_cached_file_changed_is_rejected(server: Server, dino_s, tmp_path: Path) -> None:
    src, _ = dino_s
    url = server.serve("/m.pth", src)
    path = resolve(url, cache_dir=tmp_path, progress=False)
    assert path.parent.parent == tmp_path / "url"
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00tampered")
    with pytest.raises(CheckpointError, match="recorded"):
        resolve(url, cache_dir=tmp_path, progress=False)


def test_wrong_pinned_digest_leaves_nothing(server: Server, dino_s, tmp_path: Path) -> None:
    src, _ = dino_s
    url = server.serve("/m.pth", src)
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        resolve(url, sha256="0" * 64, cache_dir=tmp_path, progress=False)
    assert url in str(err.value)
    assert files_under(tmp_path) == []
    # the right pin is accepted
    assert sha256(resolve(url, sha256=sha256(src), cache_dir=tmp_path, progress=False)) == sha256(src)


def test_short_body_leaves_nothing(server: Server, dino_s, tmp_path: Path) -> None:
    src, _ = dino_s
    url = server.serve("/short.pth", src, mode="short")  # Content-Length larger than the body
    with pytest.raises(CheckpointError) as err:
        resolve(url, cache_dir=tmp_path, progress=False)
    assert url in str(err.value)
    assert files_under(tmp_path) == []


def test_truncated_file_below_minimum_size(server: Server, dino_s, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = dino_s
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src.read_bytes()[: 20_000_000])  # served complete and consistent, but too small for the model
    point_registry_at(monkeypatch, "dinov2_vits14", server.serve("/cut.pth", cut))
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="too small") as err:
        resolve("dinov2_vits14", cache_dir=cache, progress=False)
    assert str(cache / "dinov2_vits14_pretrain.pth") in str(err.value)
    assert files_under(cache) == []


def test_unreachable_url_names_url_and_cache_path(tmp_path: Path) -> None:
    url = closed_port_url("dinov2_vitl14_pretrain.pth")
    with pytest.raises(CheckpointError) as err:
        resolve(url, cache_dir=tmp_path, progress=False, config_key="encoder_checkpoint")
    msg = str(err.value)
    assert url in msg and str(checkpoints.cache_path(url, tmp_path)) in msg and "encoder_checkpoint" in msg
    assert files_under(tmp_path) == []


def test_unreachable_registry_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_port_url("sam2.1_hiera_tiny.pt")
    point_registry_at(monkeypatch, "sam2.1_hiera_tiny", url)
    with pytest.raises(CheckpointError) as err:
        resolve("sam2.1_hiera_tiny", cache_dir=tmp_path, progress=False)
    assert url in str(err.value) and str(tmp_path / "sam2.1_hiera_tiny.pt") in str(err.value)
    assert files_under(tmp_path) == []


def test_http_error(server: Server, tmp_path: Path) -> None:
    url = server.serve("/exists.pth", Path(__file__)).replace("exists", "missing")
    with pytest.raises(CheckpointError, match="404"):
        resolve(url, cache_dir=tmp_path, progress=False)
    assert files_under(tmp_path) == []


def test_local_paths(dino_s, tmp_path: Path) -> None:
    src, _ = dino_s
    assert resolve(str(src)) == src
    assert resolve(str(src), sha256=sha256(src)) == src
    with pytest.raises(CheckpointError, match=re.escape(str(src))):
        resolve(str(src), sha256="f" * 64)
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny"):  # lists the known names
        resolve(str(tmp_path / "nope.pt"))


# ----------------------------------------------------------------------------------------------- strict loading
def test_dinov2_wrong_architecture_names_file(dino_s, dino_s_reg) -> None:
    src, _ = dino_s
    with pytest.raises(CheckpointError, match="vit_base_patch14_dinov2") as err:
        DinoV2Encoder("dinov2_vitb14", src, input_size=224)
    assert str(src) in str(err.value)
    with pytest.raises(CheckpointError, match=re.escape(str(src))):  # no registers in the file
        DinoV2Encoder("dinov2_vits14_reg", src, input_size=224)
    with pytest.raises(CheckpointError, match=re.escape(str(dino_s_reg[0]))):
        DinoV2Encoder("dinov2_vits14", dino_s_reg[0], input_size=224)


def test_dinov2_truncated_or_foreign_file(dino_s, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(dino_s[0].read_bytes()[:5_000_000])
    with pytest.raises(CheckpointError, match=re.escape(str(cut))):
        DinoV2Encoder("dinov2_vits14", cut, input_size=224)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape(str(text))):
        DinoV2Encoder("dinov2_vits14", text, input_size=224)


def test_sam2_download_and_strict_load(server: Server, sam2_tiny, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src, state = sam2_tiny
    point_registry_at(monkeypatch, "sam2.1_hiera_tiny", server.serve("/sam2.1_hiera_tiny.pt", src))
    path = resolve("sam2.1_hiera_tiny", cache_dir=tmp_path, progress=False)
    gen = Sam2ProposalGenerator("sam2.1_hiera_tiny", path)
    assert_state_equal(gen.model, state)
    assert gen.name == f"sam2.1_hiera_tiny:{sha256(src)[:12]}"


def test_sam2_wrong_architecture_names_file(sam2_tiny, tmp_path: Path) -> None:
    src, _ = sam2_tiny
    for wrong in ("sam2.1_hiera_small", "sam2_hiera_tiny"):  # more blocks; SAM 2.0 lacks some 2.1 keys
        with pytest.raises(CheckpointError, match=re.escape(str(src))) as err:
            Sam2ProposalGenerator(wrong, src)
        assert wrong in str(err.value)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(src.read_bytes()[:3_000_000])
    with pytest.raises(CheckpointError, match=re.escape(str(cut))):
        Sam2ProposalGenerator("sam2.1_hiera_tiny", cut)
    bare = tmp_path / "bare.pt"
    torch.save({"weights": {}}, bare)
    with pytest.raises(CheckpointError, match="model"):
        Sam2ProposalGenerator("sam2.1_hiera_tiny", bare)
