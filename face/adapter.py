"""The face task adapter: recognisers for `zoo.load`, `zoo.predict` (embeddings; a pair's similarity and
decision), `zoo eval` (verification) and the generic run path (`zoo.runner`)."""
from __future__ import annotations

import dataclasses

import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.registry import ModelCard
from zoo.tasks import TaskAdapter, model_device, read_image

from .data import CJK, SIZE
from .models import build_recognizer


class FacePreprocessor:
    """Image paths, PIL images, arrays or tensors -> float (N, channels, size, size) in [0, 1]: converted to
    grey (or RGB) and resized to the model's input size."""

    def __init__(self, channels: int = 1, size: int = SIZE) -> None:
        self.channels, self.size = channels, size

    def __repr__(self) -> str:
        return f"FacePreprocessor({self.channels} channel(s), {self.size}x{self.size}, pixels / 255)"

    def __call__(self, inputs: Any) -> torch.Tensor:
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise ValueError("no inputs given")
        return torch.stack([read_image(x, self.channels, size=(self.size, self.size)) for x in items]).float() / 255.0


class FaceAdapter(TaskAdapter):
    task = "face"

    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        return build_recognizer(architecture, **config)

    def preprocessor(self, card: ModelCard, directory: str | os.PathLike | None = None) -> Callable[[Any], Any]:
        size = card.preprocessing.get("input_size", [1, SIZE, SIZE])
        return FacePreprocessor(int(size[0]), int(size[-1]))

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per image with its ``embedding`` (L2-normalised list of floats). With exactly two images,
        both dicts also hold ``similarity`` (their cosine), ``same`` (above the card's ``threshold``) and
        ``pair`` (0 for the first image, 1 for the second). ``label``/``index`` are None and ``score`` is the
        similarity (or 0). Raises ValueError for ``top_k`` other than 1: a recogniser has no classes to rank."""
        if top_k != 1:
            raise ValueError(f"top_k={top_k}: a face recogniser gives embeddings (and a pair's similarity), not "
                             "classes to rank; leave --top-k out")
        x = model.preprocess(inputs)
        e = model(x.to(model_device(model))).float().cpu()
        out = [{"label": None, "index": None, "score": 0.0, "embedding": [round(v, 6) for v in row.tolist()]} for row in e]
        if len(out) == 2:
            sim = float(F.cosine_similarity(e[0:1], e[1:2]))
            threshold = float(model.card.metrics.get("threshold", 0.0))
            for i, r in enumerate(out):
                r.update(score=round(sim, 6), similarity=round(sim, 6), same=sim > threshold, threshold=threshold, pair=i)
        return out

    def describe(self, prediction: dict[str, Any]) -> str:
        if prediction.get("pair") == 1:
            return "the pair's second image (its verdict is on the line above)"
        if "similarity" in prediction:
            verdict = "same identity" if prediction["same"] else "different identities"
            return (f"cosine similarity {prediction['similarity']:.3f} with the next image: {verdict} "
                    f"(threshold {prediction['threshold']:.3f})")
        return f"embedding of {len(prediction['embedding'])} values (--json prints them; pass exactly two images to compare them)"

    def sample_inputs(self, card: ModelCard) -> list[Any]:
        """Two PNG files of one held-out identity in two typefaces (rendered from the installed fonts into
        ``$KDZOO_DATA/cjk-fonts-samples``), the default input of `zoo predict`."""
        from PIL import Image

        from zoo.io import atomic_write_bytes

        from .data import data_dir, load_cjk

        test = load_cjk("test", progress=False)
        first = torch.where(test.labels == test.labels[0])[0][:2].tolist()
        folder = data_dir() / "cjk-fonts-samples"
        paths = []
        for k, i in enumerate(first):
            path = folder / f"{test.identities[0]}-{k}.png"
            if not path.exists():
                import io

                buf = io.BytesIO()
                Image.fromarray(test.images[i, 0].numpy()).save(buf, format="PNG")
                atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
        return paths

    def evaluate(self, model: nn.Module, card: ModelCard, *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]:
        """The card's verification metrics on the held-out identities; ``data_root``: the folder the rendered
        ``cjk-fonts`` test set is cached in (rendered there from the installed fonts when it is not)."""
        from .data import load_cjk

        if card.dataset != CJK:
            raise ValueError(f"no loader for face dataset {card.dataset!r} (known: {CJK})")
        test = load_cjk("test", cache=data_root)  # the held-out split only (None: $KDZOO_DATA)
        return {**self.evaluate_model(model, test, device=device), "n": len(test)}

    # ------------------------------------------------------------------ runs (zoo.runner)
    def task_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy of the margin head's logits (ArcFace or CosFace, applied by the model)."""
        return F.cross_entropy(logits.float(), batch["labels"])

    def datasets(self, data: Any = None, *, train_subset: int | None = None) -> tuple[Any, Any]:
        """(train, test) `FaceDataset`: ``cjk-fonts`` (the default; 2,000 training and 500 held-out identities),
        or a (train, test) pair of `FaceDataset`. ``train_subset`` keeps the first images (whole identities first)."""
        from .data import FaceDataset, load_cjk

        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, FaceDataset) for d in data):
            train, test = data
            counts = torch.bincount(test.labels)
            different = len(test) * (len(test) - 1) // 2 - int((counts * (counts - 1) // 2).sum())
            if different < 10_000:  # TAR at FAR 1e-4, the card's second metric, needs 10,000 (checked before training)
                raise ValueError(f"{test.name}/{test.split}: {len(test)} images give {different:,} different-identity "
                                 "pairs; TAR at FAR 1e-4 needs at least 10,000 (about 150 images or more)")
        elif data is None or data == CJK:
            train, test = load_cjk("train"), load_cjk("test")
        else:
            shown = repr(data) if isinstance(data, str) else f"of type {type(data).__name__}"
            raise ValueError(f"unknown face data {shown}: use {CJK!r} or a (train, test) pair of FaceDataset")
        # the pair's roles, not the splits' names, decide how batches are made (identity pairs and labels
        # for the margin head in training: FaceDataset.batch keys them on split == "train")
        if train.split != "train":
            train = dataclasses.replace(train, split="train")
        if test.split == "train":
            test = dataclasses.replace(test, split="test")
        return (train.subset(train_subset) if train_subset else train), test

    def build_student(self, architecture: str, train: Any) -> nn.Module:
        return build_recognizer(architecture, num_classes=len(train.identities), in_channels=train.images.shape[1])

    def evaluate_model(self, model: nn.Module, data: Any, *, device: Any = "cpu") -> dict[str, float]:
        """Verification on ``data``'s identities: TAR at FAR 1e-3 and 1e-4 over all pairs, the 10-fold accuracy."""
        from .data import make_pairs
        from .evaluate import embed, verification

        measured = verification(embed(model, data.images, device=device), data.labels, make_pairs(data.labels))
        return {k: v for k, v in measured.items() if k not in ("positives", "negatives")}

    def card_fields(self, train: Any) -> dict[str, Any]:
        from .data import APT

        return {"preprocessing": {"input_size": [int(train.images.shape[1]), SIZE, SIZE], "scale": "pixels / 255",
                                  "output": "L2-normalised embedding"},
                "extra": {"data": {"name": train.name, "identities": len(train.identities),
                                   "typefaces": train.meta.get("typefaces"), "fonts": APT,
                                   "note": "a stand-in for faces: CJK characters drawn in real typefaces"}}}

    @property
    def protocol(self) -> Any:
        from zoo.protocol import RunnerProtocol

        return RunnerProtocol(self, CJK)


ADAPTER = FaceAdapter()
