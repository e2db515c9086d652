"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, as normalised numpy arrays."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``split`` is ``train`` or ``t10k``: (N, 1, 28, 28) float32 images and int64 labels."""
    if not DATA_DIR.is_dir():
        raise SystemExit(f"{DATA_DIR} is missing: apt-get install dataset-fashion-mnist")
    with gzip.open(DATA_DIR / f"{split}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(DATA_DIR / f"{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return x, labels.astype(np.int64)
