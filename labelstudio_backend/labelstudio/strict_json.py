"""JSON as Label Studio sends it, read at a cost linear and small in its size, with what a JSON parser lets through
refused or neutralised at the boundary:

- the text must be UTF-8 (RFC 8259 §8.1): `json.loads` would also decode UTF-16 and UTF-32;
- nesting is bounded: the parser itself stops at the interpreter's recursion limit (RecursionError, answered as a
  JsonError), and the parsed value is measured without recursion, so that a structure just under that limit never
  reaches code that walks it recursively. Nothing is scanned with a regex: the parser's own cost is linear (a 30 MB
  string, escaped or not, costs about its size);
- non-finite numbers (`NaN`, `Infinity`, `1e999`) become null: one such score must never reach the memory or the
  calibration of a project.
"""
from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # Label Studio's deepest payloads (tasks → annotations → result → value → points) nest < 10


class JsonError(ValueError):
    """Not JSON, not UTF-8, or nested deeper than allowed; the message says which."""


def nesting_depth(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value (a scalar: 0), walked with an explicit stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonError(f"the JSON text must be UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=lambda _: None, parse_float=_finite_or_none)
    except RecursionError:
        raise JsonError(f"JSON nested too deeply (at most {max_depth} levels are accepted)") from None
    except ValueError as exc:
        raise JsonError(f"not valid JSON: {exc}") from None
    depth = nesting_depth(value)
    if depth > max_depth:
        raise JsonError(f"JSON nested {depth} levels deep; at most {max_depth} are accepted")
    return value
