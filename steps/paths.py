"""Where every artifact lives: the one place that builds dataset, model, report and checkpoint paths.

    python -m steps.paths judge_agreement                 # outputs/tiny/judge_agreement (ONEREWARD_PROFILE)
    python -m steps.paths --profile smoke policy static    # outputs/smoke/policy/static
    python -m steps.paths --root /repo --profile tiny agreement_md

``ArtifactPaths(root, profile)`` names each folder the pipeline reads or writes. The Dagster assets, the
step configs' per-profile defaults (``<Config>.for_profile``), the bench scripts and the tests ask it; no
other module builds an ``outputs/<profile>/...`` or ``data/<profile>/...`` path (tests/steps/test_paths.py
checks that). Layout (docs/DESIGN.md §2)::

    data/<profile>/{train,validation,benchmark,photos,user}/    conditions (manifest.jsonl + PNGs), DVC
    data/<profile>/{candidates,preferences}/                    candidate sets, preference pairs, DVC
    data/<profile>/agreement_test/{conditions,pairs}/           the fixed agreement test set (the gate's), DVC
    outputs/<profile>/datasets/<split>.png                      dataset previews
    outputs/<profile>/{base_model,judge_pretrained,judge}/      models
    outputs/<profile>/judge_agreement/                          agreement.{json,md} + chart (the RL gate)
    outputs/<profile>/policy/<variant>{,_checkpoints,_best,_report}/   RL: release, checkpoints, best, report
    outputs/<profile>/competitors/<split>/<system>/<id>.png     every system's outputs per benchmark split
    outputs/<profile>/benchmark_report/<split>/                 report.json, summary.md, charts, grids
    outputs/<profile>/registry_champion/                        the registry champion, downloaded
    foundations/<profile>/                                      shipped foundations (tiny)
    mlflow/{mlflow.db,artifacts/}                               the local MLflow store (all profiles)

The RL recipe is given an ``out_dir`` (``RLConfig.out_dir``), not a profile: `PolicyLayout` names the
folders of one variant under any ``out_dir``, and ``ArtifactPaths.policy_layout`` is that layout for the
profile's ``outputs/<profile>/policy``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("smoke", "tiny", "flux")
DEFAULT_PROFILE = "tiny"  # what `make run` and a step CLI given no profile use ($ONEREWARD_PROFILE overrides)
SPLITS = ("train", "validation", "benchmark", "photos", "user")
VARIANTS = ("static", "dynamic")


def mlflow_db(root: str | os.PathLike) -> Path:
    """The default local MLflow tracking store (shared by every profile)."""
    return Path(root) / "mlflow" / "mlflow.db"


def mlflow_artifacts(root: str | os.PathLike) -> Path:
    """Where the local store keeps run and model artifacts."""
    return Path(root) / "mlflow" / "artifacts"


@dataclass(frozen=True)
class PolicyLayout:
    """The folders of one RL variant (``reference``) under an RL ``out_dir``."""

    out_dir: Path
    variant: str

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    @property
    def model(self) -> Path:
        """The released pipeline (diffusers layout)."""
        return self.out_dir / self.variant

    @property
    def checkpoints(self) -> Path:
        """Rotating resumable checkpoints, one ``step_<n>`` folder each."""
        return self.out_dir / f"{self.variant}_checkpoints"

    @property
    def best(self) -> Path:
        """The best validation evaluation's weights, outside the rotation."""
        return self.out_dir / f"{self.variant}_best"

    @property
    def report(self) -> Path:
        """summary.json and the sample grids (``grids/step_<n>.png``)."""
        return self.out_dir / f"{self.variant}_report"


@dataclass(frozen=True)
class ArtifactPaths:
    """Every artifact path of one profile under one project root."""

    root: Path
    profile: str

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; expected one of {PROFILES}")

    # ------------------------------------------------------------------ roots
    @property
    def data_dir(self) -> Path:
        return self.root / "data" / self.profile

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs" / self.profile

    @property
    def foundations(self) -> Path:
        """The shipped foundations of this profile (provenance.json, base/, judge/)."""
        return self.root / "foundations" / self.profile

    @property
    def mlflow_db(self) -> Path:
        return mlflow_db(self.root)

    @property
    def mlflow_artifacts(self) -> Path:
        return mlflow_artifacts(self.root)

    # ------------------------------------------------------------------ datasets (DVC)
    def split(self, name: str) -> Path:
        """A conditions split: train | validation | benchmark | photos | user."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.data_dir / name

    @property
    def train(self) -> Path:
        return self.split("train")

    @property
    def validation(self) -> Path:
        return self.split("validation")

    @property
    def benchmark(self) -> Path:
        return self.split("benchmark")

    @property
    def photos(self) -> Path:
        return self.split("photos")

    @property
    def user(self) -> Path:
        return self.split("user")

    @property
    def candidates(self) -> Path:
        return self.data_dir / "candidates"

    @property
    def preferences(self) -> Path:
        return self.data_dir / "preferences"

    @property
    def preferences_dvc(self) -> Path:
        """DVC's record of the preference data (its md5 is the data version the sensor watches)."""
        return self.data_dir / "preferences.dvc"

    @property
    def agreement_test(self) -> Path:
        """The agreement test set: the gate's fixed, labelled pairs (steps.data.agreement_set; DVC stage
        agreement_test@<profile>), disjoint from every train, validation and benchmark condition."""
        return self.data_dir / "agreement_test"

    @property
    def agreement_test_conditions(self) -> Path:
        """Its conditions (manifest.jsonl + PNGs, the split format)."""
        return self.agreement_test / "conditions"

    @property
    def agreement_test_pairs(self) -> Path:
        """Its labelled pairs (pairs.jsonl + candidate images + candidates.jsonl, the preferences format)."""
        return self.agreement_test / "pairs"

    @property
    def agreement_test_summary(self) -> Path:
        """summary.json: pairs per task x dimension and the 95% half-width they give."""
        return self.agreement_test / "summary.json"

    def dataset_preview(self, split: str) -> Path:
        return self.outputs_dir / "datasets" / f"{self.split(split).name}.png"

    # ------------------------------------------------------------------ models
    @property
    def base_model(self) -> Path:
        return self.outputs_dir / "base_model"

    @property
    def judge_pretrained(self) -> Path:
        return self.outputs_dir / "judge_pretrained"

    @property
    def judge(self) -> Path:
        """The trained judge (Judge.save layout; Judge.load reads this folder itself)."""
        return self.outputs_dir / "judge"

    @property
    def judge_agreement(self) -> Path:
        return self.outputs_dir / "judge_agreement"

    @property
    def agreement_json(self) -> Path:
        return self.judge_agreement / "agreement.json"

    @property
    def agreement_md(self) -> Path:
        return self.judge_agreement / "agreement.md"

    # ------------------------------------------------------------------ RL
    @property
    def policy_root(self) -> Path:
        """``RLConfig.out_dir``: every variant's folders live here."""
        return self.outputs_dir / "policy"

    def policy_layout(self, variant: str) -> PolicyLayout:
        if variant not in VARIANTS:
            raise ValueError(f"unknown RL variant {variant!r}; expected one of {VARIANTS}")
        return PolicyLayout(self.policy_root, variant)

    def policy(self, variant: str) -> Path:
        return self.policy_layout(variant).model

    def policy_checkpoints(self, variant: str) -> Path:
        return self.policy_layout(variant).checkpoints

    def policy_best(self, variant: str) -> Path:
        return self.policy_layout(variant).best

    def policy_report(self, variant: str) -> Path:
        return self.policy_layout(variant).report

    # ------------------------------------------------------------------ evaluation
    def competitors(self, split: str = "benchmark") -> Path:
        return self.outputs_dir / "competitors" / self.split(split).name

    def benchmark_report(self, split: str = "benchmark") -> Path:
        return self.outputs_dir / "benchmark_report" / self.split(split).name

    def benchmark_report_json(self, split: str = "benchmark") -> Path:
        return self.benchmark_report(split) / "report.json"

    @property
    def registry_champion(self) -> Path:
        return self.outputs_dir / "registry_champion"

    def bench(self, name: str) -> Path:
        """Where a bench/ script writes ``name`` by default."""
        return self.outputs_dir / "bench" / name


#: The tiny profile relative to the working directory: the step configs' field defaults come from it, so
#: ``python -m steps.<stage>.<step>`` run from the repository root finds the tiny artifacts.
TINY = ArtifactPaths(Path("."), "tiny")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("ONEREWARD_ROOT", str(Path(__file__).resolve().parents[1])),
                        help="the project root (default: ONEREWARD_ROOT, else this checkout), as the pipeline uses")
    parser.add_argument("--profile", default=os.environ.get("ONEREWARD_PROFILE", DEFAULT_PROFILE), choices=PROFILES)
    parser.add_argument("name", help="a property or method of ArtifactPaths (e.g. judge, policy_report)")
    parser.add_argument("arg", nargs="?", help="its argument, for methods (a split or a variant)")
    args = parser.parse_args(argv)
    paths = ArtifactPaths(Path(args.root), args.profile)
    if args.name.startswith("_") or not hasattr(paths, args.name):
        parser.error(f"ArtifactPaths has no {args.name!r}")
    value = getattr(paths, args.name)
    print(value(args.arg) if callable(value) and args.arg else value() if callable(value) else value)


if __name__ == "__main__":
    main()
