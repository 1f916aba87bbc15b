"""The gan task adapter: image-to-image generators for `zoo.load`, `zoo.predict`, `zoo eval` and `zoo predict --save`."""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.protocol import TWIN, RunnerProtocol
from zoo.registry import ModelCard
from zoo.tasks import TaskAdapter, model_device, read_image

from .data import PHOTOS
from .models import MIN_SIDE, build_generator, to_pixels

DEFAULT_TEACHER = "cyclegan-vintagify"
EVAL_SIDE = 256
# whether the run being set up reads the teacher's whole maps from its pairs (`zoo.gan.maps`); set around a
# run by `GanAdapter.distill` and the protocol's arms, read by `GanAdapter.datasets`
_WITH_MAPS: ContextVar[bool] = ContextVar("gan_with_maps", default=False)


@contextmanager
def _maps_for(recipe: str | None) -> Iterator[bool]:
    """Within it, `GanAdapter.datasets` gives training pairs with the teacher's maps when ``recipe`` reads them."""
    from zoo.recipes import get_recipe

    from .recipes import reads_teacher_maps

    needed = recipe not in (None, "plain") and reads_teacher_maps(get_recipe(recipe))
    token = _WITH_MAPS.set(needed)
    try:
        yield needed
    finally:
        _WITH_MAPS.reset(token)


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
    # CycleGAN's and GAN Compression's optimizer: Adam at 2e-4 with betas (0.5, 0.999), batches of a few crops
    # (Zhu et al. 2017, sec. 4 "Training details"); TrainConfig's SGD at 0.1 diverges within two steps
    train_defaults = {"batch_size": 4, "lr": 2e-4, "optimizer": "adamw", "betas": [0.5, 0.999], "weight_decay": 0.0,
                      "warmup_epochs": 0}

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
        does not classify). Raises ValueError for ``top_k`` other than 1: a generator has no classes to rank."""
        if top_k != 1:
            raise ValueError(f"top_k={top_k}: a generator translates images, it has no classes to rank")
        device = model_device(model)
        results = []
        for x in model.preprocess(inputs):
            y = model(x.to(device)).float().cpu()[0]
            picture = to_pixels(y).permute(1, 2, 0).numpy()
            results.append({"label": None, "index": None, "score": 0.0, "image": picture,
                            "size": [int(picture.shape[0]), int(picture.shape[1])]})
        return results

    def describe(self, prediction: dict[str, Any]) -> str:
        h, w = prediction["size"]
        return f"translated image {w}x{h}" + ("" if prediction.get("saved") else " (save it with --save DIR)")

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
        """``fd_mnv2``, ``psnr`` and ``ssim`` against the card's teacher on the held-out photos: the same
        pairs (`zoo.gan.data.make_pairs`, the teacher's images cached as 8-bit images) that the run's own
        evaluation used, so `zoo eval` reproduces the card.

        A card without a teacher is a reference (the teacher itself): it is compared with itself, so its
        ``fd_mnv2`` is 0 and its ``ssim`` 1 by definition (``psnr`` would be infinite and is left out)."""
        from .data import held_out
        from .evaluate import compare, translate

        if card.dataset != PHOTOS:
            raise ValueError(f"no loader for gan dataset {card.dataset!r} (known: {PHOTOS})")
        side = int(card.preprocessing.get("eval_side", EVAL_SIDE))
        if card.teacher is None:
            names, photos = held_out(side)
            mine = translate(model, photos, device=device)
            measured = compare(mine, mine)
            measured.pop("psnr")
            return {**measured, "n": len(names)}
        # the reference is the generator whose images the student was measured against: the data's
        reference = (card.extra.get("data") or {}).get("pairs_teacher") or card.teacher.name
        test = self._pairs(reference, "test", eval_side=side)
        return {**self.evaluate_model(model, test, device=device), "n": len(test)}

    # ------------------------------------------------------------------ runs (zoo.runner)
    def task_loss(self, images: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """L1 distance of the student's images to the batch's teacher images (both in [-1, 1])."""
        return F.l1_loss(images.float(), batch["labels"].float())

    @staticmethod
    def data_teacher(data: Any) -> str:
        """The zoo name of the generator whose images a ``photos`` data name pairs with the photos:
        ``photos`` -> the default teacher, ``photos:NAME`` -> NAME."""
        if data is None or data == PHOTOS:
            return DEFAULT_TEACHER
        if isinstance(data, str) and data.startswith(PHOTOS + ":") and len(data) > len(PHOTOS) + 1:
            return data.split(":", 1)[1]
        shown = repr(data) if isinstance(data, str) else f"of type {type(data).__name__}"
        raise ValueError(f"unknown gan data {shown}: use {PHOTOS!r} (pairs with {DEFAULT_TEACHER}'s images), "
                         f"'{PHOTOS}:TEACHER' (a zoo generator), or a (train, test) pair of TranslationPairs")

    def _pairs(self, teacher_name: str, split: str, *, count: int | None = None, eval_side: int = EVAL_SIDE,
               maps: bool = False) -> Any:
        import zoo

        from .data import TRAIN_PAIRS, make_pairs

        teacher = zoo.load(teacher_name)
        if torch.cuda.is_available():
            teacher = teacher.to("cuda")
        return make_pairs(teacher, teacher_name, split, count=count or TRAIN_PAIRS, eval_side=eval_side, maps=maps)

    def datasets(self, data: Any = None, *, train_subset: int | None = None) -> tuple[Any, Any]:
        """(train, test) `TranslationPairs`: ``photos`` (or ``photos:TEACHER``) gives 2,048 random 128-px crops of
        the training photos and the 9 held-out photos (256 px), each with the teacher's image (computed once,
        cached); ``train_subset`` takes the first crops (only those are translated). For a recipe that reads the
        teacher's whole maps (`gan-compression`), the training pairs carry them too (`zoo.gan.maps`, stored once
        beside the pairs). A (train, test) pair of `TranslationPairs` is used as it is."""
        from .data import TranslationPairs

        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, TranslationPairs) for d in data):
            train, test = data
            for pairs in (train, test):
                if min(pairs.inputs.shape[-2:]) < 32:
                    raise ValueError(f"{pairs.name}/{pairs.split}: images of {tuple(pairs.inputs.shape[-2:])} pixels; the "
                                     "discriminator and the metrics' features need a side of at least 32")
            if len(test) * (test.inputs.shape[-2] // 16) * (test.inputs.shape[-1] // 16) < 2:
                raise ValueError(f"{test.name}/{test.split}: {len(test)} image(s) of {tuple(test.inputs.shape[-2:])} give "
                                 "fewer than 2 feature positions; the Fréchet distance needs more test images or larger ones")
            return (train.subset(train_subset) if train_subset else train), test
        name = self.data_teacher(data)
        train = self._pairs(name, "train", count=train_subset, maps=_WITH_MAPS.get())
        return train, self._pairs(name, "test")

    def build_student(self, architecture: str, train: Any) -> nn.Module:
        return build_generator(architecture)

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return {"ngf": model.ngf, "n_blocks": model.n_blocks}

    def evaluate_model(self, model: nn.Module, data: Any, *, device: Any = "cpu") -> dict[str, float]:
        """fd_mnv2, psnr and ssim of ``model``'s images of ``data.inputs`` against ``data.targets``."""
        from .evaluate import compare, translate

        student = translate(model, data.inputs, device=device)
        return compare(student, data.targets.float() / 255.0)

    def card_fields(self, train: Any) -> dict[str, Any]:
        from .data import LICENSES, SOURCES

        return {"preprocessing": {"eval_side": EVAL_SIDE, "range": "pixels / 127.5 - 1"}, "labels": [],
                "extra": {"data": {"photos": {s: sorted(SOURCES[s]) for s in SOURCES}, "licenses": LICENSES,
                                   "pairs_teacher": train.teacher, "train_crops": len(train),
                                   "crop": train.meta.get("crop")}}}

    def distill(self, teacher: Any, student: Any, recipe: str | None, **kwargs: Any) -> Any:
        """`zoo.runner.distill`, after checking that a named teacher is the generator whose images the data pairs.

        A recipe that reads the teacher's whole maps (`gan-compression`) gets them with the pairs: stored on
        disk for a named data set (`zoo.gan.maps`), recorded in memory from the teacher for (train, test)
        `TranslationPairs` that lack them."""
        from zoo.runner import distill

        with _maps_for(recipe) as needed:
            if needed and teacher is not None:
                kwargs["data"] = self._with_maps(teacher, kwargs.get("data"))
            return self._distill(teacher, student, recipe, distill, **kwargs)

    @staticmethod
    def _with_maps(teacher: Any, data: Any) -> Any:
        """``data`` itself, or, for (train, test) `TranslationPairs` whose training pairs have no teacher maps,
        a copy whose training pairs carry ``teacher``'s maps (`zoo.gan.maps.record_maps`)."""
        from dataclasses import replace

        from .data import TranslationPairs
        from .maps import record_maps

        if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], TranslationPairs)
                and data[0].maps is None):
            return data
        import zoo

        module = teacher if isinstance(teacher, nn.Module) else zoo.load(teacher)
        if not (isinstance(module, nn.Module) and hasattr(module, "n_blocks")):
            return data  # not a generator: the checks below name the problem
        return (replace(data[0], maps=record_maps(module, data[0].inputs)), data[1])

    def _distill(self, teacher: Any, student: Any, recipe: str | None, distill: Callable[..., Any], **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if teacher is not None and (data is None or isinstance(data, str)):
            made_by = self.data_teacher(data)
            if isinstance(teacher, str) and teacher != made_by:
                import zoo

                if zoo.card(teacher).task != self.task:
                    raise ValueError(f"the teacher {teacher!r} is a {zoo.card(teacher).task} model, not a generator")
                raise ValueError(f"the teacher {teacher!r} is not the generator whose images the data {data or PHOTOS!r} "
                                 f"pairs with the photos ({made_by!r}); pass data='{PHOTOS}:{teacher}'")
            if isinstance(teacher, nn.Module):  # a module: it must be that generator, weight for weight
                import zoo
                from zoo.teacher_cache import weights_fingerprint

                if weights_fingerprint(teacher) != weights_fingerprint(zoo.load(made_by)):
                    raise ValueError(f"the teacher module is not {made_by!r}, whose images the data {data or PHOTOS!r} "
                                     "pairs with the photos: its features and those images would come from two "
                                     "different generators; pass (train, test) TranslationPairs made by your teacher "
                                     "(zoo.gan.data.make_pairs)")
        return distill(self, teacher, student, recipe, **kwargs)

    @property
    def protocol(self) -> Any:
        """The twin protocol's plug-in: each arm a run of the generic run path (`zoo.protocol.RunnerProtocol`)."""
        plug = GanProtocol(self, PHOTOS)
        plug.also_beat = ("psnr",)  # a published student beats its twin on the Fréchet distance and on PSNR
        return plug


class GanProtocol(RunnerProtocol):
    """`RunnerProtocol` whose arms see training pairs with the teacher's maps when their recipe reads them."""

    def train_arm(self, spec: Any, arm: str, seed: int, run_dir: Path, deadline: float | None,
                  device: str | None) -> bool:
        with _maps_for(None if arm == TWIN else arm):  # gan-compression's pairs carry the teacher's maps
            return super().train_arm(spec, arm, seed, run_dir, deadline, device)

    def check_data_and_student(self, spec: Any) -> None:
        """As the runner's (before any arm trains), with the teacher's maps recorded first when a recipe reads
        them: their pass makes the pairs too, so the teacher runs once per crop, not once for the pairs and
        again for the maps."""
        from zoo.recipes import get_recipe

        from .recipes import reads_teacher_maps

        reader = next((r for r in spec.recipes if reads_teacher_maps(get_recipe(r))), None)
        with _maps_for(reader):
            super().check_data_and_student(spec)


ADAPTER = GanAdapter()
