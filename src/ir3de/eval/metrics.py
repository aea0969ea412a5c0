"""Routing metrics and the paper's normalized performance.

Routing accuracy is computed from a confusion matrix (rows: gold domain, columns: routed
expert, both in the setting's domain order): *micro* accuracy is the share of prompts
routed to their own domain's expert, *balanced* accuracy the mean of the per-domain
accuracies (so a large test set does not hide a weak domain).

*Normalized performance* (the paper's Tables 1 and 2) needs, for every test prompt and every
expert, a score: the expert's perplexity on the prompt (lower is better) or its task
score (higher is better), given as JSONL lines ``{"id": ..., "expert": ..., "score": ...}``.
Per domain, a method's performance is the mean score of the experts it routed the
domain's prompts to; it is normalized by the *domain expert* (the expert of the prompt's
gold domain): ``expert / method`` for perplexity, ``method / expert`` for task scores, so
1.0 is the domain expert and higher is better in both. The *experts average* row is the
mean over experts of each expert's normalized performance when it gets every prompt.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..data import read_jsonl
from ..errors import IR3DEError

__all__ = ["RoutingMetrics", "metrics_from_confusion", "normalized_performance",
           "read_scores", "routing_metrics"]

ScoreKind = Literal["perplexity", "task"]


@dataclass(frozen=True)
class RoutingMetrics:
    """Accuracy figures of one router on one test set (fractions in [0, 1])."""

    domains: list[str]
    confusion: np.ndarray  # (domains, domains) counts: gold row, routed column
    micro: float
    balanced: float
    per_domain: dict[str, float]

    def to_dict(self) -> dict:
        return {"micro": self.micro, "balanced": self.balanced, "per_domain": self.per_domain,
                "confusion": self.confusion.tolist(), "domains": self.domains}


def routing_metrics(gold: Sequence[str], routed: Sequence[str],
                    domains: Sequence[str]) -> RoutingMetrics:
    """Confusion matrix, micro, balanced and per-domain accuracy.

    Domains without test prompts are left out of the balanced mean (their accuracy is
    NaN). A routed label outside ``domains`` is an error.

    >>> m = routing_metrics(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    >>> m.micro, m.balanced
    (0.6666666666666666, 0.75)
    """
    from sklearn.metrics import confusion_matrix

    if len(gold) != len(routed):
        raise IR3DEError(f"{len(gold)} gold labels but {len(routed)} routing decisions")
    if not gold:
        raise IR3DEError("no test prompts to score")
    domains = list(domains)
    unknown = sorted(set(routed) - set(domains) | set(gold) - set(domains))
    if unknown:
        raise IR3DEError(f"labels {unknown} are not among the domains {domains}")
    return metrics_from_confusion(confusion_matrix(list(gold), list(routed), labels=domains),
                                  domains)


def metrics_from_confusion(cm: np.ndarray, domains: Sequence[str]) -> RoutingMetrics:
    """Micro, balanced and per-domain accuracy of a confusion matrix (gold rows); a domain
    without test prompts gets NaN and stays out of the balanced mean."""
    cm = np.asarray(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(cm) / cm.sum(axis=1)
    per_domain = {d: float(r) for d, r in zip(domains, recall, strict=True)}
    return RoutingMetrics(list(domains), cm, float(np.trace(cm) / cm.sum()),
                          float(np.nanmean(recall)), per_domain)


def read_scores(path: str | os.PathLike[str]) -> dict[tuple[str, str], float]:
    """``{(prompt id, expert): score}`` from a JSONL score file; duplicates are errors."""
    scores: dict[tuple[str, str], float] = {}
    for lineno, record in enumerate(read_jsonl(path), 1):
        try:
            key = (str(record["id"]), str(record["expert"]))
            score = float(record["score"])
        except (KeyError, TypeError, ValueError):
            raise IR3DEError(f"{path}: record {lineno} needs 'id', 'expert' and a numeric "
                             "'score'") from None
        if not math.isfinite(score):
            raise IR3DEError(f"{path}: record {lineno} has a non-finite score")
        if key in scores:
            raise IR3DEError(f"{path}: record {lineno} repeats id {key[0]!r} for expert "
                             f"{key[1]!r}")
        scores[key] = score
    if not scores:
        raise IR3DEError(f"{path}: no scores")
    return scores


def normalized_performance(scores: Mapping[tuple[str, str], float], ids: Sequence[str],
                           gold: Sequence[str], routed: Mapping[str, Sequence[str]], *,
                           kind: ScoreKind, experts: Sequence[str]) -> dict[str, dict[str, float]]:
    """Normalized performance per row and domain, plus the row's ``"average"``.

    ``routed`` maps a method name to its decisions for ``ids``. Rows returned: every
    method, ``"experts average"`` and ``"domain expert"`` (1.0 by construction).

    >>> s = {("p1", "a"): 2.0, ("p1", "b"): 4.0, ("p2", "a"): 8.0, ("p2", "b"): 4.0}
    >>> out = normalized_performance(s, ["p1", "p2"], ["a", "b"], {"r": ["a", "a"]},
    ...                              kind="perplexity", experts=["a", "b"])
    >>> out["r"]["a"], out["r"]["b"]
    (1.0, 0.5)
    """
    if kind not in ("perplexity", "task"):
        raise IR3DEError(f"score kind must be 'perplexity' or 'task', got {kind!r}")
    missing = [(i, e) for i in ids for e in experts if (i, e) not in scores]
    if missing:
        raise IR3DEError(f"{len(missing)} (id, expert) scores missing, e.g. id "
                         f"{missing[0][0]!r} for expert {missing[0][1]!r}")
    domains = list(dict.fromkeys(gold))

    def mean_score(choice: Sequence[str], domain: str) -> float:
        return float(np.mean([scores[(i, e)] for i, e, g in zip(ids, choice, gold, strict=True)
                              if g == domain]))

    def normalize(value: float, reference: float) -> float:
        return reference / value if kind == "perplexity" else value / reference

    expert_ref = {d: mean_score(gold, d) for d in domains}
    rows: dict[str, dict[str, float]] = {}
    for name, choice in routed.items():
        if len(choice) != len(ids):
            raise IR3DEError(f"{name}: {len(choice)} decisions for {len(ids)} prompts")
        rows[name] = {d: normalize(mean_score(choice, d), expert_ref[d]) for d in domains}
    rows["experts average"] = {
        d: float(np.mean([normalize(mean_score([e] * len(ids), d), expert_ref[d])
                          for e in experts])) for d in domains}
    rows["domain expert"] = dict.fromkeys(domains, 1.0)
    for row in rows.values():
        row["average"] = float(np.mean([row[d] for d in domains]))
    return rows
