"""Process-local counters for /metrics (JSON, or Prometheus text exposition). One instance per app.

The Prometheus text is rendered by prometheus-client from one scrape's numbers (a registry per scrape: no global
state), which also escapes label values (class labels come from the label config, so from users) as the exposition
format says."""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# what annotators did with predicted regions, per class (ntt_engine/effort.py counts them, report/stats.py sums them)
from ntt_engine.effort import REGION_OUTCOMES


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

    def prometheus(self, gauges: dict[str, Any], samples: list[tuple[str, ...]] | None = None) -> str:
        """The scrape as Prometheus text. `samples`: each project's sample lines (`project_samples`), which callers
        cache per project version; rendered here from gauges["projects"] when not given."""
        if samples is None:
            samples = [project_samples(project) for project in gauges.get("projects", [])]
        parts = [_render(self._process_families(gauges))]
        for index, header in enumerate(_blocks(_render(_project_families([])))):  # HELP and TYPE of each family
            parts.append(header)
            parts.extend(lines[index] for lines in samples)
        return "".join(parts)

    def _process_families(self, gauges: dict[str, Any]) -> list[Metric]:
        requests = CounterMetricFamily("ntt_requests", "HTTP requests by route and status", labels=["route", "status"])
        events = CounterMetricFamily("ntt_events", "what the backend did, by name (docs/api.md)", labels=["name"])
        seconds = CounterMetricFamily("ntt_seconds", "wall time spent, by activity", labels=["name"])
        with self._lock:
            for (route, status), n in sorted(self.requests.items()):
                requests.add_metric([str(route), str(status)], n)
            for name, n in sorted(self.counters.items()):
                events.add_metric([name], n)
            for name, s in sorted(self.seconds.items()):
                seconds.add_metric([name], s)
        queue = GaugeMetricFamily("ntt_queue_length", "webhook events waiting for the worker",
                                  value=_number(gauges.get("queue_length", 0)))
        return [requests, events, seconds, queue]


class _Scrape:
    """A prometheus-client collector over the metric families of one scrape."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


def project_samples(project: dict[str, Any]) -> tuple[str, ...]:
    """One project's sample lines in each per-project family, formatted (and escaped) by prometheus-client: a scrape
    of 1,000 projects then joins cached text instead of formatting ~15,000 samples (80 ms)."""
    return tuple(block.split("\n", 2)[2] for block in _blocks(_render(_project_families([project]))))


def _render(families: list[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(families))
    return generate_latest(registry).decode()


def _blocks(text: str) -> list[str]:
    """The text of each family: its HELP line, its TYPE line, then its samples."""
    return ["# HELP " + block for block in text.split("# HELP ")[1:]]


def _project_families(projects: list[dict[str, Any]]) -> list[Metric]:
    revision = GaugeMetricFamily("ntt_memory_revision", "memory revision per project", labels=["project"])
    references = GaugeMetricFamily("ntt_references", "references per project and class", labels=["project", "label"])
    held_back = GaugeMetricFamily("ntt_references_held_back", "references beyond the memory length per class (kept, "
                                  "not used for matching)", labels=["project", "label"])
    thresholds = GaugeMetricFamily("ntt_score_threshold", "score threshold per project and class",
                                   labels=["project", "label"])
    outcomes = CounterMetricFamily("ntt_region_outcomes", "predicted regions by what annotators did with them, and "
                                   "objects they added, per project and class", labels=["project", "label", "outcome"])
    for project in projects:
        pid = str(project["project"])
        if project["revision"] is None:  # the engine is not loaded yet, or the project is unreadable
            continue
        revision.add_metric([pid], _number(project["revision"]))
        for label, count in project["references"].items():
            references.add_metric([pid, str(label)], _number(count))
        for label, count in project.get("references_held_back", {}).items():
            held_back.add_metric([pid, str(label)], _number(count))
        for label, value in project.get("thresholds", {}).items():
            thresholds.add_metric([pid, str(label)], _number(value))
        for label, row in project.get("region_outcomes", {}).items():
            for outcome in REGION_OUTCOMES:
                outcomes.add_metric([pid, str(label), outcome], _number(row.get(outcome, 0)))
    return [revision, references, held_back, thresholds, outcomes]


def _number(value: Any) -> float:
    """A sample value: a number, else NaN."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan
