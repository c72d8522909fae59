"""Blocking Great Expectations checks on every dataset: nothing downstream runs on bad data."""


import dagster as dg

from orchestration.assets.datasets import BENCHMARK, PHOTOS, TRAIN, VALIDATION, manifest_path
from orchestration.resources import ProjectResource

CHECK_NAME = "great_expectations_suite"


def _gx_check(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    # the pool of the assets it reads (all dvc): one run never checks a dataset while the other run writes it
    @dg.asset_check(asset=key, name=CHECK_NAME, blocking=True, pool="dvc",
                    description="GX suite: unique ids, known tasks, files readable, image/mask sizes equal, "
                                "masks binary and non-empty, fill prompts present.")
    def _check(project: ProjectResource) -> dg.AssetCheckResult:
        from steps.data.validation import validate_manifest

        report = validate_manifest(manifest_path(project, key))
        return dg.AssetCheckResult(
            passed=report.success,
            metadata={
                "rows": report.n_rows,
                "expectations_evaluated": report.evaluated,
                "failures": dg.MetadataValue.json(report.failures),
                "reader_problems": dg.MetadataValue.json(report.reader_problems[:50]),
                "summary": dg.MetadataValue.md(f"```\n{report.summary()}\n```"),
            },
        )

    return _check


dataset_checks = [_gx_check(k) for k in (TRAIN, VALIDATION, BENCHMARK, PHOTOS)]
