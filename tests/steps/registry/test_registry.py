"""Registry: the fill model as a models-from-code pyfunc, aliases, the promotion gate, the inference CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from steps.registry.register import (
    CHALLENGER,
    CHAMPION,
    FILL_MODEL_NAME,
    ModelNotFoundError,
    alias_version,
    client_for,
    download_pipeline,
    load_model,
    register_fill_model,
    register_judge_model,
    use_tracking_uri,
)
from steps.registry.serving import decode_png, encode_png, fill_request
from tests.steps.registry.test_gates import passing
from tests.steps.registry.test_serving import SIZE, request_image


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    import torch

    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("policy") / "pipeline"
    return save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), path, spec_for("smoke"))


@pytest.fixture(scope="module")
def registered(mlflow_uri, pipeline_dir):
    return register_fill_model(mlflow_uri, pipeline_dir, None, profile="smoke", num_steps=2)


# ---------------------------------------------------------------- MLflow


def test_registered_fill_model_loads_from_the_registry_and_fills(mlflow_uri, registered):
    import mlflow

    assert registered["aliases"] == [CHALLENGER] and not registered["verdict"]["passed"]
    client = client_for(mlflow_uri)
    version = client.get_model_version(FILL_MODEL_NAME, registered["version"])
    assert version.tags["gate.passed"] == "false" and "no benchmark results" in version.tags["gate.reasons"]
    assert alias_version(client, FILL_MODEL_NAME, CHALLENGER) == registered["version"]
    assert client.get_run(registered["run_id"]).info.status == "FINISHED"
    was_set = mlflow.is_tracking_uri_set()
    with use_tracking_uri(mlflow_uri):
        model = mlflow.pyfunc.load_model(f"models:/{FILL_MODEL_NAME}@{CHALLENGER}")
    assert mlflow.is_tracking_uri_set() == was_set
    inputs = [c.name for c in model.metadata.signature.inputs.inputs]
    assert inputs == ["image", "mask", "prompt", "task"]
    image, mask = request_image()
    out = model.predict(pd.DataFrame([fill_request(image, mask, "a red circle", "fill"),
                                      fill_request(image, mask, "", "removal")]))
    filled = [decode_png(v) for v in out["image"]]
    assert [f.shape for f in filled] == [(SIZE, SIZE, 3)] * 2
    again = model.predict(pd.DataFrame([fill_request(image, mask, "a red circle", "fill")]))
    assert again["image"][0] == out["image"][0]  # fixed seed
    # By default the kept pixels are the request's own; keep_unmasked=False gives the raw decoded output.
    assert np.array_equal(filled[0][mask == 0], image[mask == 0])
    raw = decode_png(model.predict(pd.DataFrame([fill_request(image, mask, "a red circle", "fill")]),
                                   params={"keep_unmasked": False})["image"][0])
    assert np.array_equal(raw[mask == 255], filled[0][mask == 255])
    assert not np.array_equal(raw[mask == 0], image[mask == 0])
    location = client.get_logged_model(registered["model_id"]).artifact_location
    requirements = (Path(location.removeprefix("file://")) / "requirements.txt").read_text().split()
    assert {"torch", "diffusers", "mlflow"} <= {r.split("==")[0] for r in requirements}
    assert (Path(location.removeprefix("file://")) / "code" / "steps" / "registry" / "fill_pyfunc.py").is_file()
    with pytest.raises(Exception, match="unknown task"):
        model.predict(pd.DataFrame([fill_request(image, mask, "x", "paint")]))


def test_download_pipeline_for_benchmarking(mlflow_uri, registered, tmp_path):
    from steps.models.policy import load_fill_pipeline

    path = download_pipeline(mlflow_uri, f"models:/{FILL_MODEL_NAME}/{registered['version']}", tmp_path / "pipe")
    assert load_fill_pipeline(path).vae_scale_factor == 2
    assert download_pipeline(mlflow_uri, f"models:/{FILL_MODEL_NAME}@no-such-alias", tmp_path / "x") is None


def test_champion_moves_only_when_the_gate_passes(mlflow_uri, pipeline_dir, registered):
    client = client_for(mlflow_uri)
    before = alias_version(client, FILL_MODEL_NAME, CHAMPION)
    worse = register_fill_model(mlflow_uri, pipeline_dir, passing(worse=("removal", "removal_quality")),
                                profile="smoke", num_steps=2)
    if before is None:  # the very first champion is judged against the base only: this one passes that
        assert worse["verdict"]["passed"] and alias_version(client, FILL_MODEL_NAME, CHAMPION) == worse["version"]
        before = worse["version"]
        worse = register_fill_model(mlflow_uri, pipeline_dir, passing(worse=("removal", "removal_quality")),
                                    profile="smoke", num_steps=2)
    assert not worse["verdict"]["passed"] and worse["champion"] == before
    assert alias_version(client, FILL_MODEL_NAME, CHAMPION) == before
    assert alias_version(client, FILL_MODEL_NAME, CHALLENGER) == worse["version"]
    tags = client.get_model_version(FILL_MODEL_NAME, worse["version"]).tags
    assert tags["gate.passed"] == "false" and "removal/removal_quality worse than the champion" in tags["gate.reasons"]

    better = register_fill_model(mlflow_uri, pipeline_dir, passing(), profile="smoke", num_steps=2)
    assert better["verdict"]["passed"] and better["previous_champion"] == before
    assert alias_version(client, FILL_MODEL_NAME, CHAMPION) == better["version"]
    assert client.get_model_version(FILL_MODEL_NAME, better["version"]).tags["gate.passed"] == "true"
    assert client.get_run(better["run_id"]).data.metrics["gate/judge/champion/net_win"] == pytest.approx(0.2)


def test_infer_cli_fills_from_the_champion_with_clear_errors(mlflow_uri, pipeline_dir, tmp_path, capsys):
    from steps.io import read_rgb, write_png
    from steps.registry.infer import main

    client = client_for(mlflow_uri)
    if alias_version(client, FILL_MODEL_NAME, CHAMPION) is None:
        register_fill_model(mlflow_uri, pipeline_dir, passing(), profile="smoke", num_steps=2)
    image, mask = request_image()
    write_png(tmp_path / "in.png", image)
    write_png(tmp_path / "mask.png", mask)
    write_png(tmp_path / "small.png", mask[:16, :16])
    args = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--task", "fill",
            "--prompt", "a red circle", "--out", str(tmp_path / "out.png"), "--tracking-uri", mlflow_uri]
    assert main(["--model", f"models:/{FILL_MODEL_NAME}@{CHAMPION}", *args]) == 0
    assert read_rgb(tmp_path / "out.png").shape == (SIZE, SIZE, 3)
    assert np.array_equal(read_rgb(tmp_path / "out.png")[mask == 0], image[mask == 0])  # kept pixels kept
    raw_args = [a if a != str(tmp_path / "out.png") else str(tmp_path / "raw.png") for a in args]
    assert main(["--model", f"models:/{FILL_MODEL_NAME}@{CHAMPION}", *raw_args, "--raw"]) == 0
    assert not np.array_equal(read_rgb(tmp_path / "raw.png")[mask == 0], image[mask == 0])
    # A photo of another size: resized to the model's 32 px and back, kept pixels still the photo's own.
    big = np.asarray(Image.fromarray(image).resize((72, 56)))
    big_mask = np.zeros((56, 72), np.uint8)
    big_mask[10:30, 20:50] = 255
    write_png(tmp_path / "big.png", big)
    write_png(tmp_path / "big_mask.png", big_mask)
    big_args = ["--image", str(tmp_path / "big.png"), "--mask", str(tmp_path / "big_mask.png"), "--task", "removal",
                "--out", str(tmp_path / "big_out.png"), "--tracking-uri", mlflow_uri]
    assert main(["--model", f"models:/{FILL_MODEL_NAME}@{CHAMPION}", *big_args]) == 0
    big_out = read_rgb(tmp_path / "big_out.png")
    assert big_out.shape == (56, 72, 3) and np.array_equal(big_out[big_mask == 0], big[big_mask == 0])

    assert main(["--model", f"models:/{FILL_MODEL_NAME}@nope", *args]) == 1
    assert "has no alias 'nope'" in capsys.readouterr().err
    assert main(["--model", "models:/no-such-model@champion", *args]) == 1
    assert "no registered model 'no-such-model'" in capsys.readouterr().err
    bad_mask = [a if a != str(tmp_path / "mask.png") else str(tmp_path / "small.png") for a in args]
    assert main(["--model", f"models:/{FILL_MODEL_NAME}@{CHAMPION}", *bad_mask]) == 2
    assert "size 16x16 differs from --image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--model", f"models:/{FILL_MODEL_NAME}@{CHAMPION}", *[a if a != "fill" else "paint" for a in args]])
    assert exit_.value.code == 2 and "invalid choice: 'paint'" in capsys.readouterr().err
    with pytest.raises(ModelNotFoundError):
        load_model(f"models:/{FILL_MODEL_NAME}/999", mlflow_uri)


def test_judge_registers_and_scores_pairs(mlflow_uri, tmp_path):
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for
    from steps.preferences import judge_query

    judge_dir = Judge.build(spec_for("smoke")).save(tmp_path / "judge")
    low = register_judge_model(mlflow_uri, judge_dir, {"agreement/fill/structure": 0.4}, profile="smoke")
    assert not low["verdict"]["passed"] and CHAMPION not in low["aliases"]
    ok = register_judge_model(mlflow_uri, judge_dir, {"agreement/fill/structure": 0.8,
                                                      "agreement/removal/removal_quality": 0.9}, profile="smoke")
    assert ok["verdict"]["passed"] and ok["champion"] == ok["version"]
    model = load_model("models:/onereward-judge@champion", mlflow_uri)
    image, _ = request_image()
    rows = [{"first_image": encode_png(image), "second_image": encode_png(image[::-1].copy()),
             "query": judge_query("fill", "structure")}] * 2
    p = model.predict(pd.DataFrame(rows))["p_yes"].to_numpy()
    assert p.shape == (2,) and np.all((p > 0) & (p < 1)) and p[0] == pytest.approx(p[1])


def test_a_fill_model_trained_past_a_failed_judge_gate_never_becomes_champion(mlflow_uri, pipeline_dir, registered):
    client = client_for(mlflow_uri)
    before = alias_version(client, FILL_MODEL_NAME, CHAMPION)
    # the benchmark alone would promote it (passing() beats the base and any champion) ...
    held = register_fill_model(mlflow_uri, pipeline_dir, passing(), profile="smoke", num_steps=2,
                               never_champion="the judge failed its agreement gate (override: demo)")
    assert not held["verdict"]["passed"] and held["champion"] == before
    assert held["verdict"]["reasons"][0].startswith("FAIL the judge failed its agreement gate")
    assert alias_version(client, FILL_MODEL_NAME, CHAMPION) == before
    assert alias_version(client, FILL_MODEL_NAME, CHALLENGER) == held["version"]


def test_infer_cli_takes_a_pipeline_folder_and_names_what_it_expects_of_any_other(
        mlflow_uri, pipeline_dir, registered, tmp_path, capsys):
    """`--model foundations/tiny/base` (a diffusers folder) fills like the registered model made from it; a folder
    that is neither an MLflow model nor a pipeline is one line naming both (exit 2), not a traceback."""
    from steps.io import read_rgb, write_png
    from steps.registry.infer import main

    image, mask = request_image()
    write_png(tmp_path / "in.png", image)
    write_png(tmp_path / "mask.png", mask)

    def args(out):
        return ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--task", "fill",
                "--prompt", "a red circle", "--out", str(tmp_path / out), "--tracking-uri", mlflow_uri,
                "--num-steps", "2"]

    assert main(["--model", str(pipeline_dir), *args("folder.png")]) == 0
    assert f"model {pipeline_dir}" in capsys.readouterr().out
    assert main(["--model", f"models:/{FILL_MODEL_NAME}/{registered['version']}", *args("registered.png")]) == 0
    assert np.array_equal(read_rgb(tmp_path / "folder.png"), read_rgb(tmp_path / "registered.png"))

    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "weights.bin").write_bytes(b"x")
    capsys.readouterr()
    for bad in (tmp_path / "not_a_model", tmp_path / "in.png"):
        assert main(["--model", str(bad), *args("bad.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "expected an MLflow model" in err and "MLmodel" in err and "model_index.json" in err, err
    broken = tmp_path / "broken_pipeline"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "FluxFillPipeline"}')
    assert main(["--model", str(broken), *args("bad.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a loadable FluxFill pipeline folder" in err, err
    assert not (tmp_path / "bad.png").exists()
