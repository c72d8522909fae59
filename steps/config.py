"""Config dataclasses shared by the `python -m steps.<name>` CLIs and the Dagster assets.

Each step has ONE dataclass. Every field carries a default and a one-line ``help`` in its metadata;
validation lives in ``__post_init__``. The CLI reads a YAML file (optionally one dotted key inside it,
e.g. ``datasets.tiny`` in params.yaml) and applies ``--set field=value`` overrides; the Dagster
assets build the same dataclass from their run config (orchestration/config.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def field(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a default and a one-line description."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


def load_yaml_section(path: str | Path, key: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if key:
        for part in key.split("."):
            if not isinstance(data, dict) or part not in data:
                raise ConfigError(f"{path}: key {key!r} not found (missing {part!r})")
            data = data[part]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {key or 'top level'} must be a mapping, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from a mapping, rejecting unknown fields with the file and field named. When the mapping
    names a ``profile`` and ``cls`` has ``for_profile``, the profile's values are the defaults (the same
    resolution the Dagster assets and bench scripts use) and the mapping's other fields override them."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(names[name], value, source)
    try:
        if "profile" in kwargs and hasattr(cls, "for_profile"):
            profile = kwargs.pop("profile")
            return cls.for_profile(profile, **kwargs)
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {cls.__name__}: {e}") from e


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind in ("int",) and isinstance(value, str):
            return int(value)
        if kind in ("float",) and isinstance(value, (str, int)):
            return float(value)
        if kind in ("bool",) and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind.startswith("tuple") and isinstance(value, list):
            return tuple(value)
    except ValueError as e:
        raise ConfigError(f"{source}: field {f.name!r} expects {kind}, got {value!r}") from e
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_cli(cls: type[T], description: str, argv: list[str] | None = None, extra=None) -> tuple[T, argparse.Namespace]:
    """Standard step CLI: ``--config FILE [--key a.b] [--set field=value ...]``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with the step's fields")
    parser.add_argument("--key", help="dotted key of the section inside --config (e.g. datasets.tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override one field")
    if any(f.name == "profile" for f in dataclasses.fields(cls)):
        parser.add_argument("--profile", help="start from this profile's values (smoke | tiny | flux; the same "
                                              "as --set profile=NAME); --config and --set override them")
    if extra:
        extra(parser)
    fields_help = "\n".join(f"  {f.name}: {f.metadata.get('help', '')} (default {f.default!r})"
                            for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING)
    parser.epilog = f"{cls.__name__} fields:\n{fields_help}"
    args = parser.parse_args(argv)
    values: dict[str, Any] = load_yaml_section(args.config, args.key) if args.config else {}
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        values[k] = yaml.safe_load(v)
    if getattr(args, "profile", None):
        values.setdefault("profile", args.profile)
    source = f"{args.config}{':' + args.key if args.key else ''}" if args.config else "command line"
    return from_dict(cls, values, source), args
