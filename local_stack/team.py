"""A team labelling one project at once through Label Studio's label stream (the API its editor uses): the team test
(tests/e2e/test_team_e2e.py) and the team benchmark (benchmarks/bench_team_labelling.py).

Each annotator is a Label Studio user of its own (signed up through the organization's invite link) with a thread
of its own: it asks the label stream for its next task, submits the ground truth naming the prediction it was
served as `parent_prediction`, and asks again, until it has submitted `tasks_each` tasks or the stream has nothing
left for it. Every serve is recorded with the backend's memory revision just before the request and just after the
answer, so that how current the served prediction was can be judged against the memory of that moment.
"""
from __future__ import annotations

import re
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .ls_client import LabelStudioAPI, create_user

REVISION = re.compile(r"\.r(\d+)(?:-|$)")


@dataclass(frozen=True)
class Serve:
    """One task the label stream served to one annotator."""

    annotator: int
    task: int
    seconds: float  # GET /api/projects/<id>/next: what the editor waits for (Label Studio's /setup + /predict)
    revision_before: int  # the memory's revision when the annotator asked
    revision_after: int  # and when the answer arrived (other annotators' submits may land meanwhile)
    version: str | None  # model_version of this backend's prediction served with the task; None: none served

    @property
    def served_revision(self) -> int | None:
        match = REVISION.search(self.version or "")
        return int(match.group(1)) if match else None

    @property
    def behind(self) -> int | None:
        """Revisions the served prediction lags the memory at the time of asking (0: current; None: none)."""
        served = self.served_revision
        return None if served is None else max(0, self.revision_before - served)


def join_team(inviter: LabelStudioAPI, n: int, name: str, password: str = "annotator-pass-7") -> list[LabelStudioAPI]:
    """`n` new users of the inviter's organization (emails `<name>-<i>@example.com`), each with its own API client."""
    return [LabelStudioAPI(inviter.base_url, create_user(inviter, f"{name}-{i}@example.com", password))
            for i in range(n)]


def label_as_team(annotators: list[LabelStudioAPI], project: int, tasks_each: int,
                  result_for: Callable[[dict], list[dict]], revision: Callable[[], int], own_prefix: str,
                  think_s: float = 0.0) -> list[Serve]:
    """All annotators at once; returns every serve in the order the answers arrived. `own_prefix` tells this
    backend's predictions (its engine id + "."); `think_s` is how long an annotator looks at a task before
    submitting. An error in any annotator's thread is raised here once all have stopped."""
    serves: list[Serve] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(annotators))

    def annotate(index: int, api: LabelStudioAPI) -> None:
        try:
            start.wait(60)
            for _ in range(tasks_each):
                before = revision()
                asked = time.perf_counter()
                task = api.next_task(project)
                seconds = time.perf_counter() - asked
                if task is None:
                    return
                own = [p for p in task.get("predictions") or [] if str(p.get("model_version", "")).startswith(own_prefix)]
                serve = Serve(index, task["id"], seconds, before, revision(), own[-1]["model_version"] if own else None)
                with lock:
                    serves.append(serve)
                time.sleep(think_s)
                result = result_for(task)
                # an image without objects is submitted empty (a negative image), as an annotator would
                api.create_annotation(task["id"], result, lead_time=think_s + seconds,
                                      **({"parent_prediction": own[-1]["id"]} if own else {}))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(i, api), daemon=True) for i, api in enumerate(annotators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return serves


def summarise(serves: list[Serve]) -> dict:
    """The figures of a run: serve time p50 / p95 (s), and how current the served predictions were."""
    seconds = sorted(s.seconds for s in serves)
    behind = [s.behind for s in serves if s.behind is not None]

    def quantile(q: float) -> float:
        return round(seconds[min(len(seconds) - 1, int(q * len(seconds)))], 3) if seconds else float("nan")

    return {"serves": len(serves), "p50_s": round(statistics.median(seconds), 3) if seconds else float("nan"),
            "p95_s": quantile(0.95), "with_prediction": len(behind),
            "current": sum(1 for b in behind if b == 0) / len(behind) if behind else 0.0,
            "max_behind": max(behind, default=0)}
