"""JSON bodies with a nesting bound. `json.loads` recurses once per level: "[[[[..." 100,000 deep raises
RecursionError (a 500), and a structure just under the interpreter's limit breaks whatever walks it later. The depth
is measured on the raw text first (strings blanked out, then a running sum of brackets), without recursion."""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_DEPTH = 64  # Label Studio's deepest payloads (tasks → annotations → result → value → points) nest < 10

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STEP = np.zeros(256, np.int8)  # byte → +1 for [ and {, -1 for ] and }
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


class JsonError(ValueError):
    """Not JSON, or nested deeper than allowed; the message says which."""


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text (strings ignored)."""
    if b"[" not in data and b"{" not in data:
        return 0
    text = _STRING.sub(b'""', data) if b'"' in data else data
    steps = _STEP[np.frombuffer(text, np.uint8)]
    brackets = steps[steps != 0]  # digits and commas are most of a brush RLE body
    return int(np.cumsum(brackets, dtype=np.int64).max(initial=0))


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JsonError(f"JSON nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(raw)
    except RecursionError:
        raise JsonError(f"JSON nested too deeply (at most {max_depth} levels are accepted)") from None
    except ValueError as exc:
        raise JsonError(f"not valid JSON: {exc}") from None
