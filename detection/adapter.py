"""The detection task adapter: Faster R-CNN builders, image reading, box prediction and mAP evaluation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from zoo import hub
from zoo.registry import ModelCard
from zoo.tasks import TaskAdapter, bundled_samples, model_device, move_to, read_image

from .data import SCENE_COUNTS, SCENE_SIZE, SCENES, load_scenes
from .evaluate import evaluate
from .models import build_detector

SAMPLES_DIR = Path(__file__).parent / "samples"
SCORE_THRESHOLD = 0.5  # boxes scoring below this are left out of predictions (not out of evaluation)


class DetectionPreprocessor:
    """Image paths, PIL images, uint8 arrays or tensors -> the list of float (3, H, W) images in [0, 1]
    a torchvision detector takes (any size: the model resizes its longer side to ``image_size`` px, and
    maps its boxes back).

    Raises ``ValueError`` for an image so elongated that the resize would leave its shorter side under
    one pixel (e.g. 3 x 3000 at 96 px), which the detector cannot run on."""

    def __init__(self, image_size: int = SCENE_SIZE) -> None:
        self.image_size = image_size

    def __repr__(self) -> str:
        return f"DetectionPreprocessor(RGB, pixels / 255, longer side resized to {self.image_size} px by the model)"

    def __call__(self, inputs: Any) -> list[torch.Tensor]:
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise ValueError("no inputs given")
        images = [read_image(x, 3).float() / 255.0 for x in items]
        for i, image in enumerate(images):
            h, w = image.shape[-2:]
            if min(h, w) * self.image_size < max(h, w):
                raise ValueError(f"input {i} is {w}x{h} pixels: resized to {self.image_size} px on its longer side, its "
                                 f"shorter side would be under one pixel. Crop it to a less elongated region first")
        return images


class DetectionAdapter(TaskAdapter):
    task = "detection"

    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        return build_detector(architecture, **config)

    def preprocessor(self, card: ModelCard, directory: str | os.PathLike | None = None) -> Callable[[Any], Any]:
        return DetectionPreprocessor(card.config.get("image_size", SCENE_SIZE))

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per image: ``detections``, each ``{label, index, score, box}`` (box = x1, y1, x2, y2 in
        the image's pixels), best first, scoring at least 0.5; ``top_k`` > 1 keeps at most that many.
        ``label``, ``index`` and ``score`` repeat the best detection (None, None, 0.0 when nothing was found)."""
        labels = ["background", *model.card.labels]
        results = []
        for found in model(move_to(model.preprocess(inputs), model_device(model))):
            keep = found["scores"] >= SCORE_THRESHOLD
            boxes, scores, classes = found["boxes"][keep], found["scores"][keep], found["labels"][keep]
            if top_k > 1:
                boxes, scores, classes = boxes[:top_k], scores[:top_k], classes[:top_k]
            detections = [{"label": labels[c], "index": c, "score": round(s, 6), "box": [round(v, 2) for v in b]}
                          for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist())]
            best = detections[0] if detections else {"label": None, "index": None, "score": 0.0}
            results.append({"label": best["label"], "index": best["index"], "score": best["score"],
                            "detections": detections})
        return results

    def evaluate(self, model: nn.Module, card: ModelCard, *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]:
        if card.dataset != SCENES:
            raise ValueError(f"no loader for detection dataset {card.dataset!r} (known: {SCENES})")
        meta = card.extra.get("data", {}).get(card.split, {})
        data = load_scenes(card.split, meta.get("count", SCENE_COUNTS.get(card.split)), meta.get("seed", 0),
                           meta.get("size", card.config.get("image_size", SCENE_SIZE)), root=data_root)
        return evaluate(model.to(device), data, device=device)

    def sample_inputs(self, card: ModelCard) -> list[Any]:
        """Bundled test scenes of the card's dataset (the default input of `zoo predict`)."""
        return bundled_samples(SAMPLES_DIR, card.dataset)


    def onnx_export(self, model: nn.Module, inputs: Any, *, dtype: str, int8: bool, rate: float, label: str) -> Any:
        """A torchvision detector one image at a time, its detections matched (`zoo.detection.export`)."""
        from .export import onnx_export

        return onnx_export(model, inputs, dtype=dtype, int8=int8, rate=rate, label=label)

    def describe(self, prediction: dict[str, Any]) -> str:
        found = [f"{d['label']} ({d['score']:.3f}) at {d['box']}" for d in prediction["detections"]]
        return "; ".join(found) or "nothing found"

    def distill(self, teacher: Any, student: Any, recipe: str | None, *, data: Any = None, out: Any = "runs/distill",
                settings: dict[str, Any] | None = None, train_subset: int | None = None, resume: bool = False,
                device: str | None = None, deadline: float | None = None) -> Any:
        """`zoo.distill` / `zoo.train` for detectors: `zoo.detection.train.run` (the scenes; ``recipe``
        ``chen2017`` with a teacher, None or ``plain`` without). ``settings`` take TrainConfig fields, the
        recipe's parts (``rcn_soft.weight``) and the paper's symbols as ``chen.mu``, ``chen.nu``, ``chen.lam``,
        ``chen.gamma``, ``chen.margin``, ``chen.background_weight``; returns a `zoo.api.DistillRun`.

        Raises:
            ValueError: another recipe, a student that is not a detection architecture name, other data,
                or a teacher missing for chen2017 (or given for the plain detector).
        """
        from zoo.api import DistillRun

        from .recipes import CHEN_2017
        from .train import run

        if recipe not in (None, "plain", "chen2017"):
            raise ValueError(f"detection distils with 'chen2017' (or trains plain), not {recipe!r}")
        if not isinstance(student, str):
            from .models import ARCHITECTURES

            raise ValueError(f"a detection student is an architecture name ({', '.join(ARCHITECTURES)}); for your own "
                             "torchvision detector, use zoo.detection.distill.DetectionDistiller with zoo.trainer.fit")
        if data not in (None, SCENES):
            raise ValueError(f"zoo.distill trains detectors on {SCENES!r}; read COCO or VOC with "
                             "zoo.detection.data.load_coco / load_voc and train with zoo.detection.train.train_detector")
        distilling = recipe == "chen2017"
        if distilling == (teacher is None):
            raise ValueError("chen2017 needs a teacher" if distilling else "a plain detector takes no teacher")
        settings = dict(settings or {})
        # the paper's symbols as "chen.mu" ... ("gamma" alone is the step schedule's TrainConfig.gamma)
        chen = {k.split(".", 1)[1]: settings.pop(k) for k in list(settings) if k.startswith("chen.")}
        unknown = sorted(set(chen) - set(CHEN_2017))
        if unknown:
            raise ValueError(f"unknown chen.* setting(s) {unknown}; the symbols are: {', '.join(CHEN_2017)}")
        card = run(student, out, teacher=teacher, settings=settings, chen=chen, train_count=train_subset,
                   resume=resume, device=device, deadline=deadline, raise_on_stop=False)
        model = hub.load_dir(out, card) if card is not None else None
        return DistillRun(model, Path(out), card is not None, card.extra.get("history", []) if card else [], card)

    def cli(self, command: str, argv: list[str]) -> int:
        """``zoo train detection ...`` / ``zoo distill detection --teacher T ...``: `zoo.detection.train`."""
        from .train import main

        try:
            main(argv, distil=command == "distill")
        except SystemExit as e:  # argparse errors and "stopped at step ...; continue with --resume"
            if isinstance(e.code, str):
                print(e.code)
                return 0 if "--resume" in e.code else 2
            return int(e.code or 0)
        return 0


    @property
    def protocol(self) -> Any:
        """The twin protocol's plug-in (`zoo.detection.protocol.DetectionProtocol`)."""
        from .protocol import DetectionProtocol

        return DetectionProtocol(self)


ADAPTER = DetectionAdapter()
