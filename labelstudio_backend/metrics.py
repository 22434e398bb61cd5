"""Process-local counters for /metrics (JSON, or Prometheus text exposition). One instance per app.

Label values (class labels come from the label config, so from users) are escaped as the text exposition format
says: backslash, double quote and newline; a newline left as is would let a label forge whole metric lines."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: Counter[tuple[str, int]] = Counter()  # (route, status) → count
        self.counters: Counter[str] = Counter()  # predictions, regions, events_*, image_errors, ...
        self.seconds: Counter[str] = Counter()  # accumulated wall time per activity

    def request(self, route: str, status: int) -> None:
        with self._lock:
            self.requests[(route, status)] += 1

    def add(self, name: str, value: int = 1) -> None:
        with self._lock:
            self.counters[name] += value

    def time(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds

    def as_dict(self, gauges: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {"uptime_s": round(time.time() - self.started, 1),
                    "requests": [{"route": r, "status": s, "count": n} for (r, s), n in sorted(self.requests.items())],
                    "counters": dict(sorted(self.counters.items())),
                    "seconds": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
                    **gauges}

    def prometheus(self, gauges: dict[str, Any]) -> str:
        q = label_value
        lines = ["# TYPE ntt_requests_total counter"]
        with self._lock:
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'ntt_requests_total{{route="{q(route)}",status="{q(status)}"}} {n}')
            lines.append("# TYPE ntt_events_total counter")
            for name, n in sorted(self.counters.items()):
                lines.append(f'ntt_events_total{{name="{q(name)}"}} {n}')
            lines.append("# TYPE ntt_seconds_total counter")
            for name, s in sorted(self.seconds.items()):
                lines.append(f'ntt_seconds_total{{name="{q(name)}"}} {s:.3f}')
        lines.append("# TYPE ntt_queue_length gauge")
        lines.append(f"ntt_queue_length {_number(gauges.get('queue_length', 0))}")
        lines.append("# TYPE ntt_memory_revision gauge")
        lines.append("# TYPE ntt_references gauge")
        lines.append("# TYPE ntt_score_threshold gauge")
        for project in gauges.get("projects", []):
            pid = project["project"]
            if project["revision"] is None:  # the engine is not loaded yet, or the project is unreadable
                continue
            lines.append(f'ntt_memory_revision{{project="{q(pid)}"}} {_number(project["revision"])}')
            for label, count in project["references"].items():
                lines.append(f'ntt_references{{project="{q(pid)}",label="{q(label)}"}} {_number(count)}')
            for label, value in project.get("thresholds", {}).items():
                lines.append(f'ntt_score_threshold{{project="{q(pid)}",label="{q(label)}"}} {_number(value)}')
        return "\n".join(lines) + "\n"


def label_value(value: Any) -> str:
    """A Prometheus label value, escaped per the text exposition format."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    """A sample value: a number, never text that could end the line."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "NaN"
