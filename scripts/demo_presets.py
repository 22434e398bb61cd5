"""The demo's engine preset and the checkpoints it needs (scripts/run_demo.py): which preset `auto` means, whether
the `fast` files are cached, and, for a real preset, downloading what is missing or saying exactly what to fetch."""
from __future__ import annotations

import os
import re
from pathlib import Path


class DemoError(RuntimeError):
    """Printed without a traceback; the message says what to do."""


def say(message: str = "") -> None:
    print(message, flush=True)


def required_checkpoints(preset: str) -> list[tuple[str, str, Path]]:
    """(name, url, cache path) of each registry checkpoint the preset needs."""
    from ntt_engine import EngineConfig
    from ntt_engine.checkpoints import REGISTRY, cache_path

    config = EngineConfig.preset(preset)
    needed = []
    for name, override in ((config.encoder, config.encoder_checkpoint), (config.proposer, config.proposer_checkpoint)):
        source = override or name
        if source in REGISTRY:
            needed.append((source, REGISTRY[source].url, cache_path(source)))
    return needed


def checkpoints_present(preset: str) -> bool:
    return all(path.is_file() for _, _, path in required_checkpoints(preset))


def pick_preset(requested: str) -> str:
    """--preset, unless `auto`: then $NTT_PRESET, else `fast` when its checkpoints are cached, else `synthetic`."""
    if requested != "auto":
        return requested
    return os.environ.get("NTT_PRESET") or ("fast" if checkpoints_present("fast") else "synthetic")


def ensure_checkpoints(preset: str, offline: bool) -> None:
    """Download what is missing into $NTT_CACHE_DIR (or ~/.cache/ntt); when that fails, say what to fetch."""
    from ntt_engine.checkpoints import CheckpointError, cache_dir_default, resolve

    missing = [(n, u, p) for n, u, p in required_checkpoints(preset) if not p.is_file()]
    if not missing:
        return
    failures = []
    if not offline:
        for name, url, path in missing:
            say(f"downloading checkpoint {name} from {url} ...")
            try:
                resolve(name, progress=True)
            except CheckpointError as exc:
                failures.append((name, url, path, str(exc)))
    else:
        failures = [(n, u, p, "--offline") for n, u, p in missing]
    if failures:
        lines = [f"The '{preset}' preset needs {len(failures)} checkpoint file(s) that are not in "
                 f"{cache_dir_default()}" + (" (--offline):" if offline else " and could not be downloaded:"), ""]
        for name, url, path, reason in failures:
            cause = re.findall(r"\b([A-Z]\w*(?:Error|Exception))\b", reason)
            lines += [f"  {name}", f"    fetch: {url}", f"    put it at: {path}"]
            lines += [f"    (download failed: {cause[-1]})"] if cause else []
        lines += ["", "For example, on a machine with internet access:"]
        lines += [f"  curl -L --create-dirs -o {path} {url}" for _, url, path, _ in failures]
        lines += ["then copy the files to the paths above (the directory is $NTT_CACHE_DIR, default ~/.cache/ntt),",
                  "or run the demo without weights: --preset synthetic"]
        raise DemoError("\n".join(lines))
