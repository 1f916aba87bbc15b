"""Recipes: a KD method as data — its loss terms, their taps and weights, and its schedule.

A `Term` names a loss (see `zoo.distiller.TERM_BUILDERS`), where its student and teacher inputs are
tapped, its weight, its hyperparameters, and the fraction of training during which it is active.
A tap spec is ``"logits"`` (the model's output) or a module path (``"layer3"``); a suffix ``@k``
picks model k of the cohort or of the teachers (default 0) and ``@*`` passes all of them as a list.
`override()` applies ``--set key=value`` strings to a recipe and its training settings.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .train import TrainConfig


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
    task: str = "classification"  # the models its taps name (CIFAR-style ResNets, or nlp TextClassifiers)

    def term(self, name: str) -> Term:
        for t in self.terms:
            if t.name == name:
                return t
        raise KeyError(f"recipe {self.name!r} has no term {name!r}; terms: {', '.join(t.name for t in self.terms)}")


def _kd(weight: float = 0.9, T: float = 4.0, **kw: Any) -> Term:
    return Term("kd", weight=weight, params={"T": T}, **kw)


# Shared defaults across recipes, as in the survey's Table 1 protocol (one set of hyperparameters for all).
RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


def list_recipes(task: str | None = None) -> list[str]:
    """Names of every registered recipe (of ``task`` only, when given)."""
    return sorted(n for n, r in RECIPES.items() if task is None or r.task == task)


def get_recipe(name: str) -> Recipe:
    """A fresh copy of recipe ``name``."""
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, RECIPES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown recipe {name!r}.{hint} Recipes: {', '.join(list_recipes())}")
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
            return type(current)(value) if isinstance(current, float) or float(value).is_integer() else value
        raise ValueError(f"{key} must be a number, got {value!r}")
    if isinstance(current, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(current)(value)
        raise ValueError(f"{key} must be a list, got {value!r}")
    return value


def override(recipe: Recipe, cfg: TrainConfig, settings: dict[str, Any]) -> tuple[Recipe, TrainConfig]:
    """Apply ``--set`` settings. Keys: a TrainConfig field (``lr``), a recipe field (``task_weight``),
    ``T`` (every term's temperature), or ``TERM.FIELD`` / ``TERM.PARAM`` (``kd.weight``, ``kd.T``).
    An unknown key or a value of the wrong type is an error that lists the valid keys."""
    recipe = copy.deepcopy(recipe)
    train_keys = {f.name for f in fields(TrainConfig)}
    recipe_keys = {"task_weight", "cohort", "assistant", "branches", "gate"}
    term_fields = {"weight", "start", "stop", "student", "teacher", "warmup"}
    train_updates: dict[str, Any] = {}
    for key, value in settings.items():
        if key in train_keys:
            train_updates[key] = _coerce(value, getattr(cfg, key), key)
        elif key in recipe_keys:
            setattr(recipe, key, _coerce(value, getattr(recipe, key), key))
        elif key == "T":
            hits = [t for t in recipe.terms if "T" in t.params]
            if not hits:
                raise ValueError(f"recipe {recipe.name!r} has no term with a temperature T")
            for t in hits:
                t.params["T"] = _coerce(value, t.params["T"], key)
        elif "." in key:
            term_name, attr = key.split(".", 1)
            term = recipe.term(term_name)
            if attr in term_fields:
                setattr(term, attr, _coerce(value, getattr(term, attr), key))
            elif attr in term.params:
                term.params[attr] = _coerce(value, term.params[attr], key)
            else:
                valid = sorted(term_fields | set(term.params))
                raise ValueError(f"term {term_name!r} has no setting {attr!r}; valid: {', '.join(valid)}")
            Term.__post_init__(term)
        else:
            valid = sorted(train_keys | recipe_keys | {"T"}) + [f"{t.name}.{{{','.join(sorted(term_fields | set(t.params)))}}}" for t in recipe.terms]
            raise ValueError(f"unknown setting {key!r}; valid: {', '.join(valid)}")
    merged = {**asdict(cfg), **recipe.train, **train_updates}
    return recipe, TrainConfig(**merged)


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data (for cards and logs)."""
    return asdict(recipe)


# ---------------------------------------------------------------- the named recipes
# Loss weights follow the papers / the CRD benchmark code's defaults for CIFAR ResNets; taps are the
# stage outputs of the CIFAR ResNets (layer1..layer3, avgpool) and fit any torchvision-style ResNet.
_STAGES = ["layer1", "layer2", "layer3"]
HINTON = "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network"

for _recipe in [
    Recipe("plain", [], task_weight=1.0, teachers=0,
           description="cross-entropy on the labels only: the no-KD baseline (what `zoo train` runs)"),
    Recipe("kd", [_kd()], task_weight=0.1, paper=HINTON,
           description="soft targets at temperature T: 0.1*CE + 0.9*T^2*KL (survey eq. 1)"),
    # As mdistiller runs it (megvii-research/mdistiller, mdistiller/distillers/DKD.py and configs/cifar100/dkd/):
    # CE weight 1, alpha 1, T 4, the DKD weight ramped over the first 20 of 240 epochs (warmup 1/12), and
    # beta 2, its tuned value for the zoo's pair ResNet-56 -> ResNet-20 (res56_res20.yaml; beta 8 is the
    # paper's value for its other CIFAR-100 pairs: --set dkd.beta=8).
    Recipe("dkd", [Term("dkd", params={"alpha": 1.0, "beta": 2.0, "T": 4.0}, warmup=20 / 240)],
           paper="Zhao et al. 2022, Decoupled Knowledge Distillation",
           description="target-class and non-target-class KD weighted separately, ramped in over 1/12 of training"),
    Recipe("gated-kd", [Term("gated_kd", weight=0.9, params={"T": 4.0})], task_weight=0.1,
           paper="Meng et al. 2019 (survey section 2.1)",
           description="KD only where the teacher is right; the true label where it is wrong"),
    Recipe("adaptive-kd", [Term("adaptive_kd", weight=0.9, params={"T": 4.0, "beta": 2.0, "gamma": 2.0})],
           task_weight=0.1, paper="Wen et al. 2021, Preparing lessons (dynamic temperature distillation)",
           description="KD with a per-sample temperature set from the teacher's confidence"),
    Recipe("fitnet", [Term("fitnet", student="layer2", teacher="layer2", weight=100.0)],
           paper="Romero et al. 2015, FitNets: Hints for Thin Deep Nets",
           description="CE + hint loss between the middle stages through a 1x1-conv regressor (survey eq. 2)"),
    Recipe("fitnet-2stage",
           [Term("fitnet", student="layer2", teacher="layer2", weight=100.0, stop=0.2),
            Term("ce", teacher=None, weight=0.1, start=0.2), _kd(start=0.2)],
           task_weight=0.0, paper="Romero et al. 2015, FitNets: Hints for Thin Deep Nets",
           description="stage 1 (first 20%): hint loss only; stage 2: KD (0.1*CE + 0.9*KD)"),
    Recipe("at", [Term("at", student=_STAGES, teacher=_STAGES, weight=1000.0, params={"p": 2, "squared": True})],
           paper="Zagoruyko & Komodakis 2017, Paying More Attention to Attention",
           description="CE + attention-map transfer at the end of every stage"),
    # Weight 1 on the entry-mean FSP loss: at the beta = 50 that the CRD benchmark uses for its FSP
    # initialisation stage, CE + FSP from a trained ResNet-56 left ResNet-20 at chance (10% top-1 after
    # 60 steps, its features collapsed), weight 5 at 46%, weight 1 at 72% (Fashion-MNIST, 2560 images).
    # FSP matching alone (the paper's first stage) stalled at the same loss within 20 steps at weights 1
    # and 50, so no two-stage recipe is offered until that is understood.
    Recipe("fsp", [Term("fsp", student=_STAGES, teacher=_STAGES, weight=1.0)],
           paper="Yim et al. 2017, A Gift from Knowledge Distillation",
           description="CE + FSP (Gram) matrices between consecutive stages"),
    Recipe("afd", [Term("afd", student="layer3", teacher="layer3", weight=100.0)],
           paper="Wang et al. 2020a, as the survey describes it (section 2.2.2, eq. 3)",
           description="CE + learned selection of student channels matched to teacher channel groups"),
    Recipe("eskd", [_kd(stop=0.5), Term("ce", teacher=None, weight=0.9, start=0.5)], task_weight=0.1,
           paper="Cho & Hariharan 2019, On the Efficacy of Knowledge Distillation",
           description="KD for the first half of training (kd.stop), then the true labels only"),
    Recipe("takd", [_kd()], task_weight=0.1, assistant="resnet32",
           paper="Mirzadeh et al. 2020, Improved Knowledge Distillation via Teacher Assistant (arXiv 2019)",
           description="KD teacher -> assistant (default resnet32), then assistant -> student"),
]:
    register_recipe(_recipe)

_PEERS_AND_FEATURES = ["branches.0", "branches.1", "branches.2", "branches.0.pool", "branches.1.pool"]
for _recipe in [
    Recipe("rkd", [Term("rkd", student="avgpool", teacher="avgpool", weight=1.0,
                        params={"w_distance": 25.0, "w_angle": 50.0})],
           paper="Park et al. 2019b, Relational Knowledge Distillation",
           description="CE + distance- and angle-wise relations between the samples' embeddings"),
    Recipe("spkd", [Term("spkd", student="layer3", teacher="layer3", weight=3000.0)],
           paper="Tung & Mori 2019, Similarity-Preserving Knowledge Distillation",
           description="CE + matching the batch's sample-similarity matrices of the last stage"),
    Recipe("irg", [Term("irg", student=["layer2", "layer3", "logits"], teacher=["layer2", "layer3", "logits"],
                        weight=1.0)],
           paper="Liu et al. 2019a, Knowledge Distillation via Instance Relationship Graph",
           description="CE + instance-relationship-graph vertices, edges and transformations"),
    Recipe("crd", [Term("crd", student="avgpool", teacher="avgpool", weight=0.8)],
           paper="Tian, Krishnan & Isola 2020, Contrastive Representation Distillation",
           description="CE + contrastive (NCE) objective with a memory bank of embeddings"),
    Recipe("dml", [Term("dml", student="logits@*", teacher=None, params={"T": 1.0})], task_weight=0.0,
           cohort=3, teachers=0, paper="Zhang et al. 2018, Deep Mutual Learning",
           description="3 students learn together, each from the others' predictions (survey eq. 5)"),
    Recipe("one", [Term("one", student=["branches.0", "branches.1", "branches.2", "gate"], teacher=None,
                        params={"T": 3.0})], task_weight=0.0, teachers=0, branches=3, gate=True,
           paper="Lan, Zhu & Gong 2018, Knowledge Distillation by On-the-Fly Native Ensemble",
           description="3 branches on a shared trunk distil from their gated ensemble; branch 0 is deployed"),
    Recipe("okddip", [Term("okddip", student=_PEERS_AND_FEATURES, teacher=None, params={"T": 3.0})],
           task_weight=0.0, teachers=0, branches=3,
           paper="Chen et al. 2020a, Online Knowledge Distillation with Diverse Peers",
           description="2 peers with attention-weighted targets + a group leader (branch 2, deployed)"),
    Recipe("byot", [Term("byot", student=["layer1", "layer2", "layer3", "logits"], teacher=None,
                         params={"alpha": 0.3, "lam": 0.03, "T": 3.0})], task_weight=0.0, teachers=0,
           paper="Zhang et al. 2019, Be Your Own Teacher",
           description="shallow-section classifiers learn from the deepest one (survey eq. 6)"),
    Recipe("avg-kd", [Term("avg_kd", student="logits", teacher="logits@*", weight=0.9, params={"T": 4.0})],
           task_weight=0.1, teachers=3, paper="You et al. 2017, Learning from Multiple Teacher Networks",
           description="KD from the average of 3 teachers' soft targets (survey eq. 7)"),
    Recipe("altkd", [Term("attention_kd", student=["logits", "avgpool"], teacher=["logits@*", "avgpool@*"],
                          weight=0.9, params={"T": 4.0})]
           + [Term("fitnet", student="layer2", teacher=f"layer2@{k}", weight=100.0 / 3, name=f"hint{k}")
              for k in range(3)]
           + [Term("rkd_angle", student="avgpool", teacher=f"avgpool@{k}", weight=50.0 / 3, name=f"angle{k}")
              for k in range(3)],
           task_weight=0.1, teachers=3,
           paper="Liu, Zhang & Wang 2020d, Adaptive multi-teacher multi-level knowledge distillation",
           description="KD from attention-weighted teachers + hint and angle losses to each teacher"),
    Recipe("gan-kd", [Term("gan", weight=1.0, params={"hidden": [128, 128], "conditional": True}), _kd()],
           task_weight=0.1, paper="Xu et al. 2018, KD with conditional adversarial networks (survey eqs. 9-10)",
           description="KD + a conditional discriminator telling teacher from student logits"),
    Recipe("rco", [Term("kd", teacher=f"logits@{k}", weight=0.9, params={"T": 4.0}, start=k / 3,
                        stop=(k + 1) / 3, name=f"kd{k}") for k in range(3)],
           task_weight=0.1, teachers=3,
           paper="Jin et al. 2019, Knowledge Distillation via Route Constrained Optimization (survey eq. 8)",
           description="KD from 3 snapshots of the teacher's training, earliest first (--teacher in that order)"),
]:
    register_recipe(_recipe)

from .nlp import recipes as _nlp_recipes  # noqa: E402,F401  (registers the transformer recipes: tinybert-*, pkd, ...)
