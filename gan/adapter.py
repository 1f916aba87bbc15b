"""The gan task adapter: image-to-image generators for `zoo.load`, `zoo.predict`, `zoo eval` and `zoo predict --save`."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from zoo.registry import ModelCard
from zoo.tasks import TaskAdapter, read_image

from .data import PHOTOS
from .models import MIN_SIDE, build_generator


class GanPreprocessor:
    """Image paths, PIL images, arrays or tensors -> a list of float (1, 3, H, W) images in [-1, 1]
    (``pixels / 127.5 - 1``), one per input at its own size.

    Grey and RGBA images are converted to RGB (luma repeated; alpha dropped); ``max_side`` (if set)
    resizes an image whose longer side exceeds it, keeping the aspect ratio. A side under `MIN_SIDE`
    pixels is an error; other sizes are fine (the generator pads to a multiple of 4 and crops back).
    """

    def __init__(self, max_side: int | None = None) -> None:
        self.max_side = max_side

    def __repr__(self) -> str:
        return f"GanPreprocessor(RGB, pixels / 127.5 - 1, max_side={self.max_side})"

    def images(self, inputs: Any) -> list[torch.Tensor]:
        """The inputs as uint8 (3, H, W) tensors (after ``max_side``)."""
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise ValueError("no inputs given")
        out = []
        for i, item in enumerate(items):
            image = read_image(item, 3)
            h, w = image.shape[-2:]
            if min(h, w) < MIN_SIDE:
                raise ValueError(f"input {i} is {w}x{h} pixels; the generator needs at least {MIN_SIDE}x{MIN_SIDE}")
            if self.max_side and max(h, w) > self.max_side:
                scale = self.max_side / max(h, w)
                size = (max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale)))
                image = read_image(item, 3, size=size)
            out.append(image)
        return out

    def __call__(self, inputs: Any) -> list[torch.Tensor]:
        return [im[None].float() / 127.5 - 1 for im in self.images(inputs)]


class GanAdapter(TaskAdapter):
    task = "gan"

    def __init__(self) -> None:
        self._saved: dict[Path, set[str]] = {}

    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        return build_generator(architecture, **config)

    def preprocessor(self, card: ModelCard, directory: str | os.PathLike | None = None) -> Callable[[Any], Any]:
        return GanPreprocessor(card.preprocessing.get("max_side"))

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per image: ``image`` (the translated image, uint8 (H, W, 3) numpy array at the input's
        size) and ``size`` ([height, width]); ``label``/``index`` are None and ``score`` 0 (a generator
        does not classify)."""
        device = next(model.parameters()).device
        results = []
        for x in model.preprocess(inputs):
            y = model(x.to(device)).float().cpu()[0]
            picture = ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            results.append({"label": None, "index": None, "score": 0.0, "image": picture,
                            "size": [int(picture.shape[0]), int(picture.shape[1])]})
        return results

    def describe(self, prediction: dict[str, Any]) -> str:
        h, w = prediction["size"]
        return f"translated image {w}x{h} (save it with --save DIR)"

    def save_prediction(self, prediction: dict[str, Any], source: Any, directory: Path) -> list[Path]:
        """``<name>.png``: the translated image, ``<name>`` being the input file's stem (``input`` otherwise)."""
        from PIL import Image

        from zoo.io import atomic_write_bytes

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"--save {directory}: a file is there, not a folder")
        stem = Path(source).stem if isinstance(source, (str, os.PathLike)) else "input"
        taken = self._saved.setdefault(directory.resolve(), set())
        base, k = stem, 1
        while stem in taken:
            stem, k = f"{base}-{k}", k + 1
        taken.add(stem)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(prediction["image"])).save(buffer, format="PNG")
        path = directory / f"{stem}.png"
        atomic_write_bytes(path, buffer.getvalue())
        return [path]

    def sample_inputs(self, card: ModelCard) -> list[Any]:
        """A held-out photo (scikit-image's coffee, 400x600), the default input of `zoo predict`."""
        from .data import photo_paths

        return [photo_paths(("skimage",))["coffee"]]

    def evaluate(self, model: nn.Module, card: ModelCard, *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]:
        """``fd_mnv2``, ``psnr`` and ``ssim`` against the card's teacher on the held-out photos (`zoo.gan.evaluate`).

        A card without a teacher is a reference (the teacher itself): it is compared with itself, so its
        ``fd_mnv2`` is 0 and its ``ssim`` 1 by definition (``psnr`` would be infinite and is left out)."""
        from .data import held_out
        from .evaluate import compare, translate

        if card.dataset != PHOTOS:
            raise ValueError(f"no loader for gan dataset {card.dataset!r} (known: {PHOTOS})")
        side = int(card.preprocessing.get("eval_side", 256))
        names, photos = held_out(side)
        mine = translate(model, photos, device=device)
        if card.teacher is None:
            measured = compare(mine, mine)
            measured.pop("psnr")
        else:
            import zoo

            measured = compare(mine, translate(zoo.load(card.teacher.name), photos, device=device))
        return {**measured, "n": len(names)}


ADAPTER = GanAdapter()
