"""Named recipes for transformer distillation, with the layer mapping filled in for given depths.

`recipe(name, student_layers, teacher_layers)` returns the recipe with TinyBERT's uniform mapping
g(m) = m N / M (`zoo.nlp.losses.layer_map`); the registered defaults are for a 4-layer student and a
12-layer teacher (TinyBERT-4 from a BERT-base-sized teacher).
"""
from __future__ import annotations

from dataclasses import replace

from zoo.recipes import RECIPES, Recipe, Term, register_recipe, term_params

from . import terms as _terms  # noqa: F401  (registers the transformer loss terms with the core)
from .losses import layer_map

TINYBERT = "Jiao et al. 2020, TinyBERT: Distilling BERT for Natural Language Understanding"
NLP_RECIPES = ("tinybert-general", "tinybert-intermediate", "tinybert-prediction", "pkd", "distilbert-kd", "finetune")


def _intermediate(m: int, n: int) -> list[Term]:
    g = layer_map(m, n)
    return [Term("hidden_mse", student="hidden.0", teacher="hidden.0", name="embedding"),
            Term("hidden_mse", student=[f"hidden.{i}" for i in range(1, m + 1)], teacher=[f"hidden.{j}" for j in g],
                 name="hidden"),
            Term("attention_mse", student=[f"scores.{i}" for i in range(1, m + 1)], teacher=[f"scores.{j}" for j in g],
                 name="attention")]


def recipe(name: str, student_layers: int = 4, teacher_layers: int = 12, temperature: float | None = None) -> Recipe:
    """The transformer recipe ``name`` for a student of ``student_layers`` and a teacher of ``teacher_layers``;
    ``temperature`` replaces the T of its terms that have one (eq. 10's t for ``tinybert-prediction``)."""
    built = _nlp(_build(name, student_layers, teacher_layers))
    if temperature is not None:
        built.terms = [replace(t, params={**t.params, "T": temperature}) if "T" in term_params(t) else t
                       for t in built.terms]
    return built


def _build(name: str, m: int, n: int) -> Recipe:
    g = layer_map(m, n)
    if name == "tinybert-general":
        return Recipe(name, _intermediate(m, n), task_weight=0.0, paper=TINYBERT,
                      description="[nlp] general distillation: embedding, hidden-state and attention-score MSE "
                                  "(eqs. 7-9) on a plain corpus")
    if name == "tinybert-intermediate":
        return Recipe(name, _intermediate(m, n), task_weight=0.0, paper=TINYBERT,
                      description="[nlp] task distillation, step 1: the intermediate layers (eqs. 7-9) on the task data")
    if name == "tinybert-prediction":
        return Recipe(name, [Term("soft_ce", name="prediction")], task_weight=0.0, paper=TINYBERT,
                      description="[nlp] task distillation, step 2: soft cross-entropy on the logits (eq. 10)")
    if name == "pkd":
        # The soft term is T^2 * KL (the `kd` term), as the authors' distillation_loss computes it
        # (intersun/PKD-for-BERT-Model-Compression: KLDivLoss(batchmean) * T * T), for which a = 0.5, T = 10
        # and beta = 100 were tuned; the patient loss is their mean form (see zoo.nlp.losses.patient_loss).
        return Recipe(name, [Term("kd", weight=0.5, params={"T": 10.0}, name="soft"),
                             Term("patient", student=[f"hidden.{i}" for i in range(1, m)],
                                  teacher=[f"hidden.{j}" for j in g[:-1]], weight=100.0)],
                      task_weight=0.5, paper="Sun et al. 2019, Patient Knowledge Distillation for BERT Model Compression",
                      description="[nlp] (1-a) CE + a T^2 KL(T) + b * [CLS]-state patient loss over the mapped layers "
                                  "(PKD-skip; a = 0.5, T = 10, b = 100)")
    if name == "distilbert-kd":
        # T^2 * KL(batchmean), as Hugging Face's distiller.py computes DistilBERT's loss_ce
        return Recipe(name, [Term("kd", weight=1.0, params={"T": 2.0}, name="soft"),
                             Term("cosine_hidden", student=f"hidden.{m}", teacher=f"hidden.{n}", weight=1.0,
                                  name="cosine")],
                      task_weight=1.0, paper="Sanh et al. 2019, DistilBERT, a distilled version of BERT",
                      description="[nlp] CE + T^2 KL(T=2) + cosine loss between the last hidden states (task-specific)")
    if name == "finetune":
        return Recipe(name, [], task_weight=1.0, teachers=0,
                      description="[nlp] cross-entropy only: a transformer fine-tuned without distillation")
    raise ValueError(f"unknown nlp recipe {name!r}; known: {', '.join(NLP_RECIPES)}")


def _nlp(built: Recipe) -> Recipe:
    built.task = "nlp"
    return built


for _name in NLP_RECIPES:
    if not dict.__contains__(RECIPES, _name):
        register_recipe(recipe(_name))
