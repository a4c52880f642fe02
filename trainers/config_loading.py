"""Reading and writing run configs: YAML plus ``key.sub=value`` overrides, checked strictly.

Every value is checked against its field's type and range when the config is built, and what
the run will read from disk (a task file) or parse (prices, price grids) is checked too, so
that a mistake is named before any model loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from trainers.config import ConfigError, RunConfig

# keys of earlier releases, and what replaced them
RENAMED = {
    "rest.seed": "rest.bc",
    "rest.seed.weights": "rest.bc.move_weights",
    "rest.seed_mix": "rest.replay",
    "sft.turn_start_weight": "sft.move_tag_weight",
}
REMOVED = {
    "rest.seed_mix_move_weight": "replayed dialogues' move tags are always out of the loss",
    "rest.seed_mix_fresh": "each copy of the kept episodes always gets its own replay draw",
    "rest.eval_start": "the starting policy is always evaluated",
    "rest.accumulate_kept": "unused",
    "rest.filter.above_group_mean": "unused",
    "rollout.price_draws_per_task": "unused",
    "sft.group_by_length": "measured to learn less per step",
    "assistant.prices_last": "unused",
    "assistant.multi_lines": "measured not to help",
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and minimally convert) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"'{key}' must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        _, value_tp = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    return _scalar(value, tp, key)


def _scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"'{key}' must be an integer, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"'{key}' must be a string, got {value!r}")
    return value


def _unknown_key(dotted: str, known: Sequence[str]) -> ConfigError:
    if dotted in RENAMED:
        return ConfigError(f"config key '{dotted}' is now '{RENAMED[dotted]}'")
    if dotted in REMOVED:
        return ConfigError(f"config key '{dotted}' was removed ({REMOVED[dotted]}): delete it")
    return ConfigError(f"unknown config key '{dotted}' (known here: {sorted(known)})")


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys by dotted name."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise _unknown_key(f"{prefix}.{key}" if prefix else str(key), names)
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def check_inputs(cfg: RunConfig) -> None:
    """What the run will read or parse, checked now: the task source's arguments and file, the
    training prices and the evaluation grids."""
    from clarify_env.costs import CostSpecError, grid_points, make_cost_sampler
    from clarify_env.sources import check_source_spec

    for key, spec in (("env.source", cfg.env.source), ("eval.source", cfg.eval.source)):
        try:
            if spec is not None:
                check_source_spec(spec)
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise ConfigError(f"'{key}': {e}") from None
    try:
        make_cost_sampler(cfg.env.costs)
    except CostSpecError as e:
        raise ConfigError(f"'env.costs': {e}") from None
    for i, spec in enumerate(cfg.eval.splits):
        try:
            grid_points(spec)
        except (CostSpecError, ValueError) as e:
            raise ConfigError(f"'eval.splits[{i}]': {e}") from None


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), cls: type = RunConfig, check: bool = True
) -> Any:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides, and check it
    (``check_inputs``, for a ``RunConfig``, unless ``check`` is False)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        cfg = from_dict(cls, apply_overrides(data, list(overrides)))
        if check and cls is RunConfig:
            check_inputs(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return cfg


def save_config(config: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def add_config_arguments(parser: Any) -> None:
    """The config arguments every ``clarify`` command takes the same way: ``CONFIG`` (a YAML file)
    then ``key.sub=value`` overrides; ``--config CONFIG`` is accepted as an alias."""
    parser.add_argument("config", nargs="?", default=None, help="run config YAML, e.g. configs/quickstart.yaml")
    parser.add_argument("--config", dest="config_option", default=None, help="the same as CONFIG (an alias)")
    parser.add_argument("overrides", nargs="*", default=[], help="config overrides key.sub=value")


def config_from_args(args: Any) -> RunConfig:
    """The config ``add_config_arguments``' arguments name, loaded and checked."""
    config, overrides = args.config, list(args.overrides)
    if args.config_option is not None:
        if config is not None:  # `--config X a.b=1`: argparse took the first override for CONFIG
            overrides.insert(0, config)
        config = args.config_option
    if config is None:
        raise ConfigError("no config given: pass a YAML file, e.g. configs/quickstart.yaml")
    if "=" in config and not Path(config).is_file():
        raise ConfigError(f"{config!r} looks like an override: the config file comes first (CONFIG key=value ...)")
    return load_config(config, overrides)
