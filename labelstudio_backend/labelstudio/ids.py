"""A Label Studio project id from any of the forms Label Studio sends it in."""
from __future__ import annotations

from typing import Any

MAX_PROJECT_ID = 2 ** 63 - 1  # Label Studio's ids are database integers; anything larger is not a project


def parse_project_id(value: Any) -> int:
    """Label Studio sends "4.1795614847" (<id>.<created_at>) in /setup and /predict, ints in tasks, and the
    project object in webhooks."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        raise ValueError(f"not a project id: {value!r}")
    if isinstance(value, int):
        project = value
    elif isinstance(value, str) and value.strip():
        head = value.strip().split(".", 1)[0]
        if not (head.isascii() and head.isdigit()):  # "١٢".isdigit() is True, and int() reads it as 12
            raise ValueError(f"not a project id: {value!r}")
        project = int(head)
    else:
        raise ValueError(f"not a project id: {value!r}")
    if project < 0 or project > MAX_PROJECT_ID:
        raise ValueError(f"not a project id: {value!r}")
    return project


def integer_id(value: Any) -> int | None:
    """`value` when it is an id Label Studio could have sent (an int, and not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
