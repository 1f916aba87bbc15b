import os

import pytest
import torch

from zoo.classification.data import FASHION_MNIST_CLASSES
from zoo.classification.models import build_model
from zoo.metrics import count_params
from zoo.registry import ModelCard

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_card(model: torch.nn.Module, name: str = "resnet8.unit", **overrides) -> ModelCard:
    fields = dict(
        name=name, task="classification", architecture=f"resnet{model.config['depth']}", config=dict(model.config),
        dataset="fashion-mnist", split="test", metrics={"top1": 0.5}, params=count_params(model),
        preprocessing={"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353]},
        labels=list(FASHION_MNIST_CLASSES),
    )
    fields.update(overrides)
    return ModelCard(**fields)


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet8", in_channels=1, num_classes=10).eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDZOO_HOME", str(tmp_path / "kdzoo-home"))


@pytest.fixture(autouse=True)
def _isolated_registry():
    """Entries a test registers (remote mocks) must not leak into the zoo other tests see."""
    from zoo import api

    saved, discovered = dict(api.REGISTRY._cards), api.REGISTRY._discovered
    yield
    api.REGISTRY._cards, api.REGISTRY._discovered = saved, discovered
    api._LOADED.clear()
