"""Recipes: a KD method as data — its loss terms, their taps and weights, and its schedule.

A `Term` names a loss (see `zoo.distiller.TERM_BUILDERS`), where its student and teacher inputs are
tapped, its weight, its hyperparameters, and the fraction of training during which it is active.
A tap spec is ``"logits"`` (the model's output) or a module path (``"layer3"``); a suffix ``@k``
picks model k of the cohort or of the teachers (default 0) and ``@*`` passes all of them as a list.
`override()` applies ``--set key=value`` strings to a recipe and its training settings.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from .trainer import TrainConfig


def _check_weight(value: float, what: str) -> None:
    """ValueError unless ``value`` is finite and >= 0 (a negative weight maximises its loss; a NaN or inf one
    fails at the first step)."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a finite number >= 0, got {value}")


@dataclass
class Term:
    """One loss term: ``weight * ramp * loss(student taps, teacher taps, **params)``, active in [start, stop).

    ``warmup`` (a fraction of training) ramps the weight linearly from 0 at ``start`` to its full value
    ``warmup`` later, as mdistiller's DKD does (min(epoch / 20, 1) over 240 epochs)."""

    loss: str
    student: str | list[str] = "logits"
    teacher: str | list[str] | None = "logits"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    start: float = 0.0  # fraction of training when the term switches on ...
    stop: float = 1.0  # ... and off (two-stage FitNet, early-stopped KD)
    name: str = ""  # key of this term's value in the loss parts; defaults to the loss name
    warmup: float = 0.0  # fraction of training over which the weight ramps linearly from 0, from `start`

    def __post_init__(self) -> None:
        self.name = self.name or self.loss
        _check_weight(self.weight, f"term {self.name}: weight")
        if not 0.0 <= self.start < self.stop <= 1.0:
            raise ValueError(f"term {self.name}: need 0 <= start < stop <= 1, got start={self.start}, stop={self.stop}")
        if not 0.0 <= self.warmup <= self.stop - self.start:
            raise ValueError(f"term {self.name}: warmup must be in [0, stop - start] = [0, {self.stop - self.start:g}] "
                             f"(a fraction of training), got {self.warmup}")

    def active(self, progress: float) -> bool:
        return self.start <= progress < self.stop or (self.stop == 1.0 and progress >= 1.0)

    def ramp(self, progress: float) -> float:
        """The weight's factor at ``progress`` (fraction of training): (progress - start) / warmup, capped at 1."""
        if self.warmup <= 0.0:
            return 1.0
        return min(1.0, max(0.0, (progress - self.start) / self.warmup))


@dataclass
class Recipe:
    """A named KD method: loss terms + the weight of the task loss + cohort/teacher structure."""

    name: str
    terms: list[Term] = field(default_factory=list)
    task_weight: float = 1.0  # weight of the ground-truth loss (CE) of each student
    cohort: int = 1  # students trained together (online distillation)
    teachers: int = 1  # pretrained teachers the recipe consumes (0 for online methods)
    assistant: str | None = None  # TAKD: architecture of a teacher assistant distilled first, then used as teacher
    branches: int = 0  # ONE/OKDDip: train one multi-branch student (shared trunk, this many branches)
    gate: bool = False  # ONE: a gate on the trunk weights the branches
    paper: str = ""
    description: str = ""
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults specific to the method
    task: str = ""  # the task whose models its taps name (set by the task that registers it)
    # a student initialiser (`register_student_init`) that copies the teacher's weights into each student
    # once, when the Distiller is built (GAN Compression's channel inheritance); None: students as built
    init: str | None = None

    def __post_init__(self) -> None:
        _check_weight(self.task_weight, "task_weight")
        if self.task_weight == 0 and not any(t.weight > 0 for t in self.terms):
            raise ValueError(f"recipe {self.name!r} has no loss: task_weight is 0 and "
                             + ("no term has a positive weight" if self.terms else "it has no terms"))

    def term(self, name: str) -> Term:
        for t in self.terms:
            if t.name == name:
                return t
        raise KeyError(f"recipe {self.name!r} has no term {name!r}; terms: {', '.join(t.name for t in self.terms)}")


# Loss name -> its hyperparameters and their defaults: the loss function's own keyword defaults (and the
# term module's, e.g. a connector's), recorded by `zoo.distiller.term_builder`. The one place a default
# lives; recipes list only what they change.
TERM_DEFAULTS: dict[str, dict[str, Any]] = {}


def keyword_defaults(*functions: Any, skip: tuple[str, ...] = ("reduction", "labels", "self")) -> dict[str, Any]:
    """The keyword parameters with defaults of ``functions`` (later ones win), e.g. ``{"T": 4.0}`` for kd_loss."""
    import inspect

    out: dict[str, Any] = {}
    for fn in functions:
        for name, p in inspect.signature(fn).parameters.items():
            if p.default is not inspect.Parameter.empty and name not in skip:
                out[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def _load_terms() -> None:
    from . import terms  # noqa: F401  (the core terms register their defaults)


def term_params(term: "Term") -> dict[str, Any]:
    """The term's hyperparameters: its loss's defaults with the recipe's values on top. Raises ValueError
    for a parameter the loss does not take. A loss with no registered builder keeps its own params."""
    _load_terms()
    defaults = TERM_DEFAULTS.get(term.loss)
    if defaults is None:
        return dict(term.params)
    unknown = sorted(set(term.params) - set(defaults))
    if unknown:
        raise ValueError(f"term {term.name!r} ({term.loss}): unknown parameter(s) {unknown}; "
                         f"valid: {', '.join(sorted(defaults)) or 'none'}")
    return {**defaults, **term.params}


class _Recipes(dict):
    """Name -> Recipe. Tasks register their recipes (`register_recipe`) when their recipes module is
    imported; reading this mapping first imports every known task's recipes (`zoo.tasks`)."""

    _loading = False
    _loaded = False

    def _load(self) -> None:
        if not (_Recipes._loaded or _Recipes._loading):
            _Recipes._loading = True
            try:
                from .tasks import load_all_recipes

                load_all_recipes()
                _Recipes._loaded = True
            finally:
                _Recipes._loading = False

    def __getitem__(self, key: str) -> Recipe:
        self._load()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self):
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def keys(self):
        self._load()
        return super().keys()

    def values(self):
        self._load()
        return super().values()

    def items(self):
        self._load()
        return super().items()

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)


RECIPES: dict[str, Recipe] = _Recipes()


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a named recipe (a task's recipes module calls this for each of its recipes)."""
    if not recipe.task:
        raise ValueError(f"recipe {recipe.name!r} must name its task")
    if dict.__contains__(RECIPES, recipe.name):
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    dict.__setitem__(RECIPES, recipe.name, recipe)
    return recipe


# name -> fn(teacher, student): fills the student's parameters from the teacher's, in place (a recipe's
# ``init``). Tasks register theirs with their recipes, as they register loss terms.
STUDENT_INITS: dict[str, Callable[[Any, Any], None]] = {}


def register_student_init(name: str) -> Callable[[Callable[[Any, Any], None]], Callable[[Any, Any], None]]:
    """Decorator: register ``fn(teacher, student)`` as the student initialiser ``name`` that a recipe's
    ``init`` names. It copies (a selection of) the teacher's weights into the student in place and raises
    ValueError for a pair of models it cannot map. Raises ValueError when ``name`` is taken."""
    def register(fn: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        if name in STUDENT_INITS:
            raise ValueError(f"student initialiser {name!r} is already registered")
        STUDENT_INITS[name] = fn
        return fn
    return register


def student_init(name: str) -> Callable[[Any, Any], None]:
    """The registered student initialiser ``name`` (loading every task's recipes first). Raises ValueError
    for an unknown name, listing the known ones."""
    RECIPES.keys()  # importing the tasks' recipes registers their initialisers
    if name not in STUDENT_INITS:
        raise ValueError(f"unknown student initialiser {name!r}; known: {', '.join(sorted(STUDENT_INITS)) or 'none'}")
    return STUDENT_INITS[name]


def list_recipes(task: str | None = None) -> list[str]:
    """Names of every registered recipe (of ``task`` only, when given)."""
    return sorted(n for n, r in RECIPES.items() if task is None or r.task == task)


def get_recipe(name: str, task: str | None = None) -> Recipe:
    """A fresh copy of recipe ``name`` (of any task, or of ``task`` when given); ValueError with close matches
    among the recipes of ``task`` (or of every task) otherwise, and for a recipe of another task; TypeError for a
    name that is not a string (a Recipe object is passed as itself by the callers that take one)."""
    if not isinstance(name, str):
        raise TypeError(f"a recipe is named by a string (`zoo recipes` lists them), got {type(name).__name__} {name!r}")
    if task is not None and task not in {r.task for r in RECIPES.values()}:
        raise ValueError(f"no recipes for task {task!r}; the tasks with recipes: "
                         + ", ".join(sorted({r.task for r in RECIPES.values()})))
    if name not in RECIPES:
        import difflib

        known = list_recipes(task)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown recipe {name!r}.{hint} " + (f"Recipes of {task}: " if task else "Recipes: ")
                         + ", ".join(known))
    if task is not None and RECIPES[name].task != task:
        raise ValueError(f"recipe {name!r} is for task {RECIPES[name].task!r}, not {task!r}; recipes of {task}: "
                         + ", ".join(list_recipes(task)))
    return copy.deepcopy(RECIPES[name])


def _coerce(value: Any, current: Any, key: str) -> Any:
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return type(current)(value) if isinstance(current, float) or float(value).is_integer() else value
            except OverflowError:  # an int beyond float's range, or an infinite float as a whole number
                raise ValueError(f"{key} must be a finite number, got {str(value)[:40]}") from None
        raise ValueError(f"{key} must be a number, got {value!r}")
    if isinstance(current, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(current)(value)
        raise ValueError(f"{key} must be a list, got {value!r}")
    return value


# The recipe fields `override` takes as settings (`--set task_weight=0.5`), beside training and term settings.
RECIPE_SETTINGS = frozenset({"task_weight", "cohort", "assistant", "branches", "gate", "init"})


def override(recipe: Recipe, cfg: TrainConfig, settings: dict[str, Any]) -> tuple[Recipe, TrainConfig]:
    """Apply ``--set`` settings. Keys: a TrainConfig field (``lr``), a recipe field (``task_weight``),
    ``T`` (every term's temperature), or ``TERM.FIELD`` / ``TERM.PARAM`` (``kd.weight``, ``kd.T``).
    An unknown key or a value of the wrong type is an error that lists the valid keys."""
    recipe = copy.deepcopy(recipe)
    train_keys = {f.name for f in fields(TrainConfig)}
    term_fields = {"weight", "start", "stop", "student", "teacher", "warmup"}
    train_updates: dict[str, Any] = {}
    for key, value in settings.items():
        if key in train_keys:
            train_updates[key] = _coerce(value, getattr(cfg, key), key)
        elif key in RECIPE_SETTINGS:
            setattr(recipe, key, _coerce(value, getattr(recipe, key), key))
            Recipe.__post_init__(recipe)
        elif key == "T":
            hits = [t for t in recipe.terms if "T" in term_params(t)]
            if not hits:
                named = [f"{t.name}.{p}" for t in recipe.terms for p in term_params(t) if "temperature" in p.lower()]
                raise ValueError(f"recipe {recipe.name!r} has no term with a temperature T"
                                 + (f"; its terms name theirs: --set {named[0]}=..." + (f" ({', '.join(named)})"
                                    if len(named) > 1 else "") if named else "")
                                 + " (`zoo recipes --json` lists every term's parameters)")
            for t in hits:
                t.params["T"] = _coerce(value, term_params(t)["T"], key)
        elif "." in key:
            term_name, attr = key.split(".", 1)
            term = recipe.term(term_name)
            params = term_params(term)
            if attr in term_fields:
                setattr(term, attr, _coerce(value, getattr(term, attr), key))
            elif attr in params:
                term.params[attr] = _coerce(value, params[attr], key)
            else:
                valid = sorted(term_fields | set(params))
                raise ValueError(f"term {term_name!r} has no setting {attr!r}; valid: {', '.join(valid)}")
            Term.__post_init__(term)
        else:
            valid = sorted(train_keys | RECIPE_SETTINGS | {"T"}) + [f"{t.name}.{{{','.join(sorted(term_fields | set(term_params(t))))}}}"
                                                               for t in recipe.terms]
            raise ValueError(f"unknown setting {key!r}; valid: {', '.join(valid)}")
    merged = {**asdict(cfg), **recipe.train, **train_updates}
    return recipe, TrainConfig(**merged)


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data (for cards, logs and run records), each term with all its
    hyperparameters: the loss's defaults and the recipe's values (`term_params`)."""
    data = asdict(recipe)
    for term, out in zip(recipe.terms, data["terms"]):
        out["params"] = term_params(term)
    return data
