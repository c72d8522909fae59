"""Dagster run config generated from the steps' config dataclasses: one definition, two front doors.

Every field of a step's dataclass becomes an optional Dagster config field with the field's help text as
its description. Unset fields (None) fall back to the step's per-profile defaults, so the Launchpad shows
exactly the knobs `python -m steps.<name> --set field=value` has.
"""

import dataclasses
import typing
from typing import Any

import dagster as dg
import pydantic


def _dagster_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return list[args[0] if args else Any]
    return tp


def config_from_dataclass(dc: type, name: str, exclude: tuple[str, ...] = ()) -> type[dg.Config]:
    hints = typing.get_type_hints(dc)
    fields = {}
    for f in dataclasses.fields(dc):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        desc = f"{f.metadata.get('help', '')} (step default: {default!r}; may differ per profile)"
        fields[f.name] = (_dagster_type(hints[f.name]) | None, pydantic.Field(default=None, description=desc))
    return pydantic.create_model(name, __base__=dg.Config, __doc__=f"Overrides for {dc.__name__}.", **fields)


def overrides(config: dg.Config) -> dict[str, Any]:
    """The fields the user set (None = keep the step's default for the profile)."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model_dump().items() if v is not None}
