"""Real inputs: .npz, .npy and image folders read and checked, and the seeded fit / held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, make_model

from onnx_gkp.errors import GkpError
from onnx_gkp.io import samples
from onnx_gkp.io.samples import Preprocess, held_out_count, load_samples, split

IMAGES = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,3,6,5] x) => (float[N,4,6,5] y) {
  y = Conv <pads=[1,1,1,1]> (x, w)
}
"""


@pytest.mark.parametrize("total,held", [(512, 128), (100, 32), (64, 32), (40, 20), (2, 1)])
def test_held_out_is_a_quarter_at_least_32_or_half_of_few(total: int, held: int) -> None:
    assert held_out_count(total) == held
    data = {"x": np.arange(total, dtype=np.float32)[:, None]}
    parts = split(data, seed=3)
    assert parts.counts == {"fit": total - held, "held_out": held}
    together = np.sort(np.concatenate([parts.fit["x"][:, 0], parts.held["x"][:, 0]]))
    np.testing.assert_array_equal(together, np.arange(total))  # disjoint and complete
    np.testing.assert_array_equal(parts.held["x"][:, 0], np.array(parts.held_index, dtype=np.float32))
    assert split(data, seed=3).held_index == parts.held_index
    assert total < 8 or split(data, seed=4).held_index != parts.held_index


def test_one_sample_cannot_be_split() -> None:
    with pytest.raises(GkpError, match="at least 2 samples"):
        split({"x": np.zeros((1, 3))}, seed=0)


def test_npy_and_npz_load_and_bad_values_are_refused(tmp_path: Path) -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    array = np.random.default_rng(0).normal(size=(6, 8, 10, 10)).astype(np.float32)
    np.save(tmp_path / "c.npy", array)
    np.savez(tmp_path / "c.npz", x=array)
    for name in ("c.npy", "c.npz"):
        np.testing.assert_array_equal(load_samples(tmp_path / name, model)["x"], array)
    for bad, message in ((np.nan, "NaN or infinite"), (1e300, "overflows")):
        broken = array.astype(np.float64)
        broken[2, 0, 0, 0] = bad
        with pytest.raises(GkpError, match=message):
            load_samples({"x": broken}, model)
    (tmp_path / "named.npz").write_bytes((tmp_path / "c.npy").read_bytes())  # an .npy named .npz
    with pytest.raises(GkpError, match="not a readable .npz"):
        load_samples(tmp_path / "named.npz", model)


def test_sizes_are_read_from_the_header_before_any_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    np.savez_compressed(tmp_path / "c.npz", x=np.zeros((64, 8, 10, 10), np.float32))
    monkeypatch.setattr(samples, "MAX_BYTES", 1000)
    with pytest.raises(GkpError, match="would take"):
        load_samples(tmp_path / "c.npz", model)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_a_folder_of_images_is_resized_scaled_and_normalised(tmp_path: Path, layout: str) -> None:
    image = pytest.importorskip("PIL.Image")
    text = IMAGES if layout == "NCHW" else IMAGES.replace("float[N,3,6,5] x", "float[N,6,5,3] x")
    if layout == "NHWC":
        text = text.replace(
            "y = Conv <pads=[1,1,1,1]> (x, w)", "t = Transpose <perm=[0,3,1,2]> (x)\n  y = Conv <pads=[1,1,1,1]> (t, w)"
        )
    model = make_model(text, {"w": (4, 3, 3, 3)})
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        image.new("RGB", (20, 30), colour).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    got = load_samples(tmp_path, model, Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout=layout))["x"]
    assert got.shape == ((3, 3, 6, 5) if layout == "NCHW" else (3, 6, 5, 3))
    channels = got if layout == "NCHW" else got.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(channels[:, :, 0, 0], 2 * np.eye(3) - 1, atol=1e-6)  # red, green, blue at +1
    bgr = load_samples(tmp_path, model, Preprocess(order="BGR", layout=layout))["x"]
    first = bgr[0, :, 0, 0] if layout == "NCHW" else bgr[0, 0, 0]
    np.testing.assert_allclose(first, [0, 0, 1], atol=1e-6)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    model = make_model(IMAGES, {"w": (4, 3, 3, 3)})
    with pytest.raises(GkpError, match="no images"):
        load_samples(tmp_path, model)
