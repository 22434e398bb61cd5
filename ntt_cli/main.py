"""`ntt` entry point: argparse subcommands, logging, and one place that turns input errors into clear messages."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

from ntt_cli import boxes_to_masks, evaluate, export_ls, memory_build, predict, replay, sample, viz
from ntt_cli.console import CliError, setup_logging

COMMANDS = (sample, memory_build, boxes_to_masks, predict, evaluate, viz, export_ls, replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntt", description="Training-free few-shot instance segmentation (No Time "
                                     "To Train) on COCO files and image folders.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv: engine too)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: argparse prints them and exits 2
    restore_logging = setup_logging(args.verbose, args.quiet)
    debug = args.debug or os.environ.get("NTT_DEBUG") == "1"
    name = args.command + (f" {args.memory_command}" if getattr(args, "memory_command", None) else "")
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        _error(name, str(exc))
        return exc.code
    except KeyboardInterrupt:
        _error(name, "interrupted")
        return 130
    except (MemoryError, OSError) as exc:
        if debug:
            traceback.print_exc()
        _error(name, f"{type(exc).__name__}: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if debug:
            traceback.print_exc()
        _error(name, f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback and report it)")
        return 1
    finally:
        restore_logging()


def _error(command: str, message: str) -> None:
    sys.stderr.write(f"ntt {command}: error: {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
