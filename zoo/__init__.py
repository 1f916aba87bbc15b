"""kdzoo: a task-specific knowledge-distillation model zoo for PyTorch.

>>> import zoo
>>> model = zoo.load("resnet20.fmnist")           # eval-mode model; model.card holds its measured metrics
>>> zoo.predict("resnet20.fmnist")                # predictions on the entry's bundled sample images
"""
__version__ = "0.1.0"

from .lazy import lazy_attributes  # noqa: E402
from .registry import ModelCard, UnknownModelError  # noqa: E402

# The rest of the public API is imported on first use (PEP 562), so that reading cards (`zoo list`, `zoo card`,
# `zoo.card`, `zoo.compare`) never pays torch's import: where each public name lives.
_LAZY = {**dict.fromkeys(("DistillRun", "card", "distill", "evaluate", "list_models", "load", "predict", "register",
                          "save", "train"), "api"),
         **dict.fromkeys(("get_recipe", "list_recipes"), "recipes"),
         **dict.fromkeys(("ChecksumError", "StateDictMismatchError"), "hub")}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


def compare(task: str | None = None, dataset: str | None = None, method: str | None = None,
            html: str | None = None, x: str = "params") -> list[dict]:
    """Rows comparing the zoo's entries (filtered by task, data set and method): headline metric with its unit
    and direction, params, FLOPs/MACs, CPU latency, teacher, gain over the plain twin and the teacher-twin gap
    closed (`zoo.comparison.comparison_rows`). Raises ValueError for a filter value no entry has.

    ``html``: also write the board of these entries to the folder ``html`` (``html/index.html``, one static
    page, plots on the ``x`` cost axis; `zoo.board.build_board`); its problems (a card or plot left out) are
    issued as warnings. Raises NotADirectoryError if ``html`` is an existing file."""
    from .comparison import comparison_rows, select

    cards = select(task, dataset, method)
    if html is not None:
        import warnings

        from .board import build_board

        for problem in build_board(cards, html, x).problems:
            warnings.warn(problem, stacklevel=2)
    return comparison_rows(cards)

__all__ = ["ChecksumError", "DistillRun", "ModelCard", "StateDictMismatchError", "UnknownModelError", "card", "compare",
           "distill", "evaluate", "get_recipe", "list_models", "list_recipes", "load", "predict", "register", "save", "train",
           "__version__"]
