"""Step configuration: one dataclass per step, one YAML file per profile, resolved in one place.

Every step has ONE frozen dataclass (its fields carry a default and a one-line ``help``; validation lives in
``__post_init__``). A profile (smoke | tiny | flux) is the file ``configs/<profile>.yaml``: one section per step
(``rl:``, ``judge:``, ``datasets:``, ...; ``SECTIONS`` below names each section's dataclass), listing what that
profile sets. A step's configuration is resolved by ``resolve`` in layers, each overriding the one before:

    1. the dataclass defaults
    2. the profile's artifact paths (steps/paths.py; ``<Config>.path_defaults``)
    3. configs/<profile>.yaml, the step's section
    4. a user's YAML file (``--config FILE [--key a.b]``)
    5. overrides: ``--set field=value`` on the command line, the Dagster run config, a bench script's arguments

The CLI (``python -m steps.<stage>.<step> --profile smoke --set steps=3``), the Dagster assets (``<Config>.for_profile``
with the run config's fields as overrides) and the bench scripts all go through ``resolve``, so the same profile
and overrides give the same configuration everywhere (tests/steps/test_config.py). DVC reads the ``datasets``
section of the same files (dvc.yaml ``params``).

Merging and type checks use OmegaConf structured configs (already a dependency through DVC's Hydra, and
torchtune's choice for the same job): an unknown key or a wrong type is a ``ConfigError`` naming the file, the
line and the field. ``--help`` lists every field with its resolved value and the layer it came from;
``python -m steps.config --profile tiny rl`` prints the same for any section.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from steps.paths import DEFAULT_PROFILE, PROFILES, ArtifactPaths

T = TypeVar("T")

CONFIG_DIR_ENV = "ONEREWARD_CONFIG_DIR"  # another folder of <profile>.yaml files (default: the repo's configs/)

# Section of configs/<profile>.yaml -> the dataclass it configures.
SECTIONS = {
    "datasets": "steps.data.datasets:DatasetConfig",
    "agreement_set": "steps.data.agreement_set:AgreementSetConfig",
    "base": "steps.foundations.base_pretrain:BaseConfig",
    "judge_pretrain": "steps.foundations.judge_pretrain:JudgePretrainConfig",
    "candidates": "steps.judge.candidates:CandidatesConfig",
    "annotate": "steps.judge.annotate:AnnotateConfig",
    "judge": "steps.judge.train:JudgeConfig",
    "agreement": "steps.judge.agreement:AgreementConfig",
    "rl": "steps.rl.config:RLConfig",
    "competitors": "steps.evaluation.competitors:CompetitorsConfig",
    "benchmark": "steps.evaluation.benchmark:BenchmarkConfig",
    "foundations": "steps.foundations.job:FoundationsConfig",
    # the foundation job's models: layered over the `base` / `judge_pretrain` sections
    "foundation_base": "steps.foundations.base_pretrain:BaseConfig",
    "foundation_judge": "steps.foundations.judge_pretrain:JudgePretrainConfig",
    "foundation_judge2": "steps.foundations.judge_pretrain:JudgePretrainConfig",
}


def field(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a default and a one-line description."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


def config_dir() -> Path:
    """The folder of profile files: $ONEREWARD_CONFIG_DIR, else the repository's configs/."""
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs"


def profile_file(profile: str) -> Path:
    return config_dir() / f"{profile}.yaml"


def profiles() -> tuple[str, ...]:
    """The profiles that have a file."""
    return tuple(p for p in PROFILES if profile_file(p).is_file())


def section_class(section: str) -> type:
    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r}; known: {sorted(SECTIONS)}")
    module, name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------------- layers


@dataclass
class Layer:
    """One source of values: a file (with the dotted section the values sit under and each key's line) or a
    name ('--set', 'overrides', ...)."""

    source: str
    values: dict[str, Any]
    lines: dict[str, int] = dataclasses.field(default_factory=dict)
    section: str = ""

    def where(self, key: str | None = None) -> str:
        """``file:line (section.key)`` where the line is known, else ``source (key)``."""
        line = self.lines.get(key) if key else None
        name = ".".join(p for p in (self.section, key) if p)
        return f"{self.source}{':' + str(line) if line else ''}{f' ({name})' if name else ''}"


def _key_lines(path: Path, text: str, prefix: tuple[str, ...]) -> dict[str, int]:
    """1-based line of each key of the mapping at ``prefix`` (yaml node marks), for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    for part in prefix:
        if not isinstance(node, yaml.MappingNode):
            return {}
        node = next((v for k, v in node.value if k.value == part), None)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def file_layer(path: str | os.PathLike, key: str | None = None, required: bool = True) -> Layer:
    """The mapping at dotted ``key`` of a YAML file (the whole file without a key)."""
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    parts = tuple(key.split(".")) if key else ()
    for part in parts:
        if not isinstance(data, dict) or part not in data:
            if not required:
                return Layer(str(path), {}, section=key or "")
            raise ConfigError(f"{path}: key {key!r} not found (missing {part!r})")
        data = data[part]
    data = {} if data is None and not required else data
    if not isinstance(data, dict):
        line = _key_lines(path, text, parts[:-1]).get(parts[-1]) if parts else None
        raise ConfigError(f"{path}{':' + str(line) if line else ''}: {key or 'top level'} must be a mapping, "
                          f"got {type(data).__name__}")
    return Layer(str(path), data, _key_lines(path, text, parts), key or "")


def profile_layer(profile: str, section: str) -> Layer:
    """Section ``section`` of configs/<profile>.yaml (empty when the profile does not set it)."""
    path = profile_file(profile)
    if not path.is_file():
        raise ConfigError(f"unknown profile {profile!r}: no {path} (profiles: {', '.join(profiles())})")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    lines = _key_lines(path, text, ())
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}:{lines.get(unknown[0], '?')}: unknown section {unknown[0]!r}; "
                          f"known: {sorted(SECTIONS)}")
    layer = file_layer(path, section, required=False)
    layer.source = str(_short(path))
    return layer


def _short(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def dvc_params(repo: str | os.PathLike, profile: str) -> dict[str, Any]:
    """The ``datasets`` section DVC's stages read in the DVC repository ``repo`` (dvc.yaml: world@<profile>)."""
    return file_layer(Path(repo) / "configs" / f"{profile}.yaml", "datasets").values


# ---------------------------------------------------------------- resolution


class Profiled:
    """Mixin of the step configs: ``SECTION`` names the config's section of configs/<profile>.yaml and
    ``path_defaults`` the artifact paths it takes from steps/paths.py."""

    SECTION = ""

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return {}

    @classmethod
    def for_profile(cls: type[T], profile: str, root: str | os.PathLike = ".", **overrides: Any) -> T:
        """The profile's configuration with paths under ``root``; ``overrides`` win (all layers: ``resolve``)."""
        return resolve(cls, profile, root, overrides)


def profile_layers(cls: type, profile: str, root: str | os.PathLike = ".", sections: tuple[str, ...] | None = None,
                   **context: Any) -> list[Layer]:
    """Layers 2-3: the profile's paths under ``root``, then its file's section(s) for ``cls``."""
    layers = []
    values = dict(cls.path_defaults(ArtifactPaths(Path(root), profile), **context))
    if any(f.name == "profile" for f in dataclasses.fields(cls)):
        values["profile"] = profile
    layers.append(Layer(f"steps/paths.py (profile {profile}, root {root})", values))
    for section in sections or (cls.SECTION,):
        if section:
            layers.append(profile_layer(profile, section))
    return layers


def resolve(cls: type[T], profile: str | None, root: str | os.PathLike = ".", overrides: dict | None = None, *,
            layers: list[Layer] | None = None, sections: tuple[str, ...] | None = None,
            source: str = "overrides", **context: Any) -> T:
    """``cls`` resolved from its layers (module docstring); ``context`` goes to ``path_defaults``."""
    return resolve_with_origins(cls, profile, root, overrides, layers=layers, sections=sections, source=source,
                                **context)[0]


def resolve_with_origins(cls: type[T], profile: str | None, root: str | os.PathLike = ".",
                         overrides: dict | None = None, *, layers: list[Layer] | None = None,
                         sections: tuple[str, ...] | None = None, source: str = "overrides",
                         **context: Any) -> tuple[T, dict[str, str]]:
    """The resolved config and, for each field, the layer its value came from."""
    stack = profile_layers(cls, profile, root, sections, **context) if profile else []
    stack += list(layers or [])
    if overrides:
        stack.append(Layer(source, dict(overrides)))
    return merge_layers(cls, stack)


def merge_layers(cls: type[T], layers: list[Layer]) -> tuple[T, dict[str, str]]:
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    merged = OmegaConf.structured(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    origins = {name: "default" for name in names}
    for layer in layers:
        values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in layer.values.items()}
        try:
            merged = OmegaConf.merge(merged, values)
        except ConfigKeyError as e:
            key = str(e.full_key).split(".")[0]
            hint = _did_you_mean(key, names) or f"; known: {', '.join(sorted(names))}"
            raise ConfigError(f"{layer.where(key)}: unknown field {key!r} for {cls.__name__}{hint}") from None
        except OmegaConfBaseException as e:
            key = str(getattr(e, "full_key", "") or "").split(".")[0]
            kind = _type_name(cls, key)
            raise ConfigError(f"{layer.where(key)}: field {key!r} of {cls.__name__} expects {kind}, got "
                              f"{layer.values.get(key)!r}") from None
        for key in layer.values:
            origins[key] = layer.where(key) if layer.lines else layer.source
    try:
        cfg = OmegaConf.to_object(merged)
    except (TypeError, ValueError) as e:
        where = ", ".join(dict.fromkeys(layer.source for layer in layers if layer.values)) or "defaults only"
        raise ConfigError(f"{cls.__name__}: {e} (values from: {where})") from e
    return cfg, origins


def _did_you_mean(key: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(cls: type, key: str) -> str:
    f = next((f for f in dataclasses.fields(cls) if f.name == key), None)
    if f is None:
        return "a known field"
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """``cls`` from one mapping (unknown fields and wrong types named with ``source``). When the mapping names a
    ``profile`` and ``cls`` is a profile config, the profile's layers come first (``resolve``)."""
    profile = values.get("profile") if issubclass(cls, Profiled) else None
    return resolve(cls, profile, overrides=values, source=source)


# ---------------------------------------------------------------- the step CLI


def _cli_layers(cls: type, args: argparse.Namespace, sets: list[str], error) -> tuple[str | None, list[Layer]]:
    layers = [file_layer(args.config, args.key)] if args.config else []
    values: dict[str, Any] = {}
    for item in sets:
        if "=" not in item:
            error(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        values[k] = yaml.safe_load(v)
    profile = getattr(args, "profile", None) or values.pop("profile", None)
    if profile is None:
        profile = next((layer.values["profile"] for layer in layers if "profile" in layer.values), None)
        for layer in layers:
            layer.values = {k: v for k, v in layer.values.items() if k != "profile"}
    if profile is None and not args.config:  # nothing named one: the default profile, as `make` has it
        profile = os.environ.get("ONEREWARD_PROFILE") or DEFAULT_PROFILE
    if values:
        layers.append(Layer("--set", values))
    return (profile if issubclass(cls, Profiled) else None), layers


def parse_cli(cls: type[T], description: str, argv: list[str] | None = None, extra=None) -> tuple[T, argparse.Namespace]:
    """Standard step CLI: ``[--profile NAME] [--config FILE [--key a.b]] [--set field=value ...]``.

    ``--help`` lists every field with its value after these options and where that value came from."""
    def build(epilog: str = "") -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--config", help="YAML file with the step's fields (over the profile's)")
        parser.add_argument("--key", help="dotted key of the section inside --config (e.g. datasets)")
        parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override one field")
        if issubclass(cls, Profiled):
            parser.add_argument("--profile", help=f"the profile whose configs/<profile>.yaml section "
                                                  f"{cls.SECTION!r} is used ({', '.join(profiles())}); "
                                                  "--config and --set override it")
        if extra:
            extra(parser)
        return parser

    pre, _ = build().parse_known_args([a for a in (argv if argv is not None else __import__("sys").argv[1:])
                                       if a not in ("-h", "--help")])
    parser = build()
    profile, layers = _cli_layers(cls, pre, pre.set, parser.error)
    try:
        cfg, origins = resolve_with_origins(cls, profile, layers=layers)
    except ConfigError as e:
        cfg, origins = None, {}
        problem = str(e)
    parser = build(_fields_help(cls, cfg, origins, profile))
    args = parser.parse_args(argv)
    if cfg is None:
        if argv is None:  # a person at the command line: the problem in one line, no traceback
            parser.exit(2, f"{parser.prog}: error: {problem}\n")
        raise ConfigError(problem)
    return cfg, args


def _fields_help(cls: type, cfg: Any, origins: dict[str, str], profile: str | None) -> str:
    head = f"{cls.__name__} fields (value after the options above{f', profile {profile}' if profile else ''}; " \
           "its source in brackets):"
    doc = inspect.getdoc(cls) if "__doc__" in vars(cls) else None
    if doc and doc.startswith(f"{cls.__name__}("):  # the signature dataclasses writes when there is no docstring
        doc = None
    rows = [textwrap.indent(doc, "  ") + "\n"] if doc else []
    for f in fields_in_reading_order(cls):
        value = getattr(cfg, f.name) if cfg is not None else f.default
        rows.append(f"  {f.name} = {value!r}  [{origins.get(f.name, 'default')}]\n      {f.metadata.get('help', '')}")
    return head + "\n" + "\n".join(rows)


def fields_in_reading_order(cls: type) -> list[dataclasses.Field]:
    """The class's own fields first, then each field group's (steps/fields.py) in the order the class lists them
    (a dataclass itself puts the bases' fields first, last group first)."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    order = [n for n in vars(cls).get("__annotations__", {}) if n in by_name]
    for base in cls.__mro__[1:]:
        order += [n for n in vars(base).get("__annotations__", {}) if n in by_name and n not in order]
    return [by_name[n] for n in order]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print a profile's resolved configuration of one step, "
                                                 "each field with its source.")
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--profile", default=os.environ.get("ONEREWARD_PROFILE", DEFAULT_PROFILE))
    parser.add_argument("--root", default=".")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    cls = section_class(args.section)
    sets = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    sections = {"foundation_base": ("base", "foundation_base"),
                "foundation_judge": ("judge_pretrain", "foundation_judge"),
                "foundation_judge2": ("judge_pretrain", "foundation_judge", "foundation_judge2")}.get(args.section)
    cfg, origins = resolve_with_origins(cls, args.profile, args.root, sets, sections=sections or (args.section,),
                                        source="--set")
    print(f"# {cls.__module__}.{cls.__name__}, profile {args.profile}")
    for f in dataclasses.fields(cls):
        print(f"{f.name}: {getattr(cfg, f.name)!r}  # {origins[f.name]}")


if __name__ == "__main__":
    main()
