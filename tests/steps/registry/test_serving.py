"""The registered models' request format: PNG codec, and errors that name the row and the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steps.registry.serving import decode_fill_requests, decode_judge_requests, encode_png, fill_request

SIZE = 32


def request_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 255
    return image, mask


def test_request_codec_errors_name_row_and_field():
    image, mask = request_image()
    ok = fill_request(image, mask, "a red circle", "fill")
    images, masks, prompts = decode_fill_requests(pd.DataFrame([ok, {**ok, "task": "removal", "prompt": ""}]))
    assert np.array_equal(images[0], image) and prompts == ["a red circle", "remove"]
    with pytest.raises(ValueError, match="row 1: field 'task': unknown task 'paint'"):
        decode_fill_requests(pd.DataFrame([ok, {**ok, "task": "paint"}]))
    with pytest.raises(ValueError, match="row 0: field 'mask': size 16x16 differs"):
        decode_fill_requests(pd.DataFrame([{**ok, "mask": encode_png(np.zeros((16, 16), np.uint8))}]))
    with pytest.raises(ValueError, match="field 'image': expected a base64-encoded PNG"):
        decode_fill_requests(pd.DataFrame([{**ok, "image": "not base64!"}]))
    with pytest.raises(ValueError, match="missing column"):
        decode_fill_requests(pd.DataFrame([{"image": ok["image"]}]))


def test_judge_requests_decode_and_name_the_mismatched_image():
    image, _ = request_image()
    row = {"first_image": encode_png(image), "second_image": encode_png(image[::-1].copy()), "query": "q"}
    firsts, seconds, queries = decode_judge_requests(pd.DataFrame([row]))
    assert np.array_equal(firsts[0], image) and np.array_equal(seconds[0], image[::-1]) and queries == ["q"]
    small = {**row, "second_image": encode_png(image[:16, :16].copy())}
    with pytest.raises(ValueError, match="row 1: field 'second_image': size 16x16 differs from first_image 32x32"):
        decode_judge_requests(pd.DataFrame([row, small]))
