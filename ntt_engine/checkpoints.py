"""Model checkpoints: a registry of official download URLs and a resolver that downloads, caches and verifies them.

Meta publishes no SHA-256 for the SAM2 and DINOv2 files, so the registry holds none. Integrity then rests on:
- a pinned digest when the caller gives one (config `encoder_sha256` / `proposer_sha256`);
- otherwise trust on first use: the digest of the first download is stored beside the file (`<file>.sha256`, in
  `sha256sum` format) and every later use is checked against it;
- a size sanity check (Content-Length and a per-model minimum), and the strict state-dict load in the backbones.

Downloads go to a temporary file in the cache directory and are moved into place atomically, so a failed or interrupted
download never leaves a file that looks complete.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import requests
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CACHE_ENV = "NTT_CACHE_DIR"
_CHUNK = 1 << 20
_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, downloaded, verified or loaded. The message says what to do."""


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    url: str
    sha256: str | None  # None: Meta publishes none; the first download's digest is recorded (trust on first use)
    filename: str
    min_bytes: int  # sanity floor: ~95 % of the float32 tensor payload, so a truncated file is caught early


_SAM2_0 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SAM2_1 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"

# Tensor payload in bytes, measured from the architectures themselves (state_dict numel × 4).
_SAM2_PAYLOAD = {"tiny": 155_784_968, "small": 184_176_392, "base_plus": 323_335_688, "large": 897_721_544}
_DINOV2_PAYLOAD = {"s": 88_224_768, "b": 346_318_848, "l": 1_217_470_464, "g": 4_545_916_928}


def _floor(payload: int) -> int:
    return int(payload * 0.95)


def _build_registry() -> dict[str, CheckpointSpec]:
    reg: dict[str, CheckpointSpec] = {}
    for size, payload in _SAM2_PAYLOAD.items():
        for prefix, base in (("sam2", _SAM2_0), ("sam2.1", _SAM2_1)):
            name = f"{prefix}_hiera_{size}"
            reg[name] = CheckpointSpec(name, f"{base}/{name}.pt", None, f"{name}.pt", _floor(payload))
    for arch, payload in _DINOV2_PAYLOAD.items():
        base_name = f"dinov2_vit{arch}14"
        for name, stem in ((base_name, base_name), (f"{base_name}_reg", f"{base_name}_reg4")):
            filename = f"{stem}_pretrain.pth"
            reg[name] = CheckpointSpec(name, f"{_DINOV2}/{base_name}/{filename}", None, filename, _floor(payload))
    return reg


REGISTRY: dict[str, CheckpointSpec] = _build_registry()


def cache_dir_default() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ntt"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The digest stored beside a cached file on first download, if any."""
    side = sidecar_path(Path(path))
    try:
        text = side.read_text().split()
    except OSError:
        return None
    return text[0].lower() if text else None


def weights_id(path: Path, sha256: str | None = None) -> str:
    """Short id of a checkpoint's content (first 12 hex of its SHA-256), for model names and cache keys."""
    digest = sha256 or recorded_sha256(path) or sha256_file(path)
    return digest[:12].lower()


def describe_mismatch(model_state: Mapping[str, object], file_state: Mapping[str, object], limit: int = 5) -> str:
    """How a checkpoint's keys/shapes differ from a model's, briefly ("" when they match), for load errors."""
    def shape(v: object) -> tuple[int, ...]:
        return tuple(getattr(v, "shape", ()))

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:limit]) + (f", … ({len(keys)} in all)" if len(keys) > limit else "")

    missing = sorted(set(model_state) - set(file_state))
    unexpected = sorted(set(file_state) - set(model_state))
    wrong = sorted(k for k in set(model_state) & set(file_state) if shape(model_state[k]) != shape(file_state[k]))
    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    if wrong:
        shown = [f"{k} (file {list(shape(file_state[k]))}, model {list(shape(model_state[k]))})" for k in wrong]
        parts.append(f"shape mismatches: {few(shown)}")
    return "; ".join(parts)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _hint(target: Path, url: str, config_key: str | None) -> str:
    key = f"`{config_key}`" if config_key else "`encoder_checkpoint` / `proposer_checkpoint`"
    return (f"Download {url} yourself and put it at {target} (its digest is recorded on first use), "
            f"or set {key} in the engine config to a local copy of the file. "
            f"The cache directory can be moved with ${CACHE_ENV}.")


def _write_sidecar(path: Path, digest: str) -> None:
    side = sidecar_path(path)
    fd, tmp = tempfile.mkstemp(dir=side.parent, prefix=f".{side.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{digest}  {path.name}\n")  # `sha256sum -c` format
        os.replace(tmp, side)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _verify_cached(target: Path, url: str, expected: str | None, min_bytes: int, config_key: str | None) -> Path:
    size = target.stat().st_size
    if size < min_bytes:
        raise CheckpointError(f"cached checkpoint {target} is {size} bytes, smaller than the {min_bytes} expected: "
                              f"it is truncated. Delete it to download it again. " + _hint(target, url, config_key))
    digest = sha256_file(target)
    recorded = recorded_sha256(target)
    if expected is not None and digest != expected.lower():
        raise CheckpointError(f"cached checkpoint {target} has sha256 {digest}, but {expected} was pinned. "
                              f"Delete the file to download it again, or fix the pinned digest. "
                              + _hint(target, url, config_key))
    if expected is None and recorded is not None and digest != recorded:
        raise CheckpointError(f"cached checkpoint {target} has sha256 {digest}, but {recorded} was recorded when it "
                              f"was first downloaded ({sidecar_path(target)}): the file changed. Delete both files to "
                              f"download it again. " + _hint(target, url, config_key))
    if recorded is None:
        logger.warning("checkpoint %s: no recorded digest, trusting it on first use: sha256 %s", target, digest)
        _write_sidecar(target, digest)
    return target


def _download(url: str, target: Path, expected: str | None, min_bytes: int, progress: bool,
              config_key: str | None) -> Path:
    created = [d for d in (target.parent, *target.parent.parents) if not d.exists()]  # removed again on failure
    target.parent.mkdir(parents=True, exist_ok=True)
    # a digest recorded by an earlier download of this file (since deleted) still binds: trust on *first* use
    pinned = expected is not None
    expected = expected or recorded_sha256(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    out = os.fdopen(fd, "wb")
    try:
        h = hashlib.sha256()
        written = 0
        # identity encoding: Content-Length must then be the exact file size
        with out, requests.get(url, stream=True, timeout=_TIMEOUT, headers={"Accept-Encoding": "identity"}) as resp:
            resp.raise_for_status()
            total = int(resp.headers.get("Content-Length") or 0)
            with tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
                      disable=not progress) as bar:
                for chunk in resp.iter_content(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total and written != total:
            raise CheckpointError(f"truncated download: got {written} of {total} bytes")
        if written < min_bytes:
            raise CheckpointError(f"file too small: {written} bytes, expected at least {min_bytes}")
        digest = h.hexdigest()
        if expected is not None and digest != expected.lower():
            where = "pinned" if pinned else f"recorded in {sidecar_path(target)} by an earlier download"
            raise CheckpointError(f"sha256 mismatch: got {digest}, expected {expected} ({where})")
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        _write_sidecar(target, digest)
        if not pinned:
            logger.warning("checkpoint %s downloaded from %s; no published digest, recorded sha256 %s "
                           "(trust on first use, stored in %s)", target.name, url, digest, sidecar_path(target))
        return target
    except BaseException as exc:
        out.close()
        tmp.unlink(missing_ok=True)
        for d in created:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reason = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"could not download checkpoint {target.name} from {url}: {reason}. "
                              + _hint(target, url, config_key)) from exc


def _fsync_dir(path: Path) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def cache_path(source: str, cache_dir: Path | None = None) -> Path:
    """Where a registry name or URL is cached. Registry files keep their official names; other URLs get a
    subfolder per URL so two files with the same name cannot collide."""
    root = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    if source in REGISTRY:
        return root / REGISTRY[source].filename
    for spec in REGISTRY.values():
        if spec.url == source:
            return root / spec.filename
    if not _is_url(source):
        raise ValueError(f"{source!r} is neither a registry name nor a URL")
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(source).path)).name or "checkpoint"
    url_id = hashlib.sha256(source.encode()).hexdigest()[:12]
    return root / "url" / url_id / name


def resolve(source: str, sha256: str | None = None, cache_dir: Path | None = None, progress: bool = True, *,
            config_key: str | None = None) -> Path:
    """A local file for `source`: a registry name (see REGISTRY), an http(s) URL, or a local path.

    Names and URLs are served from the cache (`$NTT_CACHE_DIR` or ~/.cache/ntt) after verification, or downloaded
    into it. `sha256` pins a digest (else the registry's, else trust on first use). Local paths are returned as they
    are, verified only when `sha256` is given. `config_key` names the config field to mention in error messages.
    Raises CheckpointError with instructions on any failure.
    """
    spec = REGISTRY.get(source) or next((s for s in REGISTRY.values() if s.url == source), None)
    if spec is not None or _is_url(source):
        url = spec.url if spec else source
        expected = sha256 or (spec.sha256 if spec else None)
        min_bytes = spec.min_bytes if spec else 1
        target = cache_path(source, cache_dir)
        if target.is_file():
            return _verify_cached(target, url, expected, min_bytes, config_key)
        return _download(url, target, expected, min_bytes, progress, config_key)

    path = Path(source).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(REGISTRY))
        raise CheckpointError(f"checkpoint {source!r} is not a file, a URL, or a known model name ({names})"
                              + (f"; check `{config_key}` in the engine config" if config_key else ""))
    if sha256 is not None:
        digest = sha256_file(path)
        if digest != sha256.lower():
            raise CheckpointError(f"checkpoint {path} has sha256 {digest}, but {sha256} was pinned"
                                  + (f" (`{config_key}`)" if config_key else ""))
    return path
