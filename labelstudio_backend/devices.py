"""Which accelerator each gunicorn worker uses: NTT_DEVICES lists them (e.g. "cuda:0,cuda:1"), and every worker
process, as gunicorn forks it, takes the listed device fewest live workers hold (ties: the first listed), so that
WORKERS=n over n GPUs puts one worker on each and a worker gunicorn replaces takes the device its predecessor left.
Without NTT_DEVICES every worker uses NTT_DEVICE (or the engine config's device: "auto" is the first GPU).

The choice is made in gunicorn's master (pre_fork: it sees the live workers) and handed to the worker as NTT_DEVICE
(post_fork, before the app and its models load)."""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from typing import Sequence

log = logging.getLogger(__name__)

DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
ATTRIBUTE = "ntt_device"  # set on gunicorn's Worker objects


def parse_devices(text: str | None) -> tuple[str, ...]:
    """NTT_DEVICES: comma-separated device names; ValueError naming a bad one."""
    devices = tuple(d.strip() for d in (text or "").split(",") if d.strip())
    bad = [d for d in devices if not DEVICE.match(d)]
    if bad:
        raise ValueError(f"NTT_DEVICES: {bad} are not devices (cpu, mps, cuda or cuda:N, comma-separated)")
    return devices


def least_used(devices: Sequence[str], taken: Sequence[str]) -> str:
    """The listed device the fewest of `taken` (the live workers' devices) use; ties go to the first listed."""
    counts = Counter(taken)
    return min(devices, key=lambda d: (counts[d], devices.index(d)))


def pre_fork(server, worker) -> None:
    """gunicorn hook (master): choose the new worker's device among NTT_DEVICES."""
    devices = parse_devices(os.environ.get("NTT_DEVICES"))
    if devices:
        taken = [getattr(w, ATTRIBUTE) for w in server.WORKERS.values() if getattr(w, ATTRIBUTE, None)]
        setattr(worker, ATTRIBUTE, least_used(devices, taken))


def post_fork(server, worker) -> None:
    """gunicorn hook (the worker, before it loads the app): its device becomes its NTT_DEVICE."""
    device = getattr(worker, ATTRIBUTE, None)
    if device:
        os.environ["NTT_DEVICE"] = device
        server.log.info("worker %s: device %s (NTT_DEVICES=%s)", os.getpid(), device, os.environ.get("NTT_DEVICES"))
