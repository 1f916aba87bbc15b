"""The face task's loss terms and named recipes (registered when `zoo.tasks` loads the task's recipes).

Taps (`zoo.face.models.FaceRecognizer`): ``embedding`` (N, D) before normalisation, ``head_weight`` the
margin head's class weights (C, D), ``body.layer1..3`` the trunk's stages; ``logits`` the margin logits.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from zoo.distiller import TermContext, TermModule, term_builder
from zoo.recipes import Recipe, Term, register_recipe

TASK = "face"
PROXYLESS = "Shi et al. 2020, ProxylessKD: Direct Knowledge Distillation with Inherited Classifier for Face Recognition"


def inherited_margin_loss(embeddings: torch.Tensor, teacher_weight: torch.Tensor, labels: torch.Tensor,
                          s: float = 64.0, m: float = 0.5) -> torch.Tensor:
    """ProxylessKD: ArcFace cross-entropy of the student's ``embeddings`` (N, D) against the teacher's class
    weights (C, D), which are not trained (detached): the student learns embeddings in the teacher's space,
    with the teacher's classifier. The ArcFace target logit is s cos(theta_y + m) (Deng et al. 2019, eq. 3,
    with InsightFace's continuation past pi - m), the others s cos(theta_j).

    Raises:
        ValueError: embedding and weight dimensions differ (the student's embedding must live in the
            teacher's space), or a label outside the teacher's classes.
    """
    if embeddings.shape[1] != teacher_weight.shape[1]:
        raise ValueError(f"the student's embedding has {embeddings.shape[1]} dimensions, the teacher's classifier "
                         f"{teacher_weight.shape[1]}: ProxylessKD needs the student's embedding in the teacher's space")
    if int(labels.max()) >= teacher_weight.shape[0]:
        raise ValueError(f"label {int(labels.max())} is outside the teacher's {teacher_weight.shape[0]} classes")
    cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(teacher_weight.detach().float(), dim=1)).clamp(-1, 1)
    target = cos.gather(1, labels[:, None])
    sin = (1 - target * target).clamp(min=0).sqrt()
    phi = target * math.cos(m) - sin * math.sin(m)
    phi = torch.where(target > math.cos(math.pi - m), phi, target - math.sin(math.pi - m) * m)
    return F.cross_entropy(s * cos.scatter(1, labels[:, None], phi), labels)


class _Inherited(TermModule):
    def __init__(self, s: float, m: float) -> None:
        super().__init__()
        self.s, self.m = s, m

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return inherited_margin_loss(student[0], teacher[0], batch["labels"], self.s, self.m)


@term_builder("inherited_margin", inherited_margin_loss)
def _inherited(ctx: TermContext) -> TermModule:
    """ProxylessKD: the student's embedding under the teacher's (frozen) ArcFace classifier (Shi et al. 2020)."""
    if len(ctx.student) != 1 or len(ctx.teacher) != 1:
        raise ValueError(f"term {ctx.term.name!r} (inherited_margin) taps the student's embedding and the teacher's "
                         "head_weight")
    e, w = ctx.student[0], ctx.teacher[0]
    if e.dim() != 2 or w.dim() != 2 or e.shape[1] != w.shape[1]:
        raise ValueError(f"term {ctx.term.name!r} (inherited_margin): student embedding {tuple(e.shape)} and teacher "
                         f"classifier {tuple(w.shape)} must share the embedding dimension (the teacher's space)")
    # the inherited classifier must cover the data's identities (checked here by index; that they are the same
    # identities in the same order is the user's to ensure: a card records the data set and its identity count)
    labels = ctx.example_labels
    if labels is not None and len(labels) and int(labels.max()) >= w.shape[0]:
        raise ValueError(f"term {ctx.term.name!r} (inherited_margin): the teacher's classifier has {w.shape[0]} "
                         f"identities, the training data uses identity {int(labels.max())}; ProxylessKD inherits the "
                         "classifier of a teacher trained on the same identities (embedding-kd takes any teacher)")
    return _Inherited(float(ctx.params["s"]), float(ctx.params["m"]))


def embedding_l2_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean_i || s_i / |s_i| - t_i / |t_i| ||^2 over the batch (= 2 - 2 cos(s_i, t_i)): the L2 distance of the
    L2-normalised embeddings, the space verification compares them in (raw embeddings are unbounded).

    Raises:
        ValueError: shapes differ (apply a connector first)."""
    if student.shape != teacher.shape:
        raise ValueError(f"embedding_l2 needs equal shapes (a connector first): {tuple(student.shape)} vs {tuple(teacher.shape)}")
    return (F.normalize(student.float(), dim=1) - F.normalize(teacher.float(), dim=1)).pow(2).sum(1).mean()


class _EmbeddingL2(TermModule):
    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.connector = torch.nn.Linear(student_dim, teacher_dim, bias=False) if student_dim != teacher_dim else torch.nn.Identity()

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return embedding_l2_loss(self.connector(student[0]), teacher[0])


@term_builder("embedding_l2")
def _embedding_l2(ctx: TermContext) -> TermModule:
    """L2 between the normalised student and teacher embeddings (a linear connector when the sizes differ)."""
    if len(ctx.student) != 1 or len(ctx.teacher) != 1 or ctx.student[0].dim() != 2 or ctx.teacher[0].dim() != 2:
        raise ValueError(f"term {ctx.term.name!r} (embedding_l2) taps one (N, D) embedding of each network")
    return _EmbeddingL2(int(ctx.student[0].shape[1]), int(ctx.teacher[0].shape[1]))


DDL = ("Huang et al. 2020, Improving Face Recognition from Hard Samples via Distribution Distillation Loss "
       "(ECCV 2020, arXiv:2002.03662)")


def soft_histogram(similarities: torch.Tensor, bins: int = 1000, sigma: float = 0.1) -> torch.Tensor:
    """The differentiable similarity distribution of DDL (Huang et al. 2020, sec. 3): a Gaussian kernel of
    width ``sigma`` around each similarity, read at ``bins`` points t_k = k / bins on [0, 1),
    h_k = sum_i exp(-(s_i - t_k)^2 / (2 sigma^2)), normalised to sum 1 (as the authors' TFace code,
    torchkit/loss/ddl.py).

    Args: similarities: (n,) cosine similarities, n >= 1.
    Returns: (bins,) probabilities.
    Raises: ValueError: no similarities, or bins < 2 / sigma <= 0."""
    if similarities.numel() == 0:
        raise ValueError("soft_histogram needs at least one similarity")
    if bins < 2 or sigma <= 0:
        raise ValueError(f"soft_histogram needs bins >= 2 and sigma > 0, got bins={bins}, sigma={sigma}")
    t = torch.arange(bins, device=similarities.device, dtype=torch.float32) / bins
    h = torch.exp(-0.5 * ((similarities.float().reshape(-1, 1) - t) / sigma) ** 2).sum(0)
    return h / h.sum()


def hardest_negatives(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For each image i, its hardest negative: max over j > i with another identity of cos(e_i, e_j) (DDL's
    negative pairs, the upper triangle of the similarity matrix). Rows with no such j are dropped; the
    authors' code instead keeps them as 0 (the masked entries of triu), which puts a spurious 0 in the
    negative distribution.

    Args: embeddings: (n, D); labels: (n,) identities.
    Returns: (m,) similarities, m <= n - 1."""
    n = len(embeddings)
    if n < 2:
        return embeddings.new_zeros(0).float()
    e = F.normalize(embeddings.float(), dim=1)
    sim = e @ e.t()
    valid = torch.ones(n, n, dtype=torch.bool, device=e.device).triu(1) & (labels[:, None] != labels[None, :])
    best = sim.masked_fill(~valid, float("-inf")).max(1).values
    return best[valid.any(1)]


def _kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """KL(p || q) of two histograms, each shifted by ``eps`` (as the authors' code)."""
    p, q = p + eps, q + eps
    return (p * (p.log() - q.log())).sum()


def ddl_loss(easy_positive: torch.Tensor, easy_negative: torch.Tensor, hard_positive: torch.Tensor,
             hard_negative: torch.Tensor, pos_kl_weight: float = 0.1, neg_kl_weight: float = 0.02,
             order_weight: float = 0.5, positive_threshold: float = 0.0, bins: int = 1000,
             sigma: float = 0.1) -> torch.Tensor:
    """The distribution distillation loss (Huang et al. 2020, sec. 3): the similarity distributions of the
    easy samples (the "teacher" distributions P+, P-) teach those of the hard samples (the "student" ones
    Q+, Q-), and an order term pulls the expected positive similarity above the expected negative one:

        L = w+ KL(P+ || Q+) + w- KL(P- || Q-) + w_o sum_{a, b in {easy, hard}} (E[s-_a] - E[s+_b])

    with the distributions from `soft_histogram`, positives kept above ``positive_threshold``, and the
    weights of the authors' code (TFace torchkit/loss/ddl.py: 0.1, 0.02, 0.5). Gradients reach both branches,
    as there. A branch with no positive (negative) similarity in the batch drops the terms that need it.

    Args: each a 1-D tensor of cosine similarities: positive pairs, and hardest negatives (`hardest_negatives`).
    Returns: a scalar.
    Raises: ValueError: a similarity tensor that is not 1-D."""
    for name, v in (("easy_positive", easy_positive), ("easy_negative", easy_negative),
                    ("hard_positive", hard_positive), ("hard_negative", hard_negative)):
        if v.dim() != 1:
            raise ValueError(f"ddl_loss: {name} must be 1-D similarities, got shape {tuple(v.shape)}")
    easy_positive = easy_positive[easy_positive > positive_threshold]
    hard_positive = hard_positive[hard_positive > positive_threshold]
    total = (easy_positive.sum() + hard_positive.sum() + easy_negative.sum() + hard_negative.sum()) * 0.0
    if len(easy_positive) and len(hard_positive):
        total = total + pos_kl_weight * _kl(soft_histogram(easy_positive, bins, sigma),
                                            soft_histogram(hard_positive, bins, sigma))
    if len(easy_negative) and len(hard_negative):
        total = total + neg_kl_weight * _kl(soft_histogram(easy_negative, bins, sigma),
                                            soft_histogram(hard_negative, bins, sigma))
    for negative in (easy_negative, hard_negative):
        for positive in (easy_positive, hard_positive):
            if len(negative) and len(positive):
                total = total + order_weight * (negative.float().mean() - positive.float().mean())
    return total


NO_HARD = ("ddl needs to know which images are hard: the data says none (a FaceDataset with `faces` and "
           "meta['typefaces'] naming one of HARD_FACES, as the cjk-fonts data has; for your own data, mark the hard "
           "images' typefaces or sources the same way)")


class _DDL(TermModule):
    """DDL on identity-paired training batches (`zoo.face.data.FaceDataset.batch`): images 2i and 2i + 1
    share an identity; a pair is hard when either image is (``batch["hard"]``)."""

    # 8 pairs: with 2 of the 13 typefaces hard, smaller batches leave the hard negative histogram empty in
    # most steps (measured: at 8 images it is built in 27% of the steps, at 16 in 72%)
    min_batch = 16

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        e, labels = student[0], batch["labels"]
        if batch.get("hard") is None:
            raise ValueError(NO_HARD)
        if not batch.get("paired"):
            raise ValueError("ddl needs identity-paired training batches (the face task's training split: "
                             "FaceDataset.batch(..., augment=True))")
        half = len(e) // 2
        first, second = e[0:2 * half:2], e[1:2 * half:2]
        if not torch.equal(labels[0:2 * half:2], labels[1:2 * half:2]):
            raise ValueError("ddl: images 2i and 2i + 1 of the batch must share an identity (identity-paired batches)")
        hard = batch["hard"][0:2 * half:2] | batch["hard"][1:2 * half:2]
        positive = (F.normalize(first.float(), dim=1) * F.normalize(second.float(), dim=1)).sum(1)
        anchor_labels = labels[0:2 * half:2]
        easy_neg = hardest_negatives(first[~hard], anchor_labels[~hard])
        hard_neg = hardest_negatives(first[hard], anchor_labels[hard])
        return ddl_loss(positive[~hard], easy_neg, positive[hard], hard_neg, **self.params)


@term_builder("ddl", ddl_loss)
def _ddl(ctx: TermContext) -> TermModule:
    """DDL (Huang et al. 2020): the easy pairs' similarity distributions teach the hard pairs' ones."""
    if len(ctx.student) != 1 or ctx.teacher or ctx.student[0].dim() != 2:
        raise ValueError(f"term {ctx.term.name!r} (ddl) taps the student's (N, D) embedding and no teacher")
    if ctx.batch is not None and ctx.batch.get("hard", None) is None:
        raise ValueError(NO_HARD)
    if int(ctx.params["bins"]) != ctx.params["bins"] or ctx.params["bins"] < 2 or not ctx.params["sigma"] > 0:
        raise ValueError(f"ddl needs an integer bins >= 2 and sigma > 0, got bins={ctx.params['bins']}, "
                         f"sigma={ctx.params['sigma']}")
    for key in ("pos_kl_weight", "neg_kl_weight", "order_weight"):
        if not ctx.params[key] >= 0:
            raise ValueError(f"ddl.{key} must be >= 0 (a negative weight rewards the distributions drifting apart), "
                             f"got {ctx.params[key]}")
    return _DDL(**ctx.params)


for _recipe in [
    # the baseline ProxylessKD compares with (the "proxy task" of Shi et al. 2020's abstract: the student mimics
    # the teacher's embedding): the L2 distance of the normalised embeddings (through a linear
    # connector when the dimensions differ) alone, no margin loss of its own (task weight 0). On raw embeddings
    # the distance is unbounded (an undertrained teacher's reach 1e5 and the run diverges). With the student's
    # own ArcFace loss beside it (--set task_weight=1) the L2 term (at most 4) is swamped by ArcFace's (about
    # 20-70) and the student collapses like its twin at 8 epochs (benchmarks/results, README face section).
    Recipe("embedding-kd", [Term("embedding_l2", student="embedding", teacher="embedding", weight=1.0)], task_weight=0.0,
           paper="the embedding L2 baseline of Shi et al. 2020 (ProxylessKD)",
           description="L2 between the student's and the teacher's normalised embeddings (linear connector), "
                       "no margin loss: the student mimics the teacher's embedding"),
    # RKD (Park et al. 2019, eqs. 4-7: the distance- and angle-wise relations of the batch's embeddings, the
    # paper's weights 25 and 50) on the embeddings, alone (task weight 0: ours, as ArcFace from scratch does not
    # leave its collapse at this budget). Relations are what verification compares, and they ignore what the
    # normalised L2 of embedding-kd cannot get past: the teacher's embeddings share one dominant direction
    # (different identities at cosine 0.94, the same at 0.996), so the L2 is lowest near that common direction.
    Recipe("embedding-rkd", [Term("rkd", student="embedding", teacher="embedding", weight=1.0)], task_weight=0.0,
           paper="Park et al. 2019, Relational Knowledge Distillation (CVPR)",
           description="the distance- and angle-wise relations of the teacher's embeddings (RKD-DA), no margin loss"),
    # RKD as Park et al. 2019 train a student (sec. 3, eq. 3 added to the task loss: L_task + L_RKD, with the
    # paper's weights 25 and 50 inside the term): the relations beside the student's own ArcFace loss (its own
    # head, trained, as the twin's). RKD alone gives structure early but no margin between the training
    # identities; ArcFace from scratch gives the margin but leaves its early collapse late (README face section).
    Recipe("embedding-rkd-arcface", [Term("rkd", student="embedding", teacher="embedding", weight=1.0)],
           task_weight=1.0, paper="Park et al. 2019, Relational Knowledge Distillation (CVPR)",
           description="ArcFace (s 64, m 0.5, the student's own head) + the distance- and angle-wise relations of "
                       "the teacher's embeddings (RKD-DA)"),
    # the student's own head is not trained (task weight 0): its classifier is the teacher's, frozen
    # DDL distils within the student (its easy pairs teach its hard pairs), on top of its own ArcFace loss;
    # easy/hard are the printed vs. brush-script typefaces (zoo.face.data.HARD_FACES)
    Recipe("ddl", [Term("ddl", student="embedding", teacher=None)], task_weight=1.0, teachers=0, paper=DDL,
           description="ArcFace + the distribution distillation loss: the similarity distributions of easy pairs "
                       "(printed typefaces) teach those of hard pairs (brush script) (Huang et al. 2020)"),
    Recipe("proxyless-kd", [Term("inherited_margin", student="embedding", teacher="head_weight")], task_weight=0.0,
           paper=PROXYLESS, description="ArcFace (s 64, m 0.5) on the student's embedding with the teacher's classifier "
                                        "inherited and frozen (Shi et al. 2020)"),
]:
    _recipe.task = TASK
    register_recipe(_recipe)
