"""What the `ntt` commands say: the user-error type (one clear message, no traceback), logging on the "ntt" and
"ntt_engine" loggers, progress bars (off with --quiet), and the small wording helpers."""
from __future__ import annotations

import logging
import sys
from typing import Any, Iterable, Sequence

log = logging.getLogger("ntt")


class CliError(Exception):
    """A problem with the user's input: printed as one clear message, exit status `code`, never a traceback."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def setup_logging(verbose: int, quiet: bool):
    """Our own stderr handler on the "ntt" and "ntt_engine" loggers (the root logger is left alone). Returns a
    function that puts the loggers back as they were (main() calls it, so in-process use leaves no trace)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ntt: %(message)s" if verbose == 0 else
                                           "%(asctime)s %(name)s %(levelname)s: %(message)s"))
    # the engine logs every reference at INFO; that is noise under a progress bar
    levels = {"ntt": logging.WARNING if quiet else logging.DEBUG if verbose > 0 else logging.INFO,
              "ntt_engine": logging.DEBUG if verbose > 1 else logging.WARNING}
    saved = []
    for name, level in levels.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False

    def restore() -> None:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate

    return restore


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "img",
             initial: int = 0):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, disable=log.level > logging.INFO,
                dynamic_ncols=True, mininterval=0.5, leave=True)


def plural(count: int, word: str) -> str:
    if count == 1:
        return f"{count} {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}es" if word.endswith(("s", "x", "ch")) else f"{count} {word}s"


def examples(items: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(x) for x in list(items)[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def command_parser(subparsers, name: str, summary: str, doc: str | None):
    """One `ntt` command's parser: `summary` in `ntt --help`, the module's docstring (`doc`) as its --help text."""
    import argparse

    return subparsers.add_parser(name, help=summary, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)

