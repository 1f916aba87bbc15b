"""A unified compression-and-accuracy score for distilled students (the survey's open problem 3, section 6).

The survey (Si and Qi 2023, sec. 6, point 3) notes that compression papers set the compression rate and the
change in accuracy side by side "by some rule", which makes methods hard to compare, and asks for a unified
measure. kdzoo's answer is one number in **bits**, computed from a card and its teacher:

    retention   R = m_s / m_t                 (higher-is-better metric; R = m_t / m_s when lower is better)
    compression c_k = log2(cost_t,k / cost_s,k)   for each cost k in {params, MACs, CPU latency} known for both
    C           = mean of the c_k             (bits: 1 = half the teacher's cost, 3 = an eighth)
    score       S = C + w * log2(R)           (bits), w = QUALITY_WEIGHT = 12.5 by default

``S`` is the student's cost advantage over its teacher after charging ``w`` bits for every halving of the
teacher's quality: ``2**S`` is how many times cheaper than the teacher the student is, counted at that
exchange rate. ``w`` is calibrated on torchvision's ImageNet ResNets, where going from ResNet-18 to ResNet-34
doubles the parameters 0.90 times (11,689,512 -> 21,797,672) and multiplies top-1 by 1.051 (69.758 % ->
73.314 %, torchvision's weights metadata): w = 0.899 / log2(1.051) = 12.5. So a student that trades quality
for size exactly as that plain family does scores about 0, and a positive score is a better trade than
shrinking the teacher's family. Higher is better; a student equal to its teacher in quality and cost scores 0.

The raw numbers (metric, params, MACs, latency, gain over the twin) stay in every table; the score is shown
beside them, never instead of them.

Failure modes (what the score cannot tell, and when it is None):

- **No teacher metric** or no common cost: the score is None and ``reason`` says which is missing (plain
  entries have no teacher; some reports give none).
- **Ratios need a meaningful zero.** Retention divides metric values, so a metric that can be 0 or negative
  (a Frechet distance of 0, SSIM below 0) gives None. Accuracy near chance still gives a finite, misleading
  retention: a 10-class model at 10 % "retains" 0.11 of a 94 % teacher, and nothing marks chance.
- **One exchange rate for every task.** ``w`` comes from ImageNet classification and parameters; mAP, mIoU or
  text accuracy scale differently with size, and MACs or latency differently from parameters. Compare scores
  within one task, data set and metric, and pass ``weight`` to change the rate.
- **Costs are what the cards hold.** Params count stored weights (embeddings, training-only heads if kept);
  MACs depend on the input size; latency depends on the machine, so it is used only when student and teacher
  were timed in the same environment (``latency_env``). Entries scored on different axes (``axes``) are not
  strictly comparable; reported entries usually have params only, and their params may be estimates.
- **Teacher and student measured apart.** For reported entries both numbers are the publisher's, possibly on
  different evaluation settings; the score inherits any mismatch.
- **It scores the student, not the method.** Compression alone earns bits, so a distilled student below its
  own plain twin can still score well: such a student is flagged (``below-twin``), because distillation made it
  worse than training it plainly. A student above its teacher gets a bonus (R > 1) and is flagged
  (``beats-teacher``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from .registry import ModelCard

QUALITY_WEIGHT = 12.5  # bits of compression one halving of retention costs (torchvision ResNet-18 -> 34)
AXES = ("params", "macs", "latency")
UNIT = "bits"


@dataclass
class Score:
    """The score of one student and what it is made of.

    ``value`` (bits) is None when it cannot be computed, with ``reason`` saying why; ``retention`` is the
    fraction of the teacher's metric kept (1.0 = the teacher's quality); ``compression`` maps each cost axis
    used to log2(teacher cost / student cost) in bits; ``flags`` name conditions a reader should know.
    """

    value: float | None
    retention: float | None = None
    compression: dict[str, float] = field(default_factory=dict)
    metric: str | None = None
    teacher: str | None = None
    weight: float = QUALITY_WEIGHT
    reason: str | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def axes(self) -> list[str]:
        """The cost axes the compression term averages."""
        return list(self.compression)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, ``axes`` and the unit included."""
        return {**asdict(self), "axes": self.axes, "unit": UNIT}


def retention(student: float, teacher: float, higher_is_better: bool = True) -> float:
    """The fraction of the teacher's quality the student keeps: ``student / teacher`` for a higher-is-better
    metric, ``teacher / student`` for a lower-is-better one (1.0: equal; above 1: better than the teacher).

    Raises:
        ValueError: a value is not positive (a ratio of such values has no meaning).
    """
    if not (student > 0 and teacher > 0) or not (math.isfinite(student) and math.isfinite(teacher)):
        raise ValueError(f"retention needs positive metric values, got student {student} and teacher {teacher}")
    return student / teacher if higher_is_better else teacher / student


def compression_bits(teacher_cost: float, student_cost: float) -> float:
    """log2(teacher_cost / student_cost): 1 bit per halving of the teacher's cost (negative: the student costs more).

    Raises:
        ValueError: a cost is not positive.
    """
    if not (teacher_cost > 0 and student_cost > 0):
        raise ValueError(f"costs must be positive, got teacher {teacher_cost} and student {student_cost}")
    return math.log2(teacher_cost / student_cost)


def combine(retained: float, compression: dict[str, float], weight: float = QUALITY_WEIGHT) -> float:
    """The score in bits: the mean of the ``compression`` terms plus ``weight * log2(retained)``.

    Raises:
        ValueError: no compression term, or a retention that is not positive.
    """
    if not compression:
        raise ValueError("the score needs at least one cost axis")
    if retained <= 0:
        raise ValueError(f"retention must be positive, got {retained}")
    return sum(compression.values()) / len(compression) + weight * math.log2(retained)


def _costs(card: ModelCard) -> dict[str, float | None]:
    return {"params": card.params, "macs": card.flops / 2 if card.flops else None,
            "latency": card.latency_ms.get("cpu_bs1")}


def score_card(card: ModelCard, teacher: ModelCard | None = None, *, weight: float = QUALITY_WEIGHT) -> Score:
    """The score of ``card`` against its teacher.

    The teacher's metric and params come from ``card.teacher`` (the card's own record); its MACs and latency
    from ``teacher``, the teacher's own card when it is a zoo entry (latency only if timed in the same
    ``latency_env``). Never raises for a card: a missing piece gives ``value=None`` with the ``reason``.
    """
    from .tasks import task_spec

    metric = card.headline
    if card.teacher is None:
        return Score(None, metric=metric, weight=weight, reason="no teacher: the score is relative to a teacher")
    name = card.teacher.name
    info = task_spec(card.task).metric(metric)
    higher = True if info is None else info.higher_is_better
    t_value = (card.teacher.metrics or {}).get(metric)
    if t_value is None and teacher is not None and teacher.headline == metric:
        t_value = teacher.metrics.get(metric)
    if t_value is None:
        return Score(None, metric=metric, teacher=name, weight=weight,
                     reason=f"the teacher's {metric} is not recorded (card.teacher.metrics)")
    try:
        kept = retention(card.metrics[metric], t_value, higher)
    except ValueError as e:
        return Score(None, metric=metric, teacher=name, weight=weight, reason=f"{metric}: {e}")
    t_costs = {"params": card.teacher.params, "macs": None, "latency": None}
    if teacher is not None:
        theirs = _costs(teacher)
        t_costs["params"] = t_costs["params"] or theirs["params"]
        t_costs["macs"] = theirs["macs"]
        if card.latency_env and card.latency_env == teacher.latency_env:
            t_costs["latency"] = theirs["latency"]
    s_costs = _costs(card)
    comp = {k: compression_bits(t_costs[k], s_costs[k]) for k in AXES
            if t_costs[k] and s_costs[k] and t_costs[k] > 0 and s_costs[k] > 0}
    if not comp:
        return Score(None, retention=kept, metric=metric, teacher=name, weight=weight,
                     reason="no cost known for both the student and its teacher (params, MACs or latency)")
    flags = []
    gain = card.gain_over_baseline(metric)
    if gain is not None and gain < 0:
        flags.append("below-twin")
    if kept > 1:
        flags.append("beats-teacher")
    if any(v < 0 for v in comp.values()):
        flags.append("costlier-than-teacher")
    return Score(combine(kept, comp, weight), retention=kept, compression=comp, metric=metric, teacher=name,
                 weight=weight, flags=flags)


FLAG_TEXT = {
    "below-twin": "below its plain twin: distillation made it worse than training it plainly",
    "beats-teacher": "above its teacher's metric (retention > 1 adds to the score)",
    "costlier-than-teacher": "costs more than its teacher on an axis (negative compression)",
}


def score_cards(cards: Iterable[ModelCard], *, weight: float = QUALITY_WEIGHT,
                lookup: Callable[[str], ModelCard | None] | None = None) -> dict[str, Score]:
    """Scores by card name; each teacher's own card is looked up by name (`lookup`, default: the zoo registry)."""
    if lookup is None:
        from .api import REGISTRY

        def lookup(name: str) -> ModelCard | None:
            return REGISTRY.get(name) if name in REGISTRY else None

    out = {}
    for card in cards:
        teacher = lookup(card.teacher.name) if card.teacher else None
        out[card.name] = score_card(card, teacher, weight=weight)
    return out


def rank(scores: dict[str, Score]) -> list[str]:
    """Names of the scored entries, best first (entries without a score last, by name)."""
    scored = sorted((n for n, s in scores.items() if s.value is not None), key=lambda n: (-scores[n].value, n))
    return scored + sorted(n for n, s in scores.items() if s.value is None)
