"""Real data that ships in pinned Debian packages rather than wheels: the photo set and Fashion-MNIST.

``apt-get download`` (the package lists need an ``apt-get update``) fetches each .deb once, its sha256 is
checked, ``dpkg-deb`` unpacks it and the files are read out (the photos from Qt's ``.rcc`` resource bundles in
Python); the photo selection as a whole is pinned by :data:`PHOTO_SET_SHA256`. Nothing is installed. Kept apart
from the wheels of ``tools/zoo.py``, whose cache it shares; ``python tools/zoo.py photos fashion-mnist`` fetches it.
"""

from __future__ import annotations

import fnmatch
import io
import struct
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from zoo import cache_dir, sha256_hex, write_atomic


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
    if sha256_hex(target.read_bytes()) != deb.sha256:
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
    return "".join(f"{name} {sha256_hex(data)}\n" for name, data in sorted(photos.items()))


def fetch_photos() -> tuple[Path, ...]:
    """Every photo of :data:`PHOTO_GROUPS`, as ``cache/photos/GROUP/PATH`` in sorted order, read out
    of the pinned .debs on first use."""
    folder = cache_dir() / "photos"
    manifest = folder / "MANIFEST"
    if manifest.is_file() and sha256_hex(manifest.read_bytes()) == PHOTO_SET_SHA256:
        paths = tuple(folder / line.split(" ")[0] for line in manifest.read_text().splitlines())
        if all(path.is_file() for path in paths):
            return paths
    photos = _read_photo_set()
    text = photo_manifest(photos).encode()
    if sha256_hex(text) != PHOTO_SET_SHA256:
        raise RuntimeError(f"the {len(photos)} photos read out of the .debs are not the pinned photo set")
    for name, data in photos.items():
        write_atomic(folder / name, data)
    write_atomic(manifest, text)
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
            write_atomic(folder / Path(path).name, data)
    return folder
