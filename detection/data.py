"""Detection data: boxes of real objects on real photographs, held in memory as tensors.

No detection data set (COCO, VOC, KITTI) can be had on the machines kdzoo is built on, so the
default data set is synthetic *scenes* made of real parts, as ``../shared/DATA.md`` suggests:
Fashion-MNIST items (real photographs of clothes, 10 classes; train items for the train split, test
items for the test split) pasted, scaled and tinted, on random crops of two real photographs
(scikit-learn's ``china.jpg`` and ``flower.jpg``). Every box is exact: it is the item's tight
bounding box after scaling. Model cards trained on it say so.

Boxes are ``(x1, y1, x2, y2)`` in pixels, padded per image to a fixed count with label 0 (torchvision's
detectors reserve 0 for the background), so that a batch is plain tensors the trainer can shard.

The same generator writes each scene's exact per-pixel class mask (the segmentation task's data, see
`zoo.segmentation.data`): a pixel belongs to an item where the item's alpha is at least
``MASK_ALPHA`` (it shows more than the photograph under it), to the background (0) elsewhere; a later
item covers an earlier one. Drawing the masks takes nothing from the random stream, so the scenes'
images and boxes are the same with or without them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zoo.classification.data import FASHION_MNIST_CLASSES, DataNotFoundError, load_fashion_mnist

SCENES = "fmnist-scenes"
SCENE_SIZE = 96
MAX_OBJECTS = 3
OBJECT_SIZES = (20, 44)  # side of the pasted 28x28 item, in pixels
SCENE_COUNTS = {"train": 4000, "test": 1000}
MASK_ALPHA = 0.5  # an item's pixels in the mask: where its alpha (1.5 x its grey level, capped at 1) reaches this


@dataclass
class DetectionDataset:
    """A whole detection split in memory: ``images`` uint8 (N, 3, H, W), ``boxes`` float (N, K, 4) in
    pixels, ``labels`` int64 (N, K) with classes 1..C and 0 for the padding rows."""

    name: str
    split: str
    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]  # class names of labels 1..C
    source: str = ""
    meta: dict = field(default_factory=dict)
    masks: torch.Tensor | None = None  # uint8 (N, H, W): 0 background, 1..C the item's class (scenes only)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.boxes.shape[:1] != (n,) or self.boxes.dim() != 3 or self.boxes.shape[2] != 4:
            raise ValueError(f"boxes must be (N, K, 4) with N = {n}, got {tuple(self.boxes.shape)}")
        if self.labels.shape != self.boxes.shape[:2]:
            raise ValueError(f"labels must be (N, K) = {tuple(self.boxes.shape[:2])}, got {tuple(self.labels.shape)}")
        if len(self.labels) and int(self.labels.max()) > len(self.classes):
            raise ValueError(f"label {int(self.labels.max())} but only {len(self.classes)} class names")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """Classes including the background (torchvision's ``num_classes``)."""
        return len(self.classes) + 1

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None,
              augment: bool = False, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``{"inputs": float images in [0, 1], "boxes", "labels", "index"}``; ``augment`` flips half the
        images horizontally (with their boxes), drawn from ``generator`` on the CPU."""
        indices = indices.to(self.images.device)
        images, boxes, labels = self.images[indices], self.boxes[indices].clone(), self.labels[indices]
        if augment:
            flip = torch.rand(len(indices), generator=generator) < 0.5
            width = images.shape[-1]
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            flipped = torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], -1)
            boxes = torch.where((flip[:, None] & (labels > 0))[..., None], flipped, boxes)
        out = {"inputs": images.float() / 255.0, "boxes": boxes, "labels": labels, "index": indices}
        if device is not None:
            out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        return out

    def loader(self, batch_size: int, device: torch.device | str | None = None):
        """Iterate over the split in order, unaugmented (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))), device=device)


def targets_from_batch(boxes: torch.Tensor, labels: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Padded ``(B, K, 4)`` boxes and ``(B, K)`` labels -> torchvision's list of per-image target dicts."""
    keep = labels > 0
    return [{"boxes": b[k], "labels": lab[k]} for b, lab, k in zip(boxes, labels, keep)]


def _backgrounds() -> list[torch.Tensor]:
    """The two real photographs bundled with scikit-learn, as uint8 (3, H, W)."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise ImportError("the scene backgrounds come with scikit-learn: pip install 'kdzoo[detection]'") from None
    return [torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous() for img in load_sample_images().images]


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    if len(others) == 0:
        return torch.zeros(0)
    lt = torch.maximum(box[:2], others[:, :2])
    rb = torch.minimum(box[2:], others[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(others) - inter)


def make_scenes(split: str = "train", count: int | None = None, seed: int = 0, size: int = SCENE_SIZE,
                root: str | os.PathLike | None = None, progress: bool = True) -> DetectionDataset:
    """Generate ``count`` scenes of 1..3 Fashion-MNIST items on crops of real photographs.

    Deterministic in (split, count, seed, size). Items overlap by at most IoU 0.2. An item's alpha is
    its own grey level, so the cloth's texture shows, tinted by a random colour. The dataset's ``masks``
    hold every scene's class per pixel (``MASK_ALPHA``).
    """
    if split not in SCENE_COUNTS:
        raise ValueError(f"split must be one of {tuple(SCENE_COUNTS)}, got {split!r}")
    count = SCENE_COUNTS[split] if count is None else count
    if count < 1 or size < 2 * OBJECT_SIZES[1]:
        raise ValueError(f"need count >= 1 and size >= {2 * OBJECT_SIZES[1]}, got {count}, {size}")
    items = load_fashion_mnist(split, root)
    photos = _backgrounds()
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    boxes = torch.zeros(count, MAX_OBJECTS, 4)
    labels = torch.zeros(count, MAX_OBJECTS, dtype=torch.long)
    masks = torch.zeros(count, size, size, dtype=torch.uint8)
    for n in tqdm(range(count), desc=f"scenes/{split}", disable=not progress, leave=False):
        photo = photos[int(torch.randint(len(photos), (1,), generator=g))]
        y0 = int(torch.randint(photo.shape[1] - size + 1, (1,), generator=g))
        x0 = int(torch.randint(photo.shape[2] - size + 1, (1,), generator=g))
        canvas = photo[:, y0:y0 + size, x0:x0 + size].float() / 255.0
        if torch.rand(1, generator=g) < 0.5:
            canvas = canvas.flip(-1)
        placed: list[torch.Tensor] = []
        for k in range(int(torch.randint(1, MAX_OBJECTS + 1, (1,), generator=g))):
            item = int(torch.randint(len(items), (1,), generator=g))
            side = int(torch.randint(OBJECT_SIZES[0], OBJECT_SIZES[1] + 1, (1,), generator=g))
            grey = F.interpolate(items.images[item][None].float() / 255.0, size=(side, side), mode="bilinear",
                                 align_corners=False)[0, 0].clamp(0, 1)
            ys, xs = torch.nonzero(grey > 0.05, as_tuple=True)
            if len(ys) == 0:
                continue
            for _ in range(20):  # a spot that overlaps the items already placed by at most IoU 0.2
                oy = int(torch.randint(size - side + 1, (1,), generator=g))
                ox = int(torch.randint(size - side + 1, (1,), generator=g))
                box = torch.tensor([ox + xs.min(), oy + ys.min(), ox + xs.max() + 1, oy + ys.max() + 1], dtype=torch.float)
                if not placed or _iou(box, torch.stack(placed)).max() <= 0.2:
                    break
            else:
                continue
            colour = 0.25 + 0.75 * torch.rand(3, 1, 1, generator=g)
            alpha = (grey * 1.5).clamp(max=1.0)
            patch = canvas[:, oy:oy + side, ox:ox + side]
            canvas[:, oy:oy + side, ox:ox + side] = patch * (1 - alpha) + colour * grey * alpha
            boxes[n, len(placed)] = box
            labels[n, len(placed)] = int(items.labels[item]) + 1
            region = masks[n, oy:oy + side, ox:ox + side]
            region[alpha >= MASK_ALPHA] = int(items.labels[item]) + 1
            placed.append(box)
        images[n] = (canvas * 255).round().to(torch.uint8)
    return DetectionDataset(SCENES, split, images, boxes, labels, FASHION_MNIST_CLASSES, items.source,
                            _scene_meta(split, count, seed, size), masks)


def _scene_meta(split: str, count: int, seed: int, size: int) -> dict:
    return {"seed": seed, "size": size, "count": count, "items": f"fashion-mnist/{split}",
            "backgrounds": "scikit-learn china.jpg, flower.jpg"}


def scenes_cache_path(split: str, count: int, seed: int, size: int, root: str | os.PathLike | None = None) -> Path:
    """Where `load_scenes` caches the scenes: under ``$KDZOO_HOME/data``, named by the generator's arguments and
    by the Fashion-MNIST files they are made from (their resolved paths, sizes and modification times), so that
    scenes made from another copy (``root``, ``$KDZOO_DATA``) never stand in for these."""
    import hashlib

    from zoo.classification.data import fashion_mnist_files
    from zoo.hub import cache_dir

    stats = [(p.resolve(), p.stat()) for p in fashion_mnist_files(split, root)]
    source = "|".join(f"{path}:{st.st_size}:{st.st_mtime_ns}" for path, st in stats)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return cache_dir() / "data" / SCENES / f"{split}-n{count}-s{seed}-{size}px-fm{digest}.safetensors"


def load_scenes(split: str = "train", count: int | None = None, seed: int = 0, size: int = SCENE_SIZE,
                root: str | os.PathLike | None = None, cache: bool = True) -> DetectionDataset:
    """`make_scenes`, cached as safetensors under ``$KDZOO_HOME/data`` (written atomically; a cache written
    before scenes had masks is made again)."""
    from safetensors.torch import load_file, save

    from zoo.io import atomic_write_bytes

    if split not in SCENE_COUNTS:
        raise ValueError(f"split must be one of {tuple(SCENE_COUNTS)}, got {split!r}")
    count = SCENE_COUNTS[split] if count is None else count
    path = scenes_cache_path(split, count, seed, size, root)
    if cache and path.exists():
        t = load_file(str(path))
        if "masks" in t:
            return DetectionDataset(SCENES, split, t["images"], t["boxes"], t["labels"], FASHION_MNIST_CLASSES,
                                    str(path), _scene_meta(split, count, seed, size), t["masks"])
    data = make_scenes(split, count, seed, size, root)
    if cache:
        atomic_write_bytes(path, save({"images": data.images, "boxes": data.boxes, "labels": data.labels,
                                       "masks": data.masks}))
    return data


def _resized(image, boxes: list[list[float]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A PIL image resized to ``size`` x ``size`` (uint8 (3, H, W)) and its boxes scaled with it."""
    from zoo.tasks import read_image

    width, height = image.size
    pixels = read_image(image, 3, (size, size))
    scale = torch.tensor([size / width, size / height, size / width, size / height])
    return pixels, torch.tensor(boxes, dtype=torch.float).reshape(-1, 4) * scale


def _stack(name: str, split: str, images: list[torch.Tensor], boxes: list[torch.Tensor], labels: list[torch.Tensor],
           classes: tuple[str, ...], source: str) -> DetectionDataset:
    """Pad every image's boxes to the largest count (label 0) and build the dataset."""
    if not images:
        raise ValueError(f"{source}: no images with annotations")
    k = max(1, max(len(b) for b in boxes))
    padded_boxes = torch.zeros(len(images), k, 4)
    padded_labels = torch.zeros(len(images), k, dtype=torch.long)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        padded_boxes[i, :len(b)], padded_labels[i, :len(lab)] = b, lab
    return DetectionDataset(name, split, torch.stack(images), padded_boxes, padded_labels, classes, source,
                            {"size": int(images[0].shape[-1]), "count": len(images)})


def load_coco(annotation_file: str | os.PathLike, image_dir: str | os.PathLike, size: int = SCENE_SIZE,
              split: str = "val", name: str = "coco") -> DetectionDataset:
    """A COCO-format detection set (``instances_*.json`` + its image folder), read with pycocotools.

    Images are resized to ``size`` x ``size`` (boxes scaled with them) and held in memory, so this suits
    small sets or small sizes; crowd annotations are skipped. COCO's category ids map to labels 1..C in
    id order, and the class names come from the file.
    """
    from PIL import Image

    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise ImportError("COCO files are read with pycocotools: pip install 'kdzoo[detection]'") from None
    if not Path(annotation_file).is_file():
        raise DataNotFoundError(f"no COCO annotation file at {annotation_file}")
    coco = COCO(str(annotation_file))
    category_ids = sorted(coco.getCatIds())
    label_of = {c: i + 1 for i, c in enumerate(category_ids)}
    classes = tuple(coco.loadCats(c)[0]["name"] for c in category_ids)
    images, boxes, labels = [], [], []
    for info in coco.loadImgs(sorted(coco.getImgIds())):
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=False)) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        path = Path(image_dir) / info["file_name"]
        if not path.is_file():
            raise DataNotFoundError(f"{annotation_file} names {info['file_name']}, which is not in {image_dir}")
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        pixels, scaled = _resized(Image.open(path), xyxy, size)
        images.append(pixels)
        boxes.append(scaled)
        labels.append(torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.long))
    return _stack(name, split, images, boxes, labels, classes, str(annotation_file))


def load_voc(directory: str | os.PathLike, size: int = SCENE_SIZE, classes: tuple[str, ...] | None = None,
             split: str = "test", name: str = "voc") -> DetectionDataset:
    """Pascal-VOC XML annotations (one ``.xml`` per image, as VOC's ``Annotations/`` or deepforest's data).

    The image is the XML's ``<filename>`` beside it (or in a sibling ``JPEGImages/``). ``classes`` fixes
    the label order; by default the names found, sorted. Images are resized as in `load_coco`.
    """
    import xml.etree.ElementTree as ET

    from PIL import Image

    files = sorted(Path(directory).glob("*.xml"))
    if not files:
        raise DataNotFoundError(f"no Pascal-VOC .xml annotation files in {directory}")
    parsed = []
    for f in files:
        root = ET.parse(f).getroot()
        objects = [(o.findtext("name").strip(), [float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
                   for o in root.iter("object")]
        parsed.append((f, root.findtext("filename"), objects))
    names = classes or tuple(sorted({n for _, _, objs in parsed for n, _ in objs}))
    images, boxes, labels = [], [], []
    for f, filename, objects in parsed:
        candidates = [f.parent / filename, f.parent.parent / "JPEGImages" / filename] if filename else []
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise DataNotFoundError(f"{f} names image {filename!r}, found neither beside it nor in ../JPEGImages")
        unknown = {n for n, _ in objects} - set(names)
        if unknown:
            raise ValueError(f"{f}: classes {sorted(unknown)} are not among {names}")
        pixels, scaled = _resized(Image.open(path), [b for _, b in objects], size)
        images.append(pixels)
        boxes.append(scaled)
        labels.append(torch.tensor([names.index(n) + 1 for n, _ in objects], dtype=torch.long))
    return _stack(name, split, images, boxes, labels, tuple(names), str(directory))
