"""Capture intermediate outputs of a model by module path, with forward hooks.

Models stay stock (torchvision, transformers, our CIFAR ResNets): a tap names a submodule, e.g.
``"layer3"`` or ``"backbone.body.layer4"``, and records what it returns on each forward.

>>> with Taps(model, ["layer2", "layer3"]) as taps:
...     logits = model(x)
...     f2, f3 = taps["layer2"], taps["layer3"]
"""
from __future__ import annotations

from typing import Any, Iterable

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (``.module``)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def resolve(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``; accepts paths with or without a DDP ``module.`` prefix."""
    base = unwrap(model)
    if path.startswith("module.") and base is not model:
        path = path[len("module."):]
    try:
        return base.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in base.named_modules() if n]
        import difflib

        close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; top-level modules: {', '.join(n for n in names if '.' not in n)}"
        raise ValueError(f"{type(base).__name__} has no submodule {path!r}{hint}") from None


class Taps:
    """Forward hooks on named submodules, recording their outputs.

    A module that runs several times in one forward (weight sharing, recurrence) records every
    call: ``taps.all(name)`` lists them in order, ``taps[name]`` is the last. Call ``clear()``
    between steps when the taps stay open (as the Distiller does).
    """

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.modules = {n: resolve(model, n) for n in self.names}
        self._outputs: dict[str, list[Any]] = {n: [] for n in self.names}
        self._handles: list = []

    def _hook(self, name: str):
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self._outputs[name].append(output)

        return record

    def open(self) -> "Taps":
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    def __enter__(self) -> "Taps":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear(self) -> None:
        for v in self._outputs.values():
            v.clear()

    def all(self, name: str) -> list[Any]:
        if name not in self._outputs:
            raise KeyError(f"{name!r} is not tapped; taps: {', '.join(self.names)}")
        return list(self._outputs[name])

    def __getitem__(self, name: str) -> Any:
        calls = self.all(name)
        if not calls:
            raise RuntimeError(f"tap {name!r} recorded nothing: was the module called in this forward?")
        return calls[-1]

    def outputs(self) -> dict[str, Any]:
        """The last output of every tap that recorded one."""
        return {n: v[-1] for n, v in self._outputs.items() if v}
