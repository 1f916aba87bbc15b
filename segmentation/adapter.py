"""The segmentation task adapter: LR-ASPP builders, masks from images, mIoU evaluation, and the data of runs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.registry import ModelCard
from zoo.tasks import TaskAdapter, bundled_samples, model_device, read_image

from .data import (IGNORE_INDEX, NUCLEI, SCENES, SegmentationDataset, load_cityscapes, load_mask_folder, load_nuclei,
                   load_scenes, load_voc, read_classes)
from .evaluate import evaluate
from .models import TEACHERS, build_segmenter

SAMPLES_DIR = Path(__file__).parent / "samples"
SCENE_SPLITS = {"train": 4000, "test": 1000}


def voc_palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map, (n, 3) uint8: class k's colour spreads the bits of k over R, G and B
    from the most significant bit down (class 0 black, 1 dark red, 2 dark green, ...)."""
    palette = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[k] = (r, g, b)
    return palette


class SegmentationPreprocessor:
    """Image paths, PIL images, arrays or tensors -> float (N, 3, H, W) in [0, 1] at the card's input
    size (the model normalises inside); ``sizes`` gives each input's original (H, W)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.height, self.width = size

    def __repr__(self) -> str:
        return f"SegmentationPreprocessor(size={(self.height, self.width)}, RGB, pixels / 255)"

    def images(self, inputs: Any) -> list[torch.Tensor]:
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise ValueError("no inputs given")
        return [read_image(x, 3) for x in items]

    def __call__(self, inputs: Any) -> torch.Tensor:
        return torch.stack([read_image(x, 3, (self.width, self.height)) for x in self.images(inputs)]).float() / 255.0


def _folder_data(root: Path, train_subset: int | None) -> tuple[SegmentationDataset, SegmentationDataset]:
    """VOC (``ImageSets/Segmentation``), Cityscapes (``gtFine``) or ``{train,test}/{images,masks}`` +
    ``classes.txt`` folders."""
    root = root.resolve()  # cards record the absolute folder, so `zoo eval` finds it from anywhere
    if (root / "ImageSets" / "Segmentation").is_dir():
        train, test = load_voc(root, "train"), load_voc(root, "val")
    elif (root / "gtFine").is_dir():
        train, test = load_cityscapes(root, "train"), load_cityscapes(root, "val")
    else:
        names = root / "classes.txt"
        if not names.is_file():
            raise FileNotFoundError(f"{root} is neither a VOC nor a Cityscapes root, and has no classes.txt (one class "
                                    f"name per line, index 0 first) beside train/ and test/ image and mask folders")
        classes = read_classes(names)
        first = load_mask_folder(root / "train" / "images", root / "train" / "masks", classes, split="train")
        size = first.image_size[0] if first.image_size[0] == first.image_size[1] else None
        train, test = first, load_mask_folder(root / "test" / "images", root / "test" / "masks", classes, split="test",
                                              size=size)
    train.name = test.name = str(root)
    return (train.subset(train_subset) if train_subset else train), test


def _source_coordinates(size_out: int, size_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``size_out`` output positions: the two input positions bilinear interpolation reads and the
    second one's weight, as PyTorch computes them with align_corners=False."""
    at = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / max(size_out, 1)) - 0.5).clamp(min=0)
    first = at.floor().long().clamp(max=size_in - 1)
    return first, (first + 1).clamp(max=size_in - 1), (at - first).float()


def upsampled_argmax(logits: torch.Tensor, height: int, width: int, rows: int = 256, budget: int = 1 << 21
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The class mask of ``logits`` (C, h, w) bilinearly resized to (``height``, ``width``) (align_corners=False,
    as ``F.interpolate``), made a tile at a time (at most ``rows`` output rows, and at most ``budget`` values
    of classes x pixels) so that memory grows with the image's pixels (one byte each) and not with pixels x
    classes x 4 bytes: a 12-megapixel photo needed 2.2 GB for its full-size logits, and a very wide one as much
    for a strip of rows. Returns the mask, uint8 (height, width) (int64 beyond 256 classes), and per class the
    sum of its pixels' softmax probability (float64 (C,)), from which the mean confidence of a class follows."""
    classes, h, w = logits.shape
    mask = torch.empty(height, width, dtype=torch.uint8 if classes <= 256 else torch.long)
    sums = torch.zeros(classes, dtype=torch.float64)
    y0, y1, wy = _source_coordinates(height, h)
    x0, x1, wx = _source_coordinates(width, w)
    cols = max(1, min(width, budget // (classes * h)))  # the tile of logits resized across: (C, h, cols)
    rows = max(1, min(rows, budget // (classes * cols)))
    for left in range(0, width, cols):
        c = slice(left, min(left + cols, width))
        weight_x = wx[c][None, None, :]
        across = logits[:, :, x0[c]] * (1 - weight_x) + logits[:, :, x1[c]] * weight_x  # (C, h, cols)
        for top in range(0, height, rows):
            r = slice(top, min(top + rows, height))
            weight_y = wy[r][None, :, None]
            tile = across[:, y0[r]] * (1 - weight_y) + across[:, y1[r]] * weight_y  # (C, rows, cols)
            confidence, found = tile.softmax(0).max(0)
            mask[r, c] = found.to(mask.dtype)
            sums += torch.bincount(found.flatten(), weights=confidence.flatten().double(), minlength=classes)
    return mask, sums


class SegmentationAdapter(TaskAdapter):
    task = "segmentation"

    def __init__(self) -> None:
        self._saved: dict[Path, set[str]] = {}  # stems written by save_prediction in this process, per folder

    # ------------------------------------------------------------------ models
    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        return build_segmenter(architecture, **config)

    def preprocessor(self, card: ModelCard, directory: str | os.PathLike | None = None) -> Callable[[Any], Any]:
        size = card.preprocessing.get("input_size", [3, 96, 96])
        return SegmentationPreprocessor((int(size[1]), int(size[2])))

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per image: ``mask`` (uint8 tensor (H, W) of class indices at the image's own size),
        ``classes`` ({name: fraction of the pixels}, largest first), and ``label`` / ``index`` /
        ``score``: the largest class (other than class 0 when it is named background) and its pixels'
        mean softmax probability. ``top_k`` > 1 lists that many classes.

        Each image is resized to the card's input size by ``model.preprocess`` (PIL bilinear) without keeping
        its aspect ratio, and the logits are resized back to (H, W); crop or pad a very non-square image first."""
        pre = model.preprocess
        labels = list(model.card.labels) or [str(i) for i in range(model.card.config.get("num_classes", 0))]
        results = []
        for image in pre.images(inputs):
            h, w = image.shape[-2:]
            x = pre([image])  # the documented preprocessing (PIL bilinear), so an ONNX graph fed by it agrees
            logits = model(x.to(model_device(model))).float().cpu()[0]
            mask, confidence_sum = upsampled_argmax(logits, h, w)
            counts = torch.bincount(mask.flatten().long(), minlength=logits.shape[0]).double() / mask.numel()
            order = [int(c) for c in counts.argsort(descending=True) if counts[c] > 0]
            background = labels[0].lower() in ("background", "bg", "_background_")
            found = [c for c in order if c != 0 or not background] or [0]
            best = found[0]
            classes = {labels[c]: round(float(counts[c]), 6) for c in order}
            result = {"label": labels[best], "index": best,
                      "score": round(float(confidence_sum[best] / (counts[best] * mask.numel())), 6),
                      "classes": classes, "mask": mask}
            if top_k > 1:
                result["top_k"] = [{"label": labels[c], "index": c, "fraction": round(float(counts[c]), 6)}
                                   for c in order[:top_k]]
            results.append(result)
        return results

    def save_prediction(self, prediction: dict[str, Any], source: Any, directory: Path) -> list[Path]:
        """``<name>.mask.png`` (the class indices as a palette PNG: an index mask that also shows in
        colour, VOC's palette; for a model of more than 256 classes, whose masks are int64, a 16-bit grey PNG of the
        indices) and ``<name>.overlay.png`` (the image with the classes' colours at 50% over every pixel not of
        class 0), ``<name>`` being the input file's stem (``input`` otherwise)."""
        import io

        from PIL import Image

        from zoo.io import atomic_write_bytes

        paletted = prediction["mask"].dtype == torch.uint8  # a model of up to 256 classes (`upsampled_argmax`)
        mask = prediction["mask"].numpy()
        classes = int(mask.max()) + 1 if mask.size else 1
        if classes > 65536:
            raise ValueError(f"a mask of {classes} classes cannot be saved as a PNG (at most 65536)")
        palette = voc_palette(max(256, classes))
        stem = Path(source).stem if isinstance(source, (str, os.PathLike)) else "input"
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"--save {directory}: a file is there, not a folder")
        taken = self._saved.setdefault(directory.resolve(), set())  # two inputs of one stem in one call
        base, k = stem, 1
        while stem in taken:
            stem, k = f"{base}-{k}", k + 1
        taken.add(stem)
        image = read_image(source, 3).permute(1, 2, 0).numpy().astype(np.float32)
        colours = palette.reshape(-1, 3)[mask].astype(np.float32)
        blend = np.where((mask > 0)[..., None], 0.5 * image + 0.5 * colours, image)
        written = []
        if paletted:  # a palette PNG: indices that also show in colour (the format follows the model, not the image)
            index_png = Image.fromarray(mask.astype(np.uint8), mode="P")
            index_png.putpalette(palette[:256].flatten().tolist())
        else:  # more classes than a palette holds: the indices as a 16-bit grey PNG
            index_png = Image.fromarray(mask.astype(np.uint16))
        for suffix, picture in (("mask", index_png), ("overlay", Image.fromarray(blend.round().astype(np.uint8)))):
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            path = Path(directory) / f"{stem}.{suffix}.png"
            atomic_write_bytes(path, buffer.getvalue())
            written.append(path)
        return written

    def describe(self, prediction: dict[str, Any]) -> str:
        shown = [f"{name} {fraction * 100:.1f}%" for name, fraction in prediction["classes"].items()]
        return f"mask {tuple(prediction['mask'].shape)}: " + ", ".join(shown)

    def evaluate(self, model: nn.Module, card: ModelCard, *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]:
        if card.dataset == SCENES:
            size = card.preprocessing.get("input_size", [3, 96, 96])[-1]
            data = load_scenes(card.split, SCENE_SPLITS.get(card.split), 0, int(size), root=data_root)
        elif card.dataset == NUCLEI:
            data = load_nuclei(card.split, int(card.preprocessing.get("input_size", [3, 64, 64])[-1]))
        elif os.path.isdir(card.dataset):
            train, test = _folder_data(Path(card.dataset), None)
            data = test if card.split == test.split else train
        else:
            raise ValueError(f"no loader for segmentation dataset {card.dataset!r} (known: {SCENES}, {NUCLEI}, or a folder)")
        return evaluate(model.to(device), data, device=device)

    def sample_inputs(self, card: ModelCard) -> list[Any]:
        """Bundled test scenes of the card's dataset (the default input of `zoo predict`)."""
        return bundled_samples(SAMPLES_DIR, card.dataset)

    # ------------------------------------------------------------------ runs (zoo.runner)
    def task_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Per-pixel cross-entropy of (N, C, H, W) logits against (N, H, W) masks, 255 ignored; for an mmseg
        model (the OpenMMLab bridge) its own loss dict, summed (`zoo.segmentation.mm.mm_task_loss`)."""
        if hasattr(logits, "mm_loss"):
            from .mm import mm_task_loss

            return mm_task_loss(logits, batch["labels"])
        return F.cross_entropy(logits.float(), batch["labels"], ignore_index=IGNORE_INDEX)

    def datasets(self, data: Any = None, *, train_subset: int | None = None) -> tuple[Any, Any]:
        """(train, test): ``None`` / ``"fmnist-scenes"`` the scenes (4,000 / 1,000), ``"stardist-nuclei"`` the
        real nuclei tiles (48 / 16), a folder path a VOC
        root, a Cityscapes root or a ``{train,test}/{images,masks}`` folder with ``classes.txt``, or a
        (train, test) pair of `SegmentationDataset`."""
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, SegmentationDataset) for d in data):
            train, test = data
            return (train.subset(train_subset) if train_subset else train), test
        if data is None or data == SCENES:
            train = load_scenes("train", SCENE_SPLITS["train"])
            return (train.subset(train_subset) if train_subset else train), load_scenes("test", SCENE_SPLITS["test"])
        if data == NUCLEI:
            train = load_nuclei("train")
            return (train.subset(train_subset) if train_subset else train), load_nuclei("test")
        if isinstance(data, (str, os.PathLike)) and Path(data).expanduser().is_dir():
            return _folder_data(Path(data).expanduser(), train_subset)
        raise ValueError(f"unknown segmentation data {data!r}: use {SCENES!r}, {NUCLEI!r}, a folder (VOC, Cityscapes, or "
                         f"train/ and test/ with images/ and masks/ and classes.txt), or a (train, test) pair "
                         f"of SegmentationDataset")

    def build_student(self, architecture: str, train: Any) -> nn.Module:
        """An untrained `Segmenter` for ``train``'s classes; the teacher architecture starts from its
        ImageNet backbone."""
        return build_segmenter(architecture, train.num_classes, pretrained_backbone=architecture in TEACHERS)

    def evaluate_model(self, model: nn.Module, data: Any, *, device: Any = "cpu") -> dict[str, float]:
        return {k: v for k, v in evaluate(model, data, device=device).items() if k != "iou"}

    def card_fields(self, train: Any) -> dict[str, Any]:
        fields = {"preprocessing": {"input_size": [3, *train.image_size], "scale": "pixels / 255",
                                    "normalisation": "ImageNet mean and std, inside the model"},
                  "labels": list(train.classes)}
        if train.meta.get("license"):
            fields["extra"] = {"data_license": train.meta["license"]}
        return fields


    @property
    def protocol(self) -> Any:
        """The twin protocol's plug-in: each arm a run of the generic run path (`zoo.protocol.RunnerProtocol`)."""
        from zoo.protocol import RunnerProtocol

        return RunnerProtocol(self, SCENES)


ADAPTER = SegmentationAdapter()
