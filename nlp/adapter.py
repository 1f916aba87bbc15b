"""The nlp task adapter: text classifiers with their tokenizer, for `zoo.load`, `zoo.predict` and `zoo eval`."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from zoo.registry import ModelCard
from zoo.tasks import TaskAdapter, label_predictions, model_device, move_to

from .data import TextBatches, encode, load_task
from .models import TextClassifier, encoder_from_config
from .train import accuracy

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
SAMPLE_TEXTS = {
    "wordnet-topic": ["a small domesticated carnivore kept as a pet or for catching mice",
                      "move fast by using one's feet, with one foot off the ground at any given time",
                      "a flat-bottomed pan used for frying food",
                      "feeling or showing great happiness"],
    "fortunes": ["There is no place like home.", "Real programmers don't comment their code."],
}


class TextPreprocessor:
    """Texts -> ``{"input_ids", "attention_mask"}`` with the checkpoint's own tokenizer.

    Empty texts are an error; a text longer than ``max_length`` tokens is truncated with a warning.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __repr__(self) -> str:
        return f"TextPreprocessor({type(self.tokenizer).__name__}, max_length={self.max_length})"

    def __call__(self, texts: str | list[str]) -> dict[str, torch.Tensor]:
        if not isinstance(texts, (str, list, tuple)):
            raise TypeError(f"texts are a string or a list of strings, got {type(texts).__name__} {texts!r}")
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise ValueError("no texts given")
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is not a string but {type(t).__name__} {t!r}")
            if not any(c.isprintable() and not c.isspace() for c in t):  # zero-width or control characters only
                raise ValueError(f"text {i} is empty (no visible character); give the text to classify")
        full = self.tokenizer(items, truncation=False)["input_ids"]
        long = [i for i, ids in enumerate(full) if len(ids) > self.max_length]
        if long:
            warnings.warn(f"{len(long)} text(s) (e.g. #{long[0]}, {len(full[long[0]])} tokens) are longer than the "
                          f"model's max_length {self.max_length}; they are truncated", UserWarning, stacklevel=3)
        ids = encode(self.tokenizer, items, self.max_length)
        batch = TextBatches(ids, None, self.tokenizer.pad_token_id).batch(torch.arange(len(ids)))
        return batch["inputs"]


class NlpAdapter(TaskAdapter):
    task = "nlp"

    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        if architecture != "text-classifier":
            raise ValueError(f"unknown nlp architecture {architecture!r}; known: text-classifier")
        return TextClassifier(encoder_from_config(config["encoder"]), config["num_labels"])

    def preprocessor(self, card: ModelCard, directory: str | os.PathLike | None = None) -> Callable[[Any], Any]:
        from transformers import AutoTokenizer

        if directory is None or not (Path(directory) / "tokenizer_config.json").exists():
            raise FileNotFoundError(f"the checkpoint of {card.name!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return TextPreprocessor(tokenizer, int(card.preprocessing.get("max_length", 128)))

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per text: ``label``, ``index``, ``score`` (softmax probability) and the ``top_k`` list."""
        batch = move_to(model.preprocess(inputs), model_device(model))
        return label_predictions(model(**batch), model.card.labels, top_k)

    def evaluate(self, model: nn.Module, card: ModelCard, *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]:
        task = load_task(card.dataset, card.split, data_root)
        tokenizer = model.preprocess.tokenizer
        data = TextBatches(encode(tokenizer, task.texts, model.preprocess.max_length), task.labels, tokenizer.pad_token_id)
        return {"accuracy": accuracy(model.to(device), data, device=device), "n": len(task)}

    def sample_inputs(self, card: ModelCard) -> list[Any]:
        if card.dataset not in SAMPLE_TEXTS:
            raise FileNotFoundError(f"no bundled sample texts for dataset {card.dataset!r}; pass texts")
        return list(SAMPLE_TEXTS[card.dataset])


    def distill(self, teacher: Any, student: Any, recipe: str | None, **kwargs: Any) -> Any:
        raise ValueError(f"nlp recipes ({recipe}) run in the staged pipeline, not through zoo.distill: "
                         "`zoo distill nlp STAGES --out DIR ...` (python -m zoo.nlp.pipeline --help), or from "
                         "Python zoo.nlp.pipeline.run(STAGES, OUT, data=<task name or datasets.DatasetDict>)")

    def cli(self, command: str, argv: list[str]) -> int:
        """``zoo train|distill nlp STAGES ...``: the staged pipeline (`python -m zoo.nlp.pipeline`)."""
        from .pipeline import main

        return main(argv)

    def publish_run(self, run_dir: str | os.PathLike, name: str, **kwargs: Any) -> ModelCard | None:
        """A pipeline run folder (``task.json`` + ``student.safetensors``): see `zoo.nlp.publish`."""
        if not ((Path(run_dir) / "task.json").exists() and (Path(run_dir) / "student.safetensors").exists()):
            return None
        from .publish import publish

        return publish(run_dir, name, **kwargs)

    @property
    def protocol(self) -> Any:
        """The twin protocol's plug-in: the pipeline's plain and task stages per seed (`zoo.nlp.protocol`)."""
        from .protocol import NlpProtocol

        return NlpProtocol()


ADAPTER = NlpAdapter()
