"""Real third-party models (``tools/zoo.py``) prune and validate end to end.

Each model is pruned with the defaults (runtime-aware) and quality-only (which always
regroups something, so the masked-reference check is never vacuous), validated by the pass
itself and checked again here against the masked reference rebuilt from the JSON report.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnx_gkp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from conftest import assert_close, feeds_for, fetched, reference_from_report, run  # noqa: E402
from zoo import MODELS  # noqa: E402


@pytest.mark.parametrize("runtime_aware", [True, False], ids=["default", "quality-only"])
@pytest.mark.parametrize("name", list(MODELS))
def test_real_model_prunes_and_validates(name: str, runtime_aware: bool) -> None:
    entry = MODELS[name]
    original = onnx.load(fetched(name))
    pruned, report = onnx_gkp.prune(
        original, ratio=0.25, test_shapes=entry.test_shapes or None, latency_runs=5, runtime_aware=runtime_aware
    )
    data = report.to_dict()
    assert data["validation"]["passed"]
    assert data["fidelity"] is None and "fidelity: NOT measured" in report.summary()  # no real inputs given
    assert data["skipped"], "every zoo model has Convs that must be left alone (stem, depthwise, ...)"
    assert all(s["reason"] for s in data["skipped"])
    if not runtime_aware:
        assert data["layers"], "quality-only regroups every eligible Conv"
    onnx.checker.check_model(pruned, full_check=True)
    shapes = {k: list(v) for k, v in entry.test_shapes.items()}
    feeds = feeds_for(original, shapes=shapes)
    assert_close(run(pruned, feeds), run(reference_from_report(original, data), feeds), rtol=1e-3)


@pytest.mark.parametrize("name", list(MODELS))
def test_real_model_data_free_default_runs_and_keeps_the_model(name: str) -> None:
    """No ratio, target or data: the conservative default (PP-OCR's 360-channel Conv once
    crashed it, an aligned kept count of 368), and whatever it prunes is nearly exact."""
    entry = MODELS[name]
    original = onnx.load(fetched(name))
    pruned, report = onnx_gkp.prune(original, test_shapes=entry.test_shapes or None, latency_runs=5)
    assert report.options["mode"] == "data-free" and report.validation.passed
    onnx.checker.check_model(pruned, full_check=True)
    feeds = feeds_for(original, shapes={k: list(v) for k, v in entry.test_shapes.items()})
    assert_close(run(pruned, feeds), run(original, feeds), rtol=1e-3)


def test_exports_predict_what_their_weights_learned() -> None:
    """The torch exports are the pretrained networks: MNIST digits read, the cat is a cat."""
    pytest.importorskip("PIL", reason="the photos need the zoo extra")
    import real_data

    images, labels = real_data.mnist_5k()
    mnist = ort.InferenceSession(str(fetched("mnist")))
    assert np.mean(mnist.run(None, {"input": images})[0].argmax(1) == labels) > 0.99
    crops = real_data.imagenet_crops()
    centre = crops[:: len(crops) // len(real_data.PHOTOS)]  # the full-scale crop of each photo
    for name in ("mobilenet_v2_imagenet", "mobilenet_v2_imagenet_folded"):
        logits = ort.InferenceSession(str(fetched(name))).run(None, {"input": centre})[0]
        photo = dict(zip(real_data.PHOTOS, logits.argmax(1)))
        assert photo["chelsea.png"] in range(281, 286), "ImageNet 281-285 are the domestic cats"
        assert photo["coffee.png"] == 967, "ImageNet 967 is espresso"


def test_photo_set_is_split_by_photo_and_imagenet_like() -> None:
    """The Debian photo set: two disjoint parts, ImageNet centre crops, photos MobileNetV2 names."""
    pytest.importorskip("PIL", reason="the photos need the zoo extra")
    import real_data
    from debian_data import fetch_photos

    try:
        fetch_photos()
    except (subprocess.CalledProcessError, OSError) as error:  # no Debian archive: nothing to test
        pytest.skip(f"the photo set could not be fetched: {error}")
    calibration, evaluation = (real_data.photo_set_paths(split) for split in real_data.PHOTO_SET_SPLITS)
    assert (len(calibration), len(evaluation)) == (100, 202)
    assert not {path.stem.casefold() for path in calibration} & {path.stem.casefold() for path in evaluation}
    crops = real_data.photo_set("calibration", 32, normalise=False)
    assert crops.shape == (100, 3, 32, 32) and crops.dtype == np.float32 and 0 <= crops.min() <= crops.max() <= 1
    known = {"dam1.webp": 525, "gorilla.webp": 366, "koala.webp": 105, "polar_bear.webp": 296, "hay_field.jpg": 958}
    chosen = tuple(path for path in evaluation if path.name in known)
    logits = ort.InferenceSession(str(fetched("mobilenet_v2_imagenet"))).run(
        None, {"input": real_data.centre_crops(chosen, 224, normalise=True)}
    )[0]
    assert dict(zip((path.name for path in chosen), logits.argmax(1).tolist())) == known


def _real_inputs(name: str) -> np.ndarray:
    """16 real inputs of the model's own kind (photos, printed text and lines, digits), none it is scored on."""
    import real_data

    if name == "mnist":
        return real_data.shuffled_mnist()[0][:16]
    if name in ("ppocr_det", "ppocr_rec"):
        text = real_data.text_crops(320)[:16]
        return text if name == "ppocr_det" else np.ascontiguousarray(text[:, :, 136:184, :])  # 48-row strips of text
    if name == "ppocr_cls":
        return real_data.text_lines(16)[0]
    size = 320 if name == "yolov8n" else 224
    return real_data.calibration_crops(16, size, normalise=name != "yolov8n")


@pytest.mark.parametrize("name", list(MODELS))
def test_real_model_prints_its_held_out_fidelity(name: str) -> None:
    pytest.importorskip("PIL", reason="the real inputs need the zoo extra")
    original = onnx.load(fetched(name))
    entry = MODELS[name]
    data = {original.graph.input[0].name: _real_inputs(name)}
    _, report = onnx_gkp.prune(
        original,
        ratio=0.25,
        runtime_aware=False,
        calibration=data,
        test_shapes=entry.test_shapes or None,
        latency_runs=0,
    )
    assert report.validation.passed and report.validation.inputs == "held-out samples"
    assert report.samples["held_out"] == 8 and report.layers
    assert report.summary().startswith("fidelity on 8 held-out samples: ")
    for figures in report.fidelity.values():
        assert figures["kind"] in ("classes", "dense") and 0.0 <= figures["score"] <= 1.0 or figures["score"] is None
        assert all(np.isfinite(v) or k == "snr_db" for k, v in figures.items() if isinstance(v, float))


def _dense_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the ``group = 1`` Convs, the ones ``--include`` can select for pruning."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and n.name and all(a.name != "group" or a.i == 1 for a in n.attribute)
    ]


SUBSETS = 4  # per model: two with G = 1 (trimming across layers), two with the flexible count


@pytest.mark.parametrize("name", list(MODELS))
def test_random_include_subsets_prune_and_validate(name: str) -> None:
    """Any selection of layers prunes and validates (a subset that left MobileNetV2's
    expand Convs out crashed in ``conv._trim``). Seeded random subsets of every size, so
    chains of pruned, excluded and depthwise Convs meet in every arrangement the model has."""
    entry = MODELS[name]
    original = onnx.load(fetched(name))
    convs = _dense_convs(original)
    rng = np.random.default_rng(sorted(MODELS).index(name))
    shapes = {k: list(v) for k, v in entry.test_shapes.items()}
    feeds = feeds_for(original, shapes=shapes)
    for i in range(SUBSETS):
        chosen = sorted(rng.choice(len(convs), size=int(rng.integers(1, len(convs) + 1)), replace=False))
        include = "^(" + "|".join(re.escape(convs[c]) for c in chosen) + ")$"
        groups = 1 if i < SUBSETS // 2 else "auto"
        pruned, report = onnx_gkp.prune(
            original,
            ratio=0.25,
            groups=groups,
            include=include,
            runtime_aware=False,
            test_shapes=entry.test_shapes or None,
            latency_runs=0,
        )
        data = report.to_dict()
        assert data["validation"]["passed"], (groups, include)
        assert {layer["node"] for layer in data["layers"]} <= {convs[c] for c in chosen}
        assert_close(run(pruned, feeds), run(reference_from_report(original, data), feeds), rtol=1e-3)


def _projections_pruned(name: str, include: str) -> tuple[onnx.ModelProto, onnx.ModelProto, dict]:
    """The zoo model with the Convs ``include`` names pruned a quarter at G = 1, and its report."""
    original = onnx.load(fetched(name))
    pruned, report = onnx_gkp.prune(
        original, ratio=0.25, groups=1, include=include, test_shapes={"input": (1, 3, 224, 224)}, latency_runs=0
    )
    return original, pruned, report.to_dict()


@pytest.mark.parametrize("name", ["mobilenet_v2_imagenet", "mobilenet_v2_imagenet_folded"])
def test_projections_without_their_expand_convs(name: str) -> None:
    """The projections and block 1's, at G = 1, the expand Convs left out."""
    _, _, data = _projections_pruned(name, r"(conv\.2/Conv$)|(features\.1/conv/conv\.1/Conv$)")
    assert data["validation"]["passed"] and len(data["layers"]) == 17


MACS_REMOVED_PROJECTIONS_ALONE = 0.093  # the projections alone: 299.49M -> 271.57M Conv MACs


@pytest.mark.parametrize("name", ["mobilenet_v2_imagenet", "mobilenet_v2_imagenet_folded"])
def test_projections_trim_their_depthwise_and_expand_convs(name: str) -> None:
    """Trimming through depthwise Convs: ``--groups 1 --include 'conv\\.2/Conv$' --ratio 0.25``. Each pruned
    projection stops its block's depthwise Conv and expand Conv (both left out of the sites)
    computing the hidden channels it no longer reads; the model equals its masked reference."""
    original, pruned, data = _projections_pruned(name, r"conv\.2/Conv$")
    assert data["validation"]["passed"] and len(data["layers"]) == 16
    skips = {s["node"]: s for s in data["skipped"]}
    for layer in data["layers"]:
        block = layer["node"].rsplit("/conv/", 1)[0]
        dead = sorted(set(range(layer["weight_shape"][1])) - set(layer["kept_channels"][0]))
        expand, depthwise = (skips[f"{block}/conv/conv.{i}/conv.{i}.0/Conv"] for i in (0, 1))
        assert list(expand["dead_filters"]) == list(depthwise["dead_filters"]) == dead, block
        assert depthwise["macs_after"] == depthwise["macs"] * layer["kept_per_group"] // layer["weight_shape"][1]
    assert data["totals"]["gathers_added"] == 0
    removed = 1 - data["totals"]["conv_macs_after"] / data["totals"]["conv_macs_before"]
    print(
        f"{name}: Conv MACs removed {removed:.1%} (without trimming through depthwise Convs: "
        f"{MACS_REMOVED_PROJECTIONS_ALONE:.1%})"
    )
    assert removed > 0.2
    shapes = {"input": [1, 3, 224, 224]}
    feeds = feeds_for(original, shapes=shapes)
    assert_close(run(pruned, feeds), run(reference_from_report(original, data), feeds), rtol=1e-3)


@pytest.mark.parametrize("name", list(MODELS))
def test_real_model_ships_int8(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--quantize`` on every zoo model: pruned, validated, quantized with onnxruntime's own
    tools, measured on held-out real inputs against INT8 alone, and the shipped model runs;
    nothing is left in the working directory (YOLOv8n's symbolic shape inference gives up there)."""
    pytest.importorskip("PIL", reason="the real inputs need the zoo extra")
    monkeypatch.chdir(tmp_path)
    original = onnx.load(fetched(name))
    entry = MODELS[name]
    inputs = _real_inputs(name)
    shipped, report = onnx_gkp.prune(
        original,
        ratio=0.25,
        runtime_aware=False,
        quantize="u8s8",
        calibration={original.graph.input[0].name: inputs},
        test_shapes=entry.test_shapes or None,
        latency_runs=0,
    )
    assert report.validation.passed and report.summary().startswith("fidelity of the INT8 model on 8 held-out samples")
    assert set(report.quantization["fidelity_int8_alone"]) == set(report.fidelity)
    assert any(n.op_type == "QuantizeLinear" for n in shipped.graph.node)
    batch = entry.test_shapes.get(original.graph.input[0].name, (1,))[0] if entry.test_shapes else 1
    outputs = run(shipped, {original.graph.input[0].name: inputs[:batch]})
    assert all(np.isfinite(o).all() for o in outputs if np.issubdtype(o.dtype, np.floating))
    assert not list(tmp_path.iterdir()), "quantizing writes nothing where it runs"
