"""Your own images: an image folder in torchvision's ``ImageFolder`` layout, or any torch ``Dataset``.

    data/                          data/train/<class>/*.png and data/test/<class>/*.png (or val/), or
      cat/ 001.png 002.jpg ...     data/<class>/*.png, split deterministically: in file-name order, the
      dog/ ...                     1st, 6th, 11th ... image of each class is a test image, the rest train

Images of any mode or bit depth are decoded as `zoo.images` does and resized to one size (default: the
first training image's); classes are the sorted folder names, as torchvision's ``ImageFolder`` orders
them. Normalisation statistics are the training images' per-channel mean and std unless given (a
model's card gives them back when it is evaluated).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .data import ImageDataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
TEST_EVERY = 5  # without train/ and test/ folders: images 0, 5, 10, ... of a class are test images



def class_key(name: str) -> str:
    """A class name compared without case and punctuation: the folder ``T-shirt-top`` (a folder name
    cannot hold '/') is the class ``T-shirt/top``."""
    return "".join(c for c in name.lower() if c.isalnum())

def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root} holds no class folders (ImageFolder layout: {root}/<class>/<image files>)")
    return folders


def _images_of(folder: Path) -> list[Path]:
    """The image files of a class folder (hidden files such as macOS's ``._x.png`` left out)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _interleave(per_class: list[list[tuple[Path, int]]]) -> list[tuple[Path, int]]:
    """One file of each class in turn, so that the first N examples (``--train-subset``) hold every class."""
    out: list[tuple[Path, int]] = []
    for k in range(max((len(f) for f in per_class), default=0)):
        out += [files[k] for files in per_class if k < len(files)]
    return out


def folder_split_files(root: str | os.PathLike, split: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """(classes, [(file, class index), ...]) of ``split`` (``train`` or ``test``) of an image folder.
    Raises FileNotFoundError / ValueError naming the folder for a missing folder, no classes, a class
    without images, or a split that leaves a class out."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    explicit = {"train": root / "train", "test": root / "test" if (root / "test").is_dir() else root / "val"}
    if explicit["train"].is_dir() and not explicit["test"].is_dir():
        raise ValueError(f"{root} has a train/ folder but no test/ or val/ folder beside it")
    if explicit["train"].is_dir():
        classes = [f.name for f in _class_folders(explicit["train"])]
        folders = _class_folders(explicit[split])
        unknown = [f.name for f in folders if f.name not in classes]
        if unknown:
            raise ValueError(f"{explicit[split]} has classes {unknown} that {explicit['train']} lacks")
        empty = [str(f) for f in _class_folders(explicit["train"]) if not _images_of(f)]
        if empty:
            raise ValueError(f"class folder(s) {', '.join(empty)} hold no images ({', '.join(IMAGE_SUFFIXES)})")
        per_class = [[(img, classes.index(f.name)) for img in _images_of(f)] for f in folders]
    else:
        folders = _class_folders(root)
        classes = [f.name for f in folders]
        per_class = []
        for i, f in enumerate(folders):
            images = _images_of(f)
            if len(images) < 2:
                raise ValueError(f"class folder {f} has {len(images)} image(s); each class needs at least 2 "
                                 "(one to train on, one to test), or use train/ and test/ folders")
            per_class.append([(img, i) for k, img in enumerate(images) if (k % TEST_EVERY == 0) == (split == "test")])
    if len(classes) < 2:
        raise ValueError(f"{root} has {len(classes)} class folder(s); classification needs at least 2 classes")
    files = _interleave(per_class)
    if not files:
        raise ValueError(f"the {split} split of {root} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return classes, files


def load_image_folder(root: str | os.PathLike, split: str = "train", *, channels: int = 3,
                      size: int | None = None, mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None, crop_padding: int | None = None) -> ImageDataset:
    """The ``split`` of an image folder as an in-memory `ImageDataset` named after the folder's path.

    ``size``: the side every image is resized to (default: the first training image's larger side);
    ``mean``/``std``: normalisation (default: the training images' per-channel statistics)."""
    from zoo.tasks import read_image

    root = Path(root).expanduser()
    classes, files = folder_split_files(root, split)
    if size is None:
        _, train_files = folder_split_files(root, "train")
        h, w = read_image(train_files[0][0], channels).shape[-2:]
        size = max(h, w)
    images = []
    for path, _ in files:
        images.append(read_image(path, channels, (size, size)))  # its errors name the file
    data = torch.stack(images)
    labels = torch.tensor([c for _, c in files], dtype=torch.int64)
    if mean is None or std is None:
        train = data if split == "train" else load_image_folder(root, "train", channels=channels, size=size,
                                                                mean=(0.0,) * channels, std=(1.0,) * channels).images
        pixels = train.float().div(255).transpose(0, 1).reshape(channels, -1)
        mean, std = tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())
    padding = crop_padding if crop_padding is not None else max(1, size // 8)
    return ImageDataset(str(root), split, data, labels, tuple(classes), tuple(mean), tuple(std), padding, str(root))


def from_torch_dataset(dataset: Any, name: str, split: str, *, channels: int = 3, size: int | None = None,
                       mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> ImageDataset:
    """A torch ``Dataset`` of ``(image, label)`` items (image: PIL, array or tensor of any bit depth) read
    into memory as an `ImageDataset` (its ``classes`` attribute names the classes, if it has one)."""
    from zoo.tasks import read_image

    if len(dataset) == 0:
        raise ValueError(f"dataset {name!r} is empty")
    items = [dataset[i] for i in range(len(dataset))]
    if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
        raise ValueError(f"dataset {name!r} must yield (image, label) pairs")
    raw = [label.item() if isinstance(label, torch.Tensor) else label for _, label in items]
    bad = [v for v in raw if isinstance(v, bool) or not float(v).is_integer() or v < 0]
    if bad:
        raise ValueError(f"dataset {name!r} has labels that are not class indices (integers >= 0): {bad[:5]}")
    first = read_image(items[0][0], channels)
    size = size or max(first.shape[-2:])
    images = torch.stack([read_image(img, channels, (size, size)) for img, _ in items])
    labels = torch.tensor([int(v) for v in raw], dtype=torch.int64)
    classes = tuple(getattr(dataset, "classes", None) or [str(i) for i in range(int(labels.max()) + 1)])
    if int(labels.max()) >= len(classes):
        raise ValueError(f"dataset {name!r} has label {int(labels.max())} but {len(classes)} classes ({list(classes)[:5]} ...)")
    if mean is None or std is None:
        pixels = images.float().div(255).transpose(0, 1).reshape(channels, -1)
        mean, std = tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())
    return ImageDataset(name, split, images, labels, classes, tuple(mean), tuple(std), max(1, size // 8))
