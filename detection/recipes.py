"""Chen et al. 2017 as a recipe: the detector's loss parts with their weights (registered when `zoo.tasks`
loads the task's recipes).

A Faster R-CNN student is trained on nine loss parts, each a `zoo.recipes.Term` of the ``chen2017``
recipe: the four hard parts of Faster R-CNN (``rpn_cls``, ``rpn_reg``, ``rcn_cls``, ``rcn_reg``) and the
five distillation parts (``rpn_soft``, ``rpn_bounded``, ``rcn_soft``, ``rcn_bounded``, ``backbone_hint``). Their
weights come from the paper's symbols (`chen_recipe`):

    L_RPN = mu L_hard + (1 - mu) L_soft + lam (L_reg + nu L_b)        (eqs. 1-2, 4; the same for the RCN)
    L     = L_RPN + L_RCN + gamma L_hint                                (eq. 1)

so a part's weight is mu, 1 - mu, lam, lam * nu or gamma. The parts need the student's own sampled
anchors and proposals, so `zoo.detection.distill.DetectionDistiller` computes them (the core Distiller
cannot, and refuses them with that message); ``--set rcn_soft.weight=0.8`` and the parts' parameters
(``rpn_soft.background_weight``, ``rcn_bounded.margin``) are overridden as for any recipe.
"""
from __future__ import annotations

from typing import Any

from zoo.distiller import TermContext, TermModule, term_builder
from zoo.recipes import Recipe, Term, register_recipe

from .losses import BACKGROUND_WEIGHT, bounded_regression_loss, objectness_soft_loss

TASK = "detection"
CHEN_PAPER = "Chen et al. 2017, Learning Efficient Object Detection Models with Knowledge Distillation (NeurIPS)"
# Chen et al. 2017, sec. 3 and 4: mu (hard vs soft classification), nu (bounded regression), lam
# (regression vs classification), gamma (hint); the margin m of the bounded loss; w_0 of the soft loss.
CHEN_2017 = {"mu": 0.5, "nu": 0.5, "lam": 1.0, "gamma": 0.5, "margin": 0.0, "background_weight": BACKGROUND_WEIGHT}
HARD_PARTS = ("rpn_cls", "rpn_reg", "rcn_cls", "rcn_reg")
SOFT_PARTS = ("rpn_soft", "rpn_bounded", "rcn_soft", "rcn_bounded", "backbone_hint")


def _inside_the_detector(ctx: TermContext) -> TermModule:
    raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) is a part of the Faster R-CNN loss: it needs the "
                     "student's sampled anchors and proposals, which only zoo.detection.distill.DetectionDistiller "
                     "has; train detectors with `zoo distill detection` / zoo.distill(recipe='chen2017')")


for _part in HARD_PARTS + ("backbone_hint",):
    term_builder(_part)(_inside_the_detector)
term_builder("rpn_soft", objectness_soft_loss)(_inside_the_detector)
term_builder("rcn_soft", background_weight=BACKGROUND_WEIGHT)(_inside_the_detector)
term_builder("rpn_bounded", bounded_regression_loss)(_inside_the_detector)
term_builder("rcn_bounded", bounded_regression_loss)(_inside_the_detector)


def chen_recipe(mu: float = CHEN_2017["mu"], nu: float = CHEN_2017["nu"], lam: float = CHEN_2017["lam"],
                gamma: float = CHEN_2017["gamma"], margin: float = CHEN_2017["margin"],
                background_weight: float = CHEN_2017["background_weight"]) -> Recipe:
    """The ``chen2017`` recipe for the paper's symbols (defaults: the paper's values, `CHEN_2017`).

    Raises:
        ValueError: ``mu`` outside [0, 1] (it splits the classification loss between hard and soft).
    """
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu weighs the hard against the soft loss and must be in [0, 1], got {mu}")
    soft = {"background_weight": background_weight}
    bounded = {"margin": margin}
    terms = [Term("rpn_cls", teacher=None, weight=mu), Term("rpn_soft", weight=1 - mu, params=dict(soft)),
             Term("rpn_reg", teacher=None, weight=lam), Term("rpn_bounded", weight=lam * nu, params=dict(bounded)),
             Term("rcn_cls", teacher=None, weight=mu), Term("rcn_soft", weight=1 - mu, params=dict(soft)),
             Term("rcn_reg", teacher=None, weight=lam), Term("rcn_bounded", weight=lam * nu, params=dict(bounded)),
             Term("backbone_hint", student="backbone", teacher="backbone", weight=gamma)]
    return Recipe("chen2017", terms, task_weight=0.0, teachers=1, paper=CHEN_PAPER, task=TASK,
                  description=f"Faster R-CNN parts: hard classification mu={mu}, soft 1-mu, regression lam={lam}, "
                              f"bounded lam*nu (nu={nu}, margin {margin}), hint gamma={gamma} (Chen et al. 2017)")


def part_weights(recipe: Recipe | None) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """(weight of each part, parameters of each part) of a detection recipe; None (the plain detector):
    the four hard parts at weight 1.

    Raises:
        ValueError: a term that is not a part, a part twice, or a schedule (start/stop/warmup) the
            detector does not apply.
    """
    if recipe is None:
        return {p: 1.0 for p in HARD_PARTS}, {}
    weights, params = {}, {}
    for t in recipe.terms:
        if t.loss not in HARD_PARTS + SOFT_PARTS:
            raise ValueError(f"recipe {recipe.name!r}: term {t.name!r} ({t.loss}) is not a Faster R-CNN part; the parts "
                             f"are {', '.join(HARD_PARTS + SOFT_PARTS)}")
        if t.loss in weights:
            raise ValueError(f"recipe {recipe.name!r} weighs the part {t.loss!r} twice")
        if (t.start, t.stop, t.warmup) != (0.0, 1.0, 0.0):
            raise ValueError(f"recipe {recipe.name!r}: term {t.name!r} has a schedule (start/stop/warmup), which the "
                             "detector does not apply")
        weights[t.loss] = float(t.weight)
        params[t.loss] = dict(t.params)
    return weights, params


def recipe_dict_of(recipe: Recipe | None) -> dict[str, Any] | None:
    """The recipe as a card records it (`zoo.recipes.recipe_dict`), None for the plain detector."""
    from zoo.recipes import recipe_dict

    return recipe_dict(recipe) if recipe is not None else None


register_recipe(chen_recipe())
