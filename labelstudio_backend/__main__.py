"""Command line: `python -m labelstudio_backend [serve] [--host H] [--port P]` runs the development server
(threaded); `python -m labelstudio_backend prelabel --project ID` pre-labels a whole project through the API."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import Sequence

from labelstudio_backend.settings import Settings, SettingsError


def _serve(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelstudio_backend",
                                     description="ntt-label ML backend for Label Studio (development server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--log-level", default=None, help="overrides LOG_LEVEL")
    args = parser.parse_args(argv)
    settings = _settings(parser, log_level=args.log_level)
    from labelstudio_backend.web.app import create_app

    app = create_app(settings)
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0


def _prelabel(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelstudio_backend prelabel",
                                     description="pre-label every task of a project that has no prediction of the "
                                                 "current model_version (resumable)")
    parser.add_argument("--project", type=int, required=True, help="Label Studio project id")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="at most this many tasks in this run")
    parser.add_argument("--no-sync", action="store_true", help="do not sync the memory from Label Studio first")
    parser.add_argument("--order", choices=("id", "useful"), default="id",
                        help="id: Label Studio's sequential order; useful: the most useful tasks to label first "
                             "(never predicted, then the lowest prediction score = the memory's least certain)")
    parser.add_argument("--ray", action="store_true", help="predict on Ray actors")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per GPU, else 1)")
    parser.add_argument("--log-level", default=None)
    args = parser.parse_args(argv)
    settings = _settings(parser, log_level=args.log_level)
    from labelstudio_backend.predict.prelabel import prelabel
    from labelstudio_backend.web.app import configure_logging

    configure_logging(settings.log_level)
    stats = prelabel(settings, args.project, args.batch_size, args.ray, args.ray_address, args.actors, args.limit,
                     sync=not args.no_sync, order=args.order)
    print(json.dumps({k: v for k, v in asdict(stats).items() if k != "errors"} | {"errors": stats.errors[:20]},
                     indent=1))
    return 1 if stats.failed else 0


def _settings(parser: argparse.ArgumentParser, log_level: str | None) -> Settings:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.error(str(exc))
    return settings.replace(log_level=log_level.upper()) if log_level else settings


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "prelabel":
        return _prelabel(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    logging.captureWarnings(True)
    return _serve(argv)


if __name__ == "__main__":
    sys.exit(main())
