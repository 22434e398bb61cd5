"""model_version strings: `<engine id>.r<memory revision>-<thresholds digest>`.

A prediction depends on the engine (its config and backbones' weights: the engine id, ntt_engine's `model_id`), on
the project's memory (its revision), on the per-class score thresholds its instances are filtered by (calibrated
from the project's state, or set by extra_params or NTT_SCORE_THRESHOLD) and on how many of the config's controls
each object fills (NTT_REGION_CONTROLS or extra_params). The version names all of them, so two
different answers never share a version, whichever of them changed: a threshold set at /setup, a calibration that
moved without a memory change, an NTT_SCORE_THRESHOLD changed across a restart.

Versions of the form `<engine id>.r<revision>` (before the thresholds were named) are still recognised as this
backend's own predictions, and so is `<engine id>.archived`, the version its superseded predictions are relabelled to.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Mapping

DIGEST_CHARS = 6
ARCHIVE_SUFFIX = "archived"


def thresholds_digest(default: float, per_class: Mapping[str, float], regions: str = "one") -> str:
    """Short stable digest of the thresholds a prediction is filtered by (rounded: float noise is not a change) and
    of how many controls each object fills."""
    key = {"default": round(float(default), 6), "classes": {str(k): round(float(v), 6) for k, v in per_class.items()},
           "regions": regions}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:DIGEST_CHARS]


def model_version(model_id: str, revision: int, default: float, per_class: Mapping[str, float],
                  regions: str = "one") -> str:
    return f"{model_id}.r{int(revision)}-{thresholds_digest(default, per_class, regions)}"


def archive_version(model_id: str) -> str:
    """The one version this engine's superseded predictions are relabelled to, so that Label Studio's version lists
    stay short (predict/archive.py)."""
    return f"{model_id}.{ARCHIVE_SUFFIX}"


def is_archive_version(model_version: str) -> bool:
    return model_version.endswith(f".{ARCHIVE_SUFFIX}")


def own_version_pattern(model_id: str) -> re.Pattern:
    """Versions this engine made, whatever the revision and thresholds (and the older form without a digest), and its
    archive version."""
    return re.compile(rf"^{re.escape(model_id)}\.(?:r\d+(?:-[0-9a-f]{{{DIGEST_CHARS}}})?|{ARCHIVE_SUFFIX})$")


def revision_of(version: str) -> int | None:
    """The memory revision a version names, or None for a version not of this form."""
    match = re.search(rf"\.r(\d+)(?:-[0-9a-f]{{{DIGEST_CHARS}}})?$", version)
    return int(match.group(1)) if match else None
