"""The held-out part of the fit data that benchmark scripts choose settings on.

Every script that picks a setting (selector, k, μ, pooling, threshold) does it on a seeded
20 % of each domain's FIT prompts, never on test prompts; this module is that split, so
they all hold out the same prompts for a seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def holdout(groups: Mapping[str, Sequence[T]], seed: int = 0,
            fraction: float = 0.8) -> tuple[dict[str, list[T]], dict[str, list[T]]]:
    """``(inner, held)`` per domain: a seeded shuffle of each domain's items (one generator
    drawn in domain order), the first ``fraction`` to fit on and the rest held out."""
    rng = np.random.default_rng(seed)
    inner, held = {}, {}
    for domain, items in groups.items():
        perm = rng.permutation(len(items))
        cut = int(fraction * len(items))
        inner[domain] = [items[i] for i in perm[:cut]]
        held[domain] = [items[i] for i in perm[cut:]]
    return inner, held


def flatten(groups: Mapping[str, Sequence[T]]) -> tuple[list[T], list[str]]:
    """Items of every domain in one list, with each item's domain."""
    return ([x for items in groups.values() for x in items],
            [d for d, items in groups.items() for _ in items])


class TokenizedSplit:
    """One evaluation split tokenised once: per-domain fit prompts (``fit``), their inner
    80 % (``inner``), the held-out 20 % (``held``, gold domain indices ``held_y``) and the
    test prompts (``test``, ``test_y``); prompts without any token are left out of the fit."""

    def __init__(self, emb, split) -> None:
        self.domains = list(split.fit)
        self.fit = {d: [x for x in emb.encode_batch(split.fit[d]) if x.size]
                    for d in self.domains}
        self.inner, held = holdout(self.fit)
        self.held, held_labels = flatten(held)
        self.held_y = np.array([self.domains.index(d) for d in held_labels])
        self.test = emb.encode_batch(split.test_texts)
        self.test_y = np.array([self.domains.index(d) for d in split.test_labels])
