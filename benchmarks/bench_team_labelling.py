"""A team labelling one project at once: how fast the label stream serves the next task, and how current its
prediction is, for 1, 4 and 8 annotators.

    .venv/bin/python benchmarks/bench_team_labelling.py [--annotators 1 4 8] [--tasks-each 5] [--out DIR]

A fresh Label Studio 1.23.2 (sqlite) and this backend under gunicorn with 2 worker processes (`synthetic` preset:
the shipped test backbones), on generated images. For each team size a new project: its first 3 images labelled
from the ground truth (the references), then that many users of their own (signed up through the invite link),
all at once, each taking tasks from the label stream through the API (GET /api/projects/<id>/next, what the editor
calls: Label Studio's /setup + /predict) and submitting the ground truth with the prediction it was served as
parent_prediction, without pausing: faster than the refresh's 2 s delay after a memory change. Prints, per team
size, the next-task serve time p50 / p95, the fraction of tasks served with a prediction of the memory's revision
at the time of asking, the most revisions a served prediction lagged, and how many tasks Label Studio served to two
annotators at once (sqlite: its task lock is not transactional there). Writes benchmarks/results/team_labelling.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

REFERENCES = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotators", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tasks-each", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import run_demo  # the demo's ground truth as Label Studio brush regions

    from labelstudio_backend.labelstudio.label_config import recommended_label_config
    from local_stack import BackendServer, LabelStudioAPI, LabelStudioServer, wait_until
    from local_stack.procutil import free_ls_port
    from local_stack.team import join_team, label_as_team, summarise
    from ntt_engine.synthetic import generate_dataset

    images = REFERENCES + max(args.annotators) * args.tasks_each + 4
    work = Path(tempfile.mkdtemp(prefix="ntt-team-"))
    files_root = work / "files"
    coco = json.loads(Path(generate_dataset(files_root / "team", images=images, classes=3, seed=5,
                                            size=(256, 192))).read_text())
    names = [c["name"] for c in coco["categories"]]
    by_file = {im["file_name"]: im["id"] for im in coco["images"]}

    def ground_truth(task: dict) -> list[dict]:
        return run_demo.brush_results(coco, by_file[task["data"]["image"].rsplit("/", 1)[-1]])

    ls = LabelStudioServer(data_dir=work / "ls", files_root=files_root, port=free_ls_port())
    print(f"starting Label Studio (fresh sqlite: 30-90 s) in {work}", flush=True)
    ls.start(timeout=180)
    backend = BackendServer(model_dir=work / "models", log_path=work / "backend.log", gunicorn_workers=2,
                            python=Path(sys.executable),
                            env_overrides={"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.pat,
                                           "LOCAL_FILES_DOCUMENT_ROOT": str(files_root), "NTT_PRESET": "synthetic"})
    rows = []
    try:
        backend.start(timeout=180)
        api = LabelStudioAPI(ls.url, ls.pat)
        for team_size in args.annotators:
            project = api.create_project(f"team of {team_size}", recommended_label_config(names))["id"]
            tasks = api.import_local_files(project, files_root / "team" / "images", expected=images)
            api.connect_ml_backend(project, backend.url, title=f"ntt team {team_size}")

            def gauge() -> dict:
                return next((p for p in backend.get("/metrics").json().get("projects", [])
                             if p["project"] == project), {})

            for task in tasks[:REFERENCES]:
                api.create_annotation(task["id"], ground_truth(task))
            wait_until(lambda: gauge().get("annotations") == REFERENCES, 120, what="the references")
            engine = gauge()["model_version"].rsplit(".r", 1)[0]
            team = join_team(api, team_size, f"bench-{project}")
            started = time.perf_counter()
            serves = label_as_team(team, project, args.tasks_each, ground_truth, revision=lambda: gauge()["revision"],
                                   own_prefix=engine + ".")
            seconds = time.perf_counter() - started
            twice = sum(1 for n in Counter(s.task for s in serves).values() if n > 1)
            row = {"annotators": team_size, **summarise(serves), "served_twice": twice,
                   "submits_per_s": round(len(serves) / seconds, 2)}
            rows.append(row)
            print(f"{team_size} annotator(s): {row}", flush=True)
    finally:
        backend.stop()
        ls.stop()
    print("\n| annotators | serves | next task p50 | p95 | served at the current revision | most behind | "
          "served to two at once | submits/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['annotators']} | {r['serves']} | {r['p50_s']:.2f} s | {r['p95_s']:.2f} s | "
              f"{100 * r['current']:.0f} % ({r['with_prediction']} with a prediction) | {r['max_behind']} | "
              f"{r['served_twice']} | {r['submits_per_s']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "team_labelling.json").write_text(json.dumps({"tasks_each": args.tasks_each, "rows": rows},
                                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
