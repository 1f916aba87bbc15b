"""TinyBERT's data augmentation (Jiao et al. 2020, sec. 3.3, Algorithm 1), adapted to what exists offline.

The paper replaces words to grow the task data (N_a = 20 new sentences per example): each word is,
with probability p_t = 0.4, swapped for one of K = 15 candidates, which BERT's masked-language model
proposes for single-piece words and GloVe nearest neighbours for the others.

Neither a masked-language model nor GloVe vectors can be had offline here (../shared/DATA.md), so the
candidates are the word's **WordNet synonyms**: the other lemmas of every synset the word belongs to
(any part of speech), at most K of them, from Debian ``wordnet-base``. Words without a synonym stay.
N_a, p_t and K are the paper's defaults and can be changed. Note: on the ``wordnet-topic`` task the
synonyms come from the same lexicon the labels do; they never bring in another example's gloss.
"""
from __future__ import annotations

import random
import re
from typing import Iterable, Sequence

from .data import wordnet_synsets

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


class Synonyms:
    """word -> candidate replacements (lower case), from groups of synonymous lemmas."""

    def __init__(self, groups: Iterable[Sequence[str]], max_candidates: int = 15) -> None:
        table: dict[str, dict[str, None]] = {}
        for group in groups:
            lemmas = [g.lower() for g in group]
            for w in lemmas:
                bucket = table.setdefault(w, {})
                for other in lemmas:
                    if other != w:
                        bucket[other] = None
        self.table = {w: list(c)[:max_candidates] for w, c in table.items() if c}

    @classmethod
    def from_wordnet(cls, root: str | None = None, max_candidates: int = 15) -> "Synonyms":
        return cls((lemmas for _, _, _, lemmas in wordnet_synsets(root)), max_candidates)

    def __call__(self, word: str) -> list[str]:
        return self.table.get(word.lower(), [])


def augment_text(text: str, synonyms: Synonyms, rng: random.Random, p: float = 0.4) -> str:
    """One augmented copy of ``text``: each word with a synonym is replaced with probability ``p``."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        candidates = synonyms(word)
        if not candidates or rng.random() >= p:
            return word
        new = rng.choice(candidates)
        return new.capitalize() if word[0].isupper() else new

    return _WORD.sub(swap, text)


def augment(texts: Sequence[str], labels: Sequence[int], synonyms: Synonyms, n: int = 20, p: float = 0.4,
            seed: int = 0) -> tuple[list[str], list[int]]:
    """The originals followed by up to ``n`` distinct augmented copies of each (Algorithm 1), same labels.

    Deterministic for a given ``seed``; copies equal to their original or to an earlier copy are dropped.
    """
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    rng = random.Random(seed)
    out_texts, out_labels = list(texts), list(labels)
    for text, label in zip(texts, labels):
        seen = {text}
        for _ in range(n):
            new = augment_text(text, synonyms, rng, p)
            if new not in seen:
                seen.add(new)
                out_texts.append(new)
                out_labels.append(label)
    return out_texts, out_labels
