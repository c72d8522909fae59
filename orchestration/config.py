"""Dagster run config generated from the steps' config dataclasses: one definition, two front doors.

Every field of a step's dataclass becomes an optional Dagster config field with the field's help text and the
values the profile files set as its description. Unset fields (None) fall back to the profile's value
(configs/<profile>.yaml, resolved by steps.config), so the Launchpad shows exactly the knobs
`python -m steps.<stage>.<step> --profile P --set field=value` has.
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


def _profile_values(dc: type) -> dict[str, dict[str, Any]]:
    """field -> {profile: value} for the fields configs/<profile>.yaml sets in the dataclass's section."""
    from steps.config import profile_layer, profiles

    out: dict[str, dict[str, Any]] = {}
    for profile in profiles():
        for key, value in profile_layer(profile, getattr(dc, "SECTION", "")).values.items():
            out.setdefault(key, {})[profile] = value
    return out


def config_from_dataclass(dc: type, name: str, exclude: tuple[str, ...] = ()) -> type[dg.Config]:
    hints = typing.get_type_hints(dc)
    per_profile = _profile_values(dc) if getattr(dc, "SECTION", "") else {}
    fields = {}
    for f in dataclasses.fields(dc):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        set_by = ", ".join(f"{p}: {v!r}" for p, v in per_profile.get(f.name, {}).items())
        desc = (f"{f.metadata.get('help', '')} (default {default!r}"
                f"{f'; configs/<profile>.yaml sets {set_by}' if set_by else ''}; empty = the profile's value)")
        fields[f.name] = (_dagster_type(hints[f.name]) | None, pydantic.Field(default=None, description=desc))
    return pydantic.create_model(name, __base__=dg.Config, __doc__=f"Overrides for {dc.__name__}.", **fields)


def overrides(config: dg.Config | None) -> dict[str, Any]:
    """The fields the user set (None = keep the step's default for the profile)."""
    if config is None:
        return {}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model_dump().items() if v is not None}
