"""Wrong calibration data is named before any pruning work (``check/calibration.py``): real
inputs pass every check, on the bundled model and on every zoo model with its own bench data;
unnormalised, noisy, constant or reordered inputs do not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, REPO, cli, fetched, make_model

import onnx_gkp
from onnx_gkp.check.calibration import calibration_checks, first_batchnorms, moments, output_checks
from onnx_gkp.errors import GkpError
from onnx_gkp.io.samples import Preprocess, load_samples, split
from onnx_gkp.refit.activations import outputs_on

try:  # the bench's tasks: each zoo model with its own real calibration inputs
    from bench_quality import TASKS
except ImportError:  # without the zoo extra: the zoo test skips
    TASKS = {}

BUNDLED = REPO / "models" / "resnet20_fashion_mnist.onnx"
PIXELS = REPO / "models" / "fashion_mnist_calibration.npz"  # uint8, normalised with --mean 0.286 --std 0.353
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
ZOO = ("mobilenet_v2_imagenet", "yolov8n", "ppocr_det", "ppocr_rec", "ppocr_cls", "orientation")


@pytest.fixture(scope="module")
def bundled() -> onnx.ModelProto:
    return onnx.load(BUNDLED)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """256 real Fashion-MNIST training images, normalised as the bundled model was trained."""
    import real_data

    return real_data.fashion_mnist("train")[0][:256]


def checked(model: onnx.ModelProto, data: dict[str, np.ndarray]) -> list:
    """The checks as ``Context.open`` runs them: on the loaded data and the held-out outputs."""
    data = load_samples(data, model)
    return calibration_checks(model, data, outputs_on(model, split(data, 0).held))


def test_real_images_pass_every_check(bundled: onnx.ModelProto, images: np.ndarray) -> None:
    assert checked(bundled, {"input": images}) == []
    pixels = load_samples(PIXELS, bundled, Preprocess(mean=(FASHION_MEAN,), std=(FASHION_STD,)))
    assert calibration_checks(bundled, pixels, outputs_on(bundled, split(pixels, 0).held)) == []


def test_unnormalised_images_are_named_as_the_wrong_scale(bundled: onnx.ModelProto, images: np.ndarray) -> None:
    raw = (images * FASHION_STD + FASHION_MEAN) * 255
    found = {c.check: c for c in checked(bundled, {"input": raw})}
    assert set(found) == {"batchnorm statistics", "value range"}, [c.message for c in found.values()]
    statistics = found["batchnorm statistics"]
    assert "/stem/stem.1/BatchNormalization" in statistics.where and "wrong scale" in statistics.cause
    assert "0..255" in found["value range"].measured


def test_pixels_in_zero_one_without_their_normalisation_are_named(bundled: onnx.ModelProto) -> None:
    """The bundled uint8 file without ``--mean/--std``: in [0, 1], every channel as much too narrow."""
    pixels = load_samples(PIXELS, bundled)
    (found,) = calibration_checks(bundled, pixels, outputs_on(bundled, split(pixels, 0).held))
    narrower = re.search(r"([\d.]+)x narrower than in training on every channel alike", found.cause)
    assert found.check == "batchnorm statistics" and narrower, found.message
    assert 2.5 < float(narrower.group(1)) < 3.0  # 1 / 0.353, the normalisation left out


def test_uint8_range_noise_warns(bundled: onnx.ModelProto) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (512, 1, 28, 28)).astype(np.float32)
    found = {c.check: c for c in checked(bundled, {"input": noise})}
    assert {"batchnorm statistics", "value range", "one class"} <= set(found), [c.message for c in found.values()]
    assert "integer values in 0..255" in found["value range"].measured


@pytest.mark.parametrize("kind", ["zeros", "one image"])
def test_constant_or_repeated_inputs_warn(bundled: onnx.ModelProto, images: np.ndarray, kind: str) -> None:
    data = np.zeros_like(images) if kind == "zeros" else np.repeat(images[:1], len(images), axis=0)
    found = checked(bundled, {"input": data})
    assert [c.check for c in found] == ["constant" if kind == "zeros" else "identical", "output values"]
    assert "the same on every one of the 64 held-out samples" in found[1].measured


def test_swapped_channels_are_named() -> None:
    """A 1x1 Conv that passes the channels on, into a BatchNormalization that saw their means
    as (4, 3, -4): data of means (-4, 3, 4) fits once its channels are reversed."""
    model = onnx.parser.parse_model(
        """
<ir_version: 8, opset_import: ["" : 17]>
swap (float[N,3,8,8] x) => (float[N,3,8,8] y) {
  c = Conv (x, w)
  y = BatchNormalization (c, scale, bias, mean, var)
}
"""
    )
    for name, value in {
        "w": np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1),
        "scale": np.ones(3, np.float32),
        "bias": np.zeros(3, np.float32),
        "mean": np.array([4, 3, -4], np.float32),
        "var": np.ones(3, np.float32),
    }.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(value, name))
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((64, 3, 8, 8)).astype(np.float32) + np.array([-4, 3, 4], np.float32)[:, None, None]
    assert first_batchnorms(model) == [(1, "x")]
    (before,) = moments(model, {"x": data}, first_batchnorms(model))
    np.testing.assert_allclose(before.mean, [-4, 3, 4], atol=0.1)
    assert not before.fits
    (found,) = checked(model, {"x": data})
    assert "wrong order" in found.cause, found.message
    assert checked(model, {"x": np.ascontiguousarray(data[:, ::-1])}) == []


def test_outputs_that_say_nothing_warn() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((32, 10))
    assert output_checks(["y"], [scores.astype(np.float32)]) == []
    flat = np.full((32, 1000), 1e-3) + rng.uniform(0, 1e-5, (32, 1000))  # near 1/C everywhere
    nan = scores.copy()
    nan[3, 1] = np.nan
    few = scores[:8] + np.eye(10)[0] * 10  # one class on each of 8 samples: too few to say anything
    found = output_checks(["flat", "nan", "zeros", "few"], [flat, nan, np.zeros((32, 4)), few])
    assert [(c.where, c.check) for c in found] == [
        ("output 'flat'", "uniform scores"),
        ("output 'nan'", "output values"),
        ("output 'zeros'", "output values"),
    ]
    assert [c.check for c in output_checks(["y"], [np.concatenate([few] * 3)])] == ["one class"]
    assert "1 of 32" in found[1].measured and "all zeros" in found[2].measured


def test_the_cli_warns_even_when_quiet_and_strict_refuses(tmp_path: Path) -> None:
    """Each failed check is one warning line on stderr and a record in the report; ``--strict``
    turns it into exit 2 before any work, nothing written."""
    model, zeros = tmp_path / "chain.onnx", tmp_path / "zeros.npz"
    onnx.save(make_model(CHAIN, CHAIN_WEIGHTS), model)
    np.savez(zeros, x=np.zeros((16, 8, 10, 10), np.float32))
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    result = cli(model, out, "--calibration", zeros, "--ratio", "0.5", "--quiet", "--report", report)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert warnings[0] == (
        "onnx-gkp: warning: calibration data: input 'x': every value of the 16 samples is 0 "
        "(likely placeholder data such as zeros)"
    )
    assert all(line.startswith("onnx-gkp: warning: calibration data: ") for line in warnings)
    records = json.loads(report.read_text())["calibration_checks"]
    assert records[0] == {
        "check": "constant",
        "where": "input 'x'",
        "measured": "every value of the 16 samples is 0",
        "cause": "placeholder data such as zeros",
    }
    refused = cli(model, tmp_path / "strict.onnx", "--calibration", zeros, "--ratio", "0.5", "--strict")
    assert refused.returncode == 2 and not (tmp_path / "strict.onnx").exists()
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("onnx-gkp: error: the calibration data fails")


def test_strict_refuses_noise_for_the_bundled_model(tmp_path: Path) -> None:
    noise = tmp_path / "noise.npz"
    np.savez(noise, input=np.random.default_rng(0).integers(0, 256, (512, 1, 28, 28)).astype(np.float32))
    out = tmp_path / "out.onnx"
    result = cli(BUNDLED, out, "--calibration", noise, "--ratio", "0.5", "--strict")
    assert result.returncode == 2 and not out.exists(), result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("onnx-gkp: error: the calibration data fails 3 check(s)") and "wrong scale" in line
    with pytest.raises(GkpError, match="every value of the 8 samples is 0"):
        onnx_gkp.prune(BUNDLED, ratio=0.5, calibration={"input": np.zeros((8, 1, 28, 28), np.float32)}, strict=True)


def test_no_data_no_checks(bundled: onnx.ModelProto) -> None:
    _, report = onnx_gkp.prune(bundled, ratio=0.25, check=False)
    assert report.calibration_checks is None and report.to_dict()["calibration_checks"] is None


@pytest.mark.parametrize("name", sorted({*ZOO, *TASKS}))
def test_real_calibration_data_of_every_zoo_model_passes(name: str) -> None:
    """Each bench task's own calibration inputs (64 of them; PP-OCR's recogniser, which has no
    task, on strips of printed text) pass every check."""
    pytest.importorskip("PIL", reason="the real inputs need the zoo extra")
    import real_data

    if name == "ppocr_rec":
        model, inputs = onnx.load(fetched(name)), real_data.text_crops(320)[:, :, 136:184, :]
    else:
        task = TASKS[name]
        model = onnx.load(BUNDLED if name == "bundled" else fetched(task.zoo or name))
        inputs = task.calibration(64)
    found = checked(model, {model.graph.input[0].name: np.ascontiguousarray(inputs)})
    assert found == [], [c.message for c in found]
