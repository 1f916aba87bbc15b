"""Segmentation data: images with a class per pixel, held in memory as tensors.

The default data set is the detection task's scenes (`zoo.detection.data.make_scenes`) with their
exact per-pixel masks: Fashion-MNIST items (10 classes) pasted on crops of real photographs, class 0
the background. Detection and segmentation read one generator, so a scene has the same pixels, boxes
and mask in both tasks. Cards trained on it say the scenes are synthetic compositions of real parts.

Folders of image + index-PNG mask pairs, the format of Pascal VOC (``JPEGImages`` +
``SegmentationClass``) and of Cityscapes (``leftImg8bit`` + ``gtFine`` ``*_labelTrainIds.png``), load
with `load_mask_folder`, `load_voc` and `load_cityscapes`; the value ``IGNORE_INDEX`` (255) marks
pixels that count in neither the loss nor the metrics (VOC's object borders, Cityscapes' void).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zoo.classification.data import FASHION_MNIST_CLASSES, DataNotFoundError

IGNORE_INDEX = 255
SCENES = "fmnist-scenes"
NUCLEI = "stardist-nuclei"
NUCLEI_CLASSES = ("background", "nucleus")
NUCLEI_LICENSE = ("BSD-3-Clause: the 2-D example image and its labels shipped in the PyPI package stardist 0.9.2 "
                  "(stardist/data/images/img2d.tif, mask2d.tif)")
SCENE_CLASSES = ("background", *FASHION_MNIST_CLASSES)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class SegmentationDataset:
    """A whole segmentation split in memory: ``images`` uint8 (N, 3, H, W), ``masks`` uint8 (N, H, W)
    holding a class index in [0, len(classes)) or ``IGNORE_INDEX`` per pixel.

    Raises ValueError (naming the data set and the values) for masks whose values exceed the classes,
    images and masks of different sizes, or an empty split."""

    name: str
    split: str
    images: torch.Tensor
    masks: torch.Tensor
    classes: tuple[str, ...]  # class names of mask values 0..C-1
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{self.name}/{self.split}" + (f" ({self.source})" if self.source else "")
        if len(self.images) == 0:
            raise ValueError(f"{where}: the split is empty (no images)")
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"{where}: images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.masks.dtype != torch.uint8 or self.masks.dim() != 3:
            raise ValueError(f"{where}: masks must be uint8 (N, H, W), got {self.masks.dtype} {tuple(self.masks.shape)}")
        if self.masks.shape != (self.images.shape[0], *self.images.shape[2:]):
            raise ValueError(f"{where}: images {tuple(self.images.shape)} and masks {tuple(self.masks.shape)} differ "
                             f"in count or size (masks must be (N, H, W) of the images' N, H, W)")
        if not 2 <= len(self.classes) <= IGNORE_INDEX:
            raise ValueError(f"{where}: need 2..{IGNORE_INDEX} class names, got {len(self.classes)}")
        if isinstance(self.classes, str) or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"{where}: classes must be distinct names, one per class index, got {self.classes!r}")
        values = self.masks.unique()
        bad = values[(values >= len(self.classes)) & (values != IGNORE_INDEX)]
        if len(bad):
            raise ValueError(f"{where}: mask values {bad.tolist()} exceed the {len(self.classes)} classes "
                             f"(0..{len(self.classes) - 1}, and {IGNORE_INDEX} = ignore)")
        if values.tolist() == [IGNORE_INDEX]:
            raise ValueError(f"{where}: every pixel of every mask is {IGNORE_INDEX} (ignore): nothing to learn or measure")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None,
              augment: bool = False, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``{"inputs": float (B, 3, H, W) in [0, 1], "labels": int64 (B, H, W), "index"}``; ``augment``
        flips half the images horizontally with their masks, drawn from ``generator`` on the CPU."""
        indices = indices.to(self.images.device)
        images, masks = self.images[indices], self.masks[indices]
        if augment:
            flip = torch.rand(len(indices), generator=generator) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
        out = {"inputs": images.float() / 255.0, "labels": masks.long(), "index": indices}
        if device is not None:
            out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        return out

    def loader(self, batch_size: int, device: torch.device | str | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Iterate over the split in order, unaugmented (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))), device=device)

    def subset(self, count: int) -> "SegmentationDataset":
        """The first ``count`` images (scenes are drawn independently, so any prefix is a fair sample)."""
        if not 1 <= count <= len(self):
            raise ValueError(f"a subset of {self.name}/{self.split} needs 1..{len(self)} images, got {count}")
        return SegmentationDataset(self.name, self.split, self.images[:count], self.masks[:count], self.classes,
                                   self.source, {**self.meta, "count": count})


def load_scenes(split: str = "train", count: int | None = None, seed: int = 0, size: int = 96,
                root: str | os.PathLike | None = None) -> SegmentationDataset:
    """The detection task's Fashion-MNIST scenes with their masks (cached with them, see
    `zoo.detection.data.load_scenes`); class 0 is the background."""
    from zoo.detection.data import SCENE_COUNTS
    from zoo.detection.data import load_scenes as load_detection_scenes

    count = SCENE_COUNTS.get(split, 0) if count is None else count
    scenes = load_detection_scenes(split, count, seed, size, root)
    return SegmentationDataset(SCENES, split, scenes.images, scenes.masks, SCENE_CLASSES, scenes.source,
                               {"seed": seed, "size": size, "count": count, **{k: v for k, v in scenes.meta.items()
                                                                                if k in ("items", "backgrounds")}})


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """An index mask file as a uint8 (H, W) array of class indices: a palette PNG's indices (VOC), a
    single-channel 8-bit image's values (Cityscapes ``*_labelTrainIds.png``). Raises ValueError for an
    RGB image or values above 255 (colour-coded masks must be converted to indices first)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not Path(path).is_file():
        raise FileNotFoundError(f"no mask file at {path}")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened) or opened  # turned as `read_image` turns its image
            if image.mode in ("P", "L", "1"):
                arr = np.asarray(image.convert("L") if image.mode == "1" else image)
            elif image.mode in ("I", "I;16", "I;16B", "I;16L"):
                arr = np.asarray(image)
                if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
                    raise ValueError(f"{path}: mask values from {int(arr.min())} to {int(arr.max())}; an index mask "
                                     f"holds 0..255 (255 = ignore)")
            else:
                raise ValueError(f"{path}: a mask must be a single-channel index image (palette 'P', grey 'L' or "
                                 f"16-bit), got mode {image.mode!r}; convert colour-coded or alpha masks to class "
                                 f"indices first")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable mask image ({e})") from None
    return (arr > 0).astype(np.uint8) if image.mode == "1" else arr.astype(np.uint8)


def _resize_pair(image: torch.Tensor, mask: np.ndarray, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    mask_t = torch.from_numpy(mask.copy())
    if size is None:
        return image, mask_t
    image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
    mask_t = F.interpolate(mask_t[None, None].float(), size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
    return image, mask_t


def load_pairs(pairs: Sequence[tuple[Path, Path]], classes: Sequence[str], *, size: int | None = None,
               name: str = "folder", split: str = "test", source: str = "") -> SegmentationDataset:
    """Image/mask file pairs -> a dataset; each pair is read, checked (same size, values within the
    classes or 255) and resized to ``size`` x ``size`` (images bilinear, masks nearest; None keeps the
    size, then every image must have the same one).

    Raises DataNotFoundError for no pairs, ValueError naming the file for a bad mask or a size mismatch."""
    from zoo.tasks import read_image

    if not pairs:
        raise DataNotFoundError(f"{source or name}: no image/mask pairs found for split {split!r}")
    images, masks = [], []
    for image_path, mask_path in pairs:
        image = read_image(image_path, 3)
        mask = read_mask(mask_path)
        if tuple(image.shape[-2:]) != mask.shape:
            raise ValueError(f"{image_path} is {image.shape[-1]}x{image.shape[-2]} (WxH) but its mask {mask_path} is "
                             f"{mask.shape[1]}x{mask.shape[0]}")
        bad = np.unique(mask)
        bad = bad[(bad >= len(classes)) & (bad != IGNORE_INDEX)]
        if len(bad):
            raise ValueError(f"{mask_path}: values {bad.tolist()} exceed the {len(classes)} classes "
                             f"(0..{len(classes) - 1}, and {IGNORE_INDEX} = ignore)")
        image, mask_t = _resize_pair(image, mask, size)
        if images and image.shape != images[0].shape:
            raise ValueError(f"{image_path} is {tuple(image.shape[-2:])} but {pairs[0][0]} is {tuple(images[0].shape[-2:])}: "
                             f"pass size= to resize every image to one size")
        images.append(image)
        masks.append(mask_t)
    return SegmentationDataset(name, split, torch.stack(images), torch.stack(masks), tuple(classes),
                               source or str(pairs[0][0].parent), {"count": len(images), "size": size})


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names, one per line, index 0 first (a UTF-8 file; a byte-order mark and trailing blank lines
    are dropped). Raises ValueError for blank lines between names, repeated names or fewer than 2."""
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if "" in names:
        raise ValueError(f"{path}: line {names.index('') + 1} is blank; every line names the class of its index")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated or len(names) < 2:
        raise ValueError(f"{path}: need at least 2 distinct class names, got {len(names)}" +
                         (f" (repeated: {repeated})" if repeated else ""))
    return names


def _by_stem(folder: Path, suffix: str, what: str) -> dict[str, Path]:
    """The image files of ``folder`` whose stem ends in ``suffix``, by their stem without it, sorted;
    ValueError when two files share a stem (one mask per image)."""
    found: dict[str, Path] = {}
    for p in _images_in(folder):
        if suffix and not p.stem.endswith(suffix):
            continue
        key = p.stem[: len(p.stem) - len(suffix)] if suffix else p.stem
        if key in found:
            raise ValueError(f"two {what} for {key!r} in {folder}: {found[key].name} and {p.name} (one mask per image)")
        found[key] = p
    return found


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def load_mask_folder(image_dir: str | os.PathLike, mask_dir: str | os.PathLike, classes: Sequence[str], *,
                     size: int | None = None, name: str = "folder", split: str = "test",
                     image_suffix: str = "", mask_suffix: str = "") -> SegmentationDataset:
    """Images in ``image_dir`` paired with the index masks of the same stem in ``mask_dir``
    (``a.jpg`` <-> ``a.png``; with suffixes, ``a{image_suffix}.png`` <-> ``a{mask_suffix}.png``).

    Raises DataNotFoundError for a missing folder or an image without its mask."""
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataNotFoundError(f"no folder {folder}")
    if isinstance(classes, str):
        raise TypeError(f"classes must be a list of names, got the string {classes!r}")
    masks = _by_stem(mask_dir, mask_suffix, "masks")
    pairs = []
    for key, image in _by_stem(image_dir, image_suffix, "images").items():
        if key not in masks:
            raise DataNotFoundError(f"{image} has no mask {key}{mask_suffix}.* in {mask_dir}")
        pairs.append((image, masks[key]))
    return load_pairs(pairs, classes, size=size, name=name, split=split, source=str(image_dir))


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")


def load_voc(root: str | os.PathLike, split: str = "val", *, size: int | None = 256) -> SegmentationDataset:
    """Pascal VOC 2012 segmentation: ``root/ImageSets/Segmentation/{split}.txt`` lists the ids,
    ``JPEGImages/{id}.jpg`` the images, ``SegmentationClass/{id}.png`` the palette masks (255 = border)."""
    root = Path(root).expanduser()
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DataNotFoundError(f"no VOC split list {listing} (root must be VOCdevkit/VOC2012)")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"{len(missing)} files of {listing} are missing, e.g. {missing[0]}")
    return load_pairs(pairs, VOC_CLASSES, size=size, name="voc2012", split=split, source=str(root))


def load_cityscapes(root: str | os.PathLike, split: str = "val", *, size: int | None = 256) -> SegmentationDataset:
    """Cityscapes fine annotations with train ids (``gtFine/{split}/*/*_gtFine_labelTrainIds.png``, made by
    cityscapesscripts' createTrainIdLabelImgs; 255 = void) beside ``leftImg8bit/{split}/*/*_leftImg8bit.png``."""
    root = Path(root).expanduser()
    masks = sorted((root / "gtFine" / split).glob("*/*_gtFine_labelTrainIds.png"))
    if not masks:
        raise DataNotFoundError(f"no {root}/gtFine/{split}/*/*_gtFine_labelTrainIds.png (run cityscapesscripts' "
                                f"createTrainIdLabelImgs first)")
    pairs = []
    for m in masks:
        image = root / "leftImg8bit" / split / m.parent.name / m.name.replace("_gtFine_labelTrainIds", "_leftImg8bit")
        if not image.is_file():
            raise DataNotFoundError(f"{m} has no image {image}")
        pairs.append((image, m))
    return load_pairs(pairs, CITYSCAPES_CLASSES, size=size, name="cityscapes", split=split, source=str(root))


def _stardist_images() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("stardist")  # located, not imported (stardist imports TensorFlow)
    folder = Path(spec.origin).parent / "data" / "images" if spec is not None and spec.origin else None
    if folder is None or not (folder / "img2d.tif").is_file():
        raise DataNotFoundError("the nuclei image comes with the PyPI package stardist: pip install --no-deps "
                                "stardist==0.9.2 (scripts/setup.sh does; only its data files are read)")
    return folder


def load_nuclei(split: str = "train", tile: int = 64) -> SegmentationDataset:
    """A real-mask check: the labelled fluorescence-nuclei image shipped with stardist (512 x 512, 125
    nuclei; ``NUCLEI_LICENSE``), cut into ``tile`` x ``tile`` tiles, nucleus vs background. The left three
    quarters of the image are the train split (48 tiles of 64 px), the right quarter the test split (16).
    The grey image is scaled to 0..255 by its own minimum and maximum and repeated to RGB."""
    from PIL import Image

    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    folder = _stardist_images()
    image = np.asarray(Image.open(folder / "img2d.tif")).astype(np.float64)
    labels = np.asarray(Image.open(folder / "mask2d.tif"))
    if image.shape != labels.shape or 512 % tile:
        raise ValueError(f"unexpected nuclei files: image {image.shape}, mask {labels.shape}, tile {tile}")
    grey = np.round(255 * (image - image.min()) / max(1e-9, image.max() - image.min())).astype(np.uint8)
    mask = (labels > 0).astype(np.uint8)
    cut = 512 * 3 // 4
    columns = range(0, cut, tile) if split == "train" else range(cut, 512, tile)
    tiles = [(y, x) for y in range(0, 512, tile) for x in columns]
    images = torch.stack([torch.from_numpy(grey[y:y + tile, x:x + tile].copy()).expand(3, tile, tile) for y, x in tiles])
    masks = torch.stack([torch.from_numpy(mask[y:y + tile, x:x + tile].copy()) for y, x in tiles])
    return SegmentationDataset(NUCLEI, split, images.contiguous(), masks, NUCLEI_CLASSES, str(folder),
                               {"tile": tile, "count": len(tiles), "license": NUCLEI_LICENSE})
