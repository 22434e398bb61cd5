"""The engine options every model-running command shares (--preset, --config, --device) and building the engine
from them, with errors that say what to do."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ntt_cli.console import CliError
from ntt_cli.files import read_json


def add_engine_options(parser, default_preset: str | None = "paper") -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--preset", choices=("paper", "fast", "synthetic"), default=None,
                       help=f"model preset (default: {default_preset or 'the one the memory was built with'}; "
                            "'synthetic' = weight-free TEST backbones for the generated dataset)")
    group.add_argument("--config", type=Path, metavar="FILE.json",
                       help='engine config overrides, e.g. {"preset": "fast", "points_per_side": 24}')
    group.add_argument("--device", help="cpu, cuda, cuda:1 … (default: auto)")


def engine_config(args, fallback: dict[str, Any] | None = None, default_preset: str = "paper"):
    """--config file (its "preset" key) < --preset < --device; without either, `fallback` (a stored config dict)."""
    from ntt_engine import EngineConfig

    overrides: dict[str, Any] = {}
    preset = None
    if args.config is not None:
        data = read_json(args.config, "config file")
        if not isinstance(data, dict):
            raise CliError(f"config file {args.config} must hold a JSON object of engine settings")
        preset = data.pop("preset", data.pop("preset_name", None))
        overrides = data
    if args.preset:
        preset = args.preset
    if preset is None and not overrides and fallback:
        return _from_dict(fallback, args.device)
    known = {f.name for f in fields(EngineConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise CliError(f"config file {args.config}: unknown engine settings {unknown}; known ones: {sorted(known)}")
    if args.device:
        overrides["device"] = args.device
    try:
        return EngineConfig.preset(preset or default_preset, **overrides)
    except (TypeError, ValueError) as exc:
        raise CliError(f"bad engine config: {exc}") from None


def _from_dict(stored: dict[str, Any], device: str | None):
    from ntt_engine import EngineConfig

    known = {f.name for f in fields(EngineConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items() if k in known}
    if device:
        values["device"] = device
    return EngineConfig(**values)


def build_engine(config):
    from ntt_engine import Engine

    try:
        return Engine(config)
    except FileNotFoundError as exc:
        raise CliError(f"cannot load the {config.preset_name!r} models: {exc}", 1) from None
    except (RuntimeError, OSError, ValueError) as exc:
        raise CliError(f"cannot build the {config.preset_name!r} engine: {str(exc).rstrip('.')}. (--preset synthetic "
                       "runs the pipeline without any weights)", 1) from None
