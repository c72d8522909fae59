"""The user's own benchmark folder: 24 real photos at 512 px, one competitor the project does not know."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from steps.manifest import ManifestError
from steps.data.user_benchmark import ingest_user_benchmark, validate_user_benchmark

TASKS = ("fill", "extend", "removal")


def real_photos(n: int, size: int):
    """n square photos from the ones bundled in installed packages, flipped and cropped to get enough."""
    from steps.data.photos import iter_photos, square_resize

    base = [img for _, img in iter_photos()]
    out = []
    for k in range(n):
        img = base[k % len(base)][..., :3]
        variant = k // len(base)
        if variant % 2:
            img = img[:, ::-1]
        if variant >= 2:  # a corner crop
            h, w = img.shape[:2]
            img = img[: h * 3 // 4, w // 4:]
        out.append(square_resize(np.ascontiguousarray(img), size))
    return out


def make_user_folder(root: Path, n: int = 24, size: int = 512, system: str = "acme_fill") -> Path:
    """manifest.jsonl, images/, masks/ and competitors/<system>/<id>.png by a classical method (OpenCV NS)."""
    import cv2

    from steps.io import write_png
    from steps.data.photos import border_mask, rect_mask

    rng = np.random.default_rng(7)
    lines = []
    for k, image in enumerate(real_photos(n, size)):
        task = TASKS[k % 3]
        mask = border_mask(size, rng) if task == "extend" else rect_mask(size, rng)
        cid = f"photo{k:02d}"
        write_png(root / "images" / f"{cid}.png", image)
        write_png(root / "masks" / f"{cid}.png", mask)
        write_png(root / "competitors" / system / f"{cid}.png", cv2.inpaint(image, mask, 5, cv2.INPAINT_NS))
        lines.append(json.dumps({"id": cid, "task": task, "image": f"images/{cid}.png", "mask": f"masks/{cid}.png",
                                 "prompt": "a red circle" if task == "fill" else ""}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_user_folder(tmp_path_factory.mktemp("user") / "my_benchmark")


def test_a_good_folder_is_taken_whole(folder, tmp_path):
    summary = validate_user_benchmark(folder)
    assert summary == {"n_conditions": 24, "n_by_task": {"fill": 8, "extend": 8, "removal": 8},
                       "systems": {"acme_fill": 24}}
    out = ingest_user_benchmark(folder, tmp_path / "user")
    assert (Path(out["out_dir"]) / "competitors" / "acme_fill" / "photo23.png").is_file()


def test_a_bad_folder_names_every_system_and_id_and_writes_nothing(folder, tmp_path):
    import shutil

    from PIL import Image

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "competitors" / "acme_fill" / "photo03.png").unlink()
    Image.new("RGB", (256, 256)).save(bad / "competitors" / "acme_fill" / "photo05.png")
    (bad / "competitors" / "other").mkdir()
    lines = (bad / "manifest.jsonl").read_text().splitlines()
    lines[6] = lines[6].replace('"task": "fill"', '"task": "paint"')
    (bad / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "user"
    with pytest.raises(ManifestError, match=r"manifest.jsonl:7: field 'task'"):
        ingest_user_benchmark(bad, out)
    (bad / "manifest.jsonl").write_text((folder / "manifest.jsonl").read_text())
    with pytest.raises(ManifestError) as err:
        ingest_user_benchmark(bad, out)
    text = str(err.value)
    assert "competitors/acme_fill: field 'ids': 1 benchmark id(s) without <id>.png: photo03" in text
    assert "acme_fill/photo05.png: field 'size': size 256x256 differs from benchmark image 'photo05' (512x512" in text
    assert "competitors/other: field 'ids': 24 benchmark id(s) without <id>.png" in text
    assert not out.exists()
