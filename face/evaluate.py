"""Face verification metrics: the LFW protocol's 10-fold accuracy and TAR at fixed FAR over all test pairs.

- `fold_accuracy` (Huang et al. 2007, LFW's "unrestricted" protocol as InsightFace evaluates it): for each
  of the folds, the similarity threshold that maximises the accuracy on the other folds is applied to the
  held-out fold; the mean and the standard deviation of the ten accuracies are reported.
- `tar_at_far`: over every pair of distinct test images, the threshold t is the smallest one that accepts
  at most a fraction ``far`` of the different-identity pairs (a pair is accepted when its similarity is
  above t); TAR is the fraction of same-identity pairs accepted at t (the IJB-style 1:1 operating point).
  With N different-identity pairs, a FAR below 1/N cannot be resolved: it is refused.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor


def cosine_matrix(embeddings: Tensor) -> Tensor:
    """(N, D) embeddings -> (N, N) cosine similarities (rows L2-normalised first)."""
    e = torch.nn.functional.normalize(embeddings.float(), dim=1)
    return e @ e.T


def _best_threshold(scores: Tensor, same: Tensor) -> tuple[float, float]:
    """(threshold, accuracy) maximising the accuracy of ``scores > threshold`` against ``same`` (exactly: every
    midpoint between consecutive sorted scores, and both ends, is a candidate)."""
    order = torch.argsort(scores)
    s, y = scores[order], same[order].long()
    n = len(s)
    # threshold below element k (k = 0..n): pairs k..n-1 are accepted
    pos_above = torch.cat([y.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.long)])  # positives at or after k
    neg_below = torch.cat([torch.zeros(1, dtype=torch.long), (1 - y).cumsum(0)])  # negatives before k
    correct = pos_above + neg_below
    # only cut between distinct scores
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[1:] > s[:-1]
    correct = torch.where(valid, correct, torch.full_like(correct, -1))
    k = int(torch.argmax(correct))
    if k == 0:
        t = float(s[0]) - 1e-6
    elif k == n:
        t = float(s[-1])
    else:
        t = float((s[k - 1] + s[k]) / 2)
    return t, int(correct[k]) / n


def fold_accuracy(scores: Tensor, same: Tensor, folds: Tensor) -> dict[str, float]:
    """LFW-protocol accuracy of pair ``scores`` (M,) with ``same`` (M,) in {0, 1} and ``folds`` (M,) fold ids.

    Returns ``{"acc": mean, "acc_std": sample std, "threshold": mean threshold}``.

    Raises:
        ValueError: fewer than 2 folds, or a fold without pairs.
    """
    ids = sorted(set(folds.tolist()))
    if len(ids) < 2:
        raise ValueError(f"the protocol needs at least 2 folds, got {len(ids)}")
    accs, thresholds = [], []
    for k in ids:
        held = folds == k
        if not held.any():
            raise ValueError(f"fold {k} has no pairs")
        t, _ = _best_threshold(scores[~held], same[~held])
        accs.append(float(((scores[held] > t).long() == same[held].long()).float().mean()))
        thresholds.append(t)
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
    return {"acc": mean, "acc_std": std, "threshold": sum(thresholds) / len(thresholds)}


def all_pairs(similarity: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(same-identity scores, different-identity scores) over every pair i < j of an (N, N) similarity matrix."""
    n = len(labels)
    i, j = torch.triu_indices(n, n, offset=1)
    scores = similarity[i, j]
    same = labels[i] == labels[j]
    return scores[same], scores[~same]


def tar_at_far(positives: Tensor, negatives: Tensor, fars: Sequence[float] = (1e-3, 1e-4)) -> dict[float, tuple[float, float]]:
    """``{far: (tar, threshold)}``: accept when the score is above the threshold; the threshold admits at most
    ``far`` of the negatives.

    Raises:
        ValueError: no positives, or a ``far`` below 1 / (number of negatives) (not resolvable).
    """
    if len(positives) == 0:
        raise ValueError("no same-identity pairs: TAR is undefined")
    neg = torch.sort(negatives.float(), descending=True).values
    out = {}
    for far in fars:
        k = math.floor(far * len(neg))
        if k < 1:
            raise ValueError(f"FAR {far:g} needs at least {math.ceil(1 / far):,} different-identity pairs, got {len(neg):,}")
        t = float(neg[k]) if k < len(neg) else float(neg[-1]) - 1e-6
        out[far] = (float((positives.float() > t).float().mean()), t)
    return out


@torch.no_grad()
def embed(model: torch.nn.Module, images: Tensor, batch_size: int = 512, device: Any = "cpu") -> Tensor:
    """uint8 (N, C, H, W) images -> (N, D) L2-normalised embeddings (eval mode, on the CPU)."""
    model = model.to(device).eval()
    out = [model(images[i:i + batch_size].to(device).float() / 255.0).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.nn.functional.normalize(torch.cat(out), dim=1)


def verification(embeddings: Tensor, labels: Tensor, pairs: Tensor) -> dict[str, float]:
    """The card's metrics: ``tar_far_1e-3`` and ``tar_far_1e-4`` over all pairs of distinct test images, and the
    10-fold ``acc`` (± ``acc_std``) on the LFW-style ``pairs`` (folds, M, 3), with its mean ``threshold``."""
    sim = cosine_matrix(embeddings)
    pos, neg = all_pairs(sim, labels)
    tar = tar_at_far(pos, neg, (1e-3, 1e-4))
    flat = pairs.reshape(-1, 3)
    folds = torch.arange(pairs.shape[0]).repeat_interleave(pairs.shape[1])
    acc = fold_accuracy(sim[flat[:, 0], flat[:, 1]], flat[:, 2], folds)
    return {"tar_far_1e-3": tar[1e-3][0], "tar_far_1e-4": tar[1e-4][0], **acc,
            "positives": float(len(pos)), "negatives": float(len(neg))}
