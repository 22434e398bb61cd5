"""An interrupted `ntt predict` resumes from its progress file and ends with the same file as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cli_helpers import ROOT, TEST_IMAGES, cli


def test_killed_predict_resumes_to_identical_results(chain, tmp_path, capsys):
    output = tmp_path / "results.json"
    progress = tmp_path / "results.json.progress.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "ntt_cli", "-q", "predict", str(chain.memory), str(chain.test),
                                "-o", str(output)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if progress.exists() and len(progress.read_text().splitlines()) >= 1 + 4:
                break
            time.sleep(0.02)
        assert process.poll() is None, "predict finished before it could be interrupted"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not output.exists()
    done_before = len(progress.read_text().splitlines()) - 1
    assert 4 <= done_before < TEST_IMAGES
    with open(progress, "a") as handle:  # a write torn by the kill
        handle.write('{"index": 99, "image_id": 3, "width": 1')

    assert cli("predict", chain.memory, chain.test, "-o", output) == 0
    err = capsys.readouterr().err
    assert f"resuming: {done_before} images of {TEST_IMAGES} already done" in err
    assert "incomplete (interrupted write)" in err
    assert output.read_bytes() == chain.results.read_bytes()
    assert not progress.exists()


def test_progress_of_another_run_is_refused(chain, tmp_path, capsys):
    output = tmp_path / "results.json"
    progress = tmp_path / "results.json.progress.jsonl"
    progress.write_text(json.dumps({"ntt_progress": 1, "fingerprint": "something else"}) + "\n"
                        + json.dumps({"index": 0, "image_id": 1, "width": 160, "height": 120, "results": []}) + "\n")
    assert cli("predict", chain.memory, chain.test, "-o", output, "--score-thr", "0.5") == 2
    err = capsys.readouterr().err
    assert "belongs to a different run" in err and "--restart" in err
    assert not output.exists()


@pytest.mark.parametrize("threshold", ["0.95"])
def test_restart_and_score_threshold(chain, tmp_path, threshold):
    output = tmp_path / "results.json"
    (tmp_path / "results.json.progress.jsonl").write_text('{"ntt_progress": 1, "fingerprint": "x"}\n')
    assert cli("predict", chain.memory, chain.test, "-o", output, "--score-thr", threshold, "--restart") == 0
    full = json.loads(chain.results.read_text())
    kept = json.loads(output.read_text())
    assert kept == [r for r in full if r["score"] > float(threshold)]
