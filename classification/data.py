"""Offline-first image-classification data: Fashion-MNIST from the Debian package, CIFAR through torchvision.

Small image datasets are held whole in memory as uint8 tensors (Fashion-MNIST is 47 MB, CIFAR-10
150 MB), and batches are augmented as tensors, on whatever device the batch lives on. This avoids a
per-image PIL pipeline, which costs more than the model on a 2-core machine and starves a GPU.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.io import data_dir  # $KDZOO_DATA, else ~/.cache/kdzoo/data

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Per-channel statistics of the training sets (pixel values in [0, 1]).
STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# Random-crop padding used by the standard augmentation (crop back to the input size, then h-flip).
CROP_PADDING = {"fashion-mnist": 2, "cifar10": 4, "cifar100": 4}
DATASETS = tuple(STATS)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DataNotFoundError(FileNotFoundError):
    """A dataset is not on this machine; the message says how to get it."""


@dataclass
class ImageDataset:
    """A whole image-classification split in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    source: str = ""
    _norm: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, n: int) -> "ImageDataset":
        """The first ``n`` examples (for quick runs)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"a subset of {self.name}/{self.split} needs 1..{len(self)} examples, got {n}")
        return ImageDataset(self.name, self.split, self.images[:n], self.labels[:n], self.classes,
                            self.mean, self.std, self.crop_padding, self.source)

    def to(self, device: torch.device | str) -> "ImageDataset":
        """Move the whole split to ``device`` (device-resident data for fast GPU training)."""
        return ImageDataset(self.name, self.split, self.images.to(device), self.labels.to(device),
                            self.classes, self.mean, self.std, self.crop_padding, self.source)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalised float32."""
        if self._norm is None or self._norm[0].device != images.device:
            mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
            self._norm = (mean, std)
        mean, std = self._norm
        return (images.float().div_(255.0) - mean) / std

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None,
              augment: bool = False, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Gather, optionally augment (pad-crop + horizontal flip), move and normalise a batch.

        Returns ``{"inputs": float images, "labels": int64, "index": dataset indices}`` (the indices
        serve losses with per-example state, such as CRD's memory bank).
        """
        indices = indices.to(self.images.device)
        images, labels = self.images[indices], self.labels[indices]
        if augment:
            images = random_crop_flip(images, self.crop_padding, generator)
        if device is not None:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            indices = indices.to(device, non_blocking=True)
        return {"inputs": self.normalize(images), "labels": labels, "index": indices}

    def loader(self, batch_size: int, device: torch.device | str | None = None):
        """Iterate over the split in order, unaugmented (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))), device=device)


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop after zero padding, then random horizontal flip, done as one gather.

    The random numbers come from ``generator`` on the CPU, so a batch's augmentation is the same on
    any device and is reproducible from the generator's seed.
    """
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    if padding > 0:
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    else:
        oy = ox = torch.zeros(n, dtype=torch.long)
    dev = images.device
    rows = (oy[:, None] + torch.arange(h)).to(dev)  # (n, h)
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    cols = (ox[:, None] + cols).to(dev)  # (n, w)
    padded = F.pad(images, (padding,) * 4) if padding > 0 else images
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # advanced indexing put channels last


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def _holds_fashion_mnist(folder: Path) -> bool:
    """Whether ``folder`` holds any of Fashion-MNIST's IDX files (gzipped or not)."""
    return any((folder / f).exists() or (folder / f[:-3]).exists() for pair in _FMNIST_FILES.values() for f in pair)


def _find_fashion_mnist(root: str | os.PathLike | None) -> Path:
    """The folder holding Fashion-MNIST's IDX files: the first candidate that holds any of them (so that the two
    splits never come from two copies): under ``root`` only when it is given (a data root that lacks them is an
    error, not a silent fall back to another copy), else ``$KDZOO_DATA``, then Debian's. An empty or blank
    ``root`` is not given."""
    candidates: list[Path] = []
    if root is not None and str(root).strip():
        root = Path(root).expanduser()
        candidates += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    else:
        root = None
        if os.environ.get("KDZOO_DATA", "").strip():
            data = data_dir()
            candidates += [data, data / "fashion-mnist", data / "FashionMNIST" / "raw"]
        candidates += [Path(d) for d in FASHION_MNIST_DIRS]
    for c in candidates:
        if _holds_fashion_mnist(c):
            return c
    raise DataNotFoundError(
        "Fashion-MNIST not found (looked in: " + ", ".join(map(str, candidates)) + "). "
        + ("The data root given is the only place looked in; leave it unset for $KDZOO_DATA or Debian's copy. "
           if root is not None else "") +
        "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist`; or pass root= (or set KDZOO_DATA) to a "
        "directory holding train-images-idx3-ubyte.gz etc., e.g. a torchvision FashionMNIST root."
    )


def fashion_mnist_files(split: str = "train", root: str | os.PathLike | None = None) -> list[Path]:
    """The (images, labels) IDX files of Fashion-MNIST's ``split`` that `load_fashion_mnist` reads, gzipped or not.

    Raises ValueError for an unknown split, DataNotFoundError when they are not found (see `_find_fashion_mnist`),
    or when the folder found lacks the split's files (they are not looked for in another copy)."""
    if split not in _FMNIST_FILES:
        raise ValueError(f"split must be one of {tuple(_FMNIST_FILES)}, got {split!r}")
    d = _find_fashion_mnist(root)
    files = [d / f if (d / f).exists() else d / f[:-3] for f in _FMNIST_FILES[split]]
    missing = [f for f, path in zip(_FMNIST_FILES[split], files) if not path.exists()]
    if missing:
        raise DataNotFoundError(f"Fashion-MNIST in {d} lacks its {split} split: no {' or '.join(missing)} "
                                "(nor the file without .gz)")
    return files


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test 28x28 grey images, 10 classes."""
    paths = fashion_mnist_files(split, root)
    d = paths[0].parent
    images = torch.from_numpy(_read_idx(paths[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(paths[1]).astype(np.int64))
    mean, std = STATS["fashion-mnist"]
    return ImageDataset("fashion-mnist", split, images, labels, FASHION_MNIST_CLASSES, mean, std,
                        CROP_PADDING["fashion-mnist"], str(d))


def load_cifar(name: str = "cifar10", split: str = "train", root: str | os.PathLike | None = None,
               download: bool = False) -> ImageDataset:
    """CIFAR-10/100 (Krizhevsky 2009) through torchvision's loader (``download=True`` needs network)."""
    import torchvision

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    root = data_dir(root)
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as e:
        raise DataNotFoundError(
            f"{name} not found under {root} ({e}). Pass download=True (`--download`) when online, "
            "or root= a torchvision CIFAR root."
        ) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    mean, std = STATS[name]
    return ImageDataset(name, split, images, labels, tuple(ds.classes), mean, std, CROP_PADDING[name], str(root))


def dataset_key(name: str) -> str | None:
    """The `DATASETS` name that ``name`` spells (``fmnist``, ``CIFAR-10``, ...), or None for any other name."""
    key = name.lower().replace("_", "-")
    if key in ("fashion-mnist", "fmnist", "fashionmnist"):
        return "fashion-mnist"
    if key in ("cifar10", "cifar-10", "cifar100", "cifar-100"):
        return key.replace("-", "")
    return None


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False) -> ImageDataset:
    """Load a classification split by name: ``fashion-mnist``, ``cifar10`` or ``cifar100`` (`dataset_key`)."""
    key = dataset_key(name)
    if key == "fashion-mnist":
        return load_fashion_mnist(split, root)
    if key is not None:
        return load_cifar(key, split, root, download)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or the path of an image folder "
                     "(ImageFolder layout, see zoo.classification.folders)")
