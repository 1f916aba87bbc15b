"""Module attributes imported on first use (PEP 562), so that importing a package stays cheap: reading cards
(`zoo list`, `zoo card`) must not pay torch's import."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_attributes(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for ``names`` (public name -> submodule of
    ``package`` that defines it): the submodule is imported when the name is first read, and the value is
    then kept in the package's namespace. Reading another missing name raises AttributeError."""
    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
