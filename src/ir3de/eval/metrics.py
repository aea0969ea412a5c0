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
Those ratios only rank methods when perplexities are > 0 and task scores >= 0 with a
domain expert's mean above 0 (:func:`validate_scores`): a negative score flips the order,
a zero one divides by zero.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..data import read_numbered_jsonl
from ..errors import IR3DEError, listed

__all__ = ["MAX_RESAMPLES", "RoutingMetrics", "bootstrap_balanced", "metrics_from_confusion",
           "normalized_performance", "percentile_interval", "read_scores", "routing_metrics",
           "validate_scores"]

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
    NaN). A routed label outside ``domains`` is an error. Lists and numpy arrays alike.

    >>> m = routing_metrics(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    >>> m.micro, m.balanced
    (0.6666666666666666, 0.75)
    """
    from sklearn.metrics import confusion_matrix

    # Plain lists of Python strings: a numpy array has no truth value, and its np.str_
    # items would print as np.str_('x') in the errors.
    gold, routed, domains = ([v.item() if isinstance(v, np.generic) else v for v in x]
                             for x in (gold, routed, domains))
    if len(gold) != len(routed):
        raise IR3DEError(f"{len(gold)} gold labels but {len(routed)} routing decisions")
    if not gold:
        raise IR3DEError("no test prompts to score")
    unknown = sorted(set(routed) - set(domains) | set(gold) - set(domains))
    if unknown:
        raise IR3DEError(f"labels {unknown} are not among the domains {domains}")
    return metrics_from_confusion(confusion_matrix(gold, routed, labels=domains), domains)


def metrics_from_confusion(cm: np.ndarray, domains: Sequence[str]) -> RoutingMetrics:
    """Micro, balanced and per-domain accuracy of a confusion matrix (gold rows); a domain
    without test prompts gets NaN and stays out of the balanced mean."""
    cm = np.asarray(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(cm) / cm.sum(axis=1)
    per_domain = {d: float(r) for d, r in zip(domains, recall, strict=True)}
    return RoutingMetrics(list(domains), cm, float(np.trace(cm) / cm.sum()),
                          float(np.nanmean(recall)), per_domain)


# The most bootstrap resamples: 8 bytes per router each, 80 MB for ten routers, where a
# percentile interval is stable to a tenth of a point from a few thousand.
MAX_RESAMPLES = 1_000_000
_RESAMPLE_BLOCK = 4096


def bootstrap_balanced(correct: np.ndarray, gold: Sequence[str], ids: Sequence[str] | None = None,
                       *, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Balanced accuracies of several routers on the same stratified bootstrap resamples.

    ``correct`` is a (routers, prompts) boolean matrix: whether each router sent each test
    prompt to its gold domain. Every resample draws, within each gold domain, as many
    prompts as the domain has, with replacement, so each domain keeps its size and the
    balanced mean stays a mean of the same domains (scipy's ``bootstrap`` cannot stratify).
    All routers share the resamples, so ``samples[a] - samples[b]`` is a *paired* bootstrap
    of their difference. With ``ids``, occurrences of one prompt (the same id and gold
    domain, e.g. a test prompt of every fold) are drawn together: they are one observation.
    Returns a (routers, resamples) array.

    >>> correct = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], bool)
    >>> samples = bootstrap_balanced(correct, ["a", "a", "b", "b"], resamples=500)
    >>> samples.shape, bool((samples[1] == 1).all()), bool((samples[0] <= 1).all())
    ((2, 500), True, True)
    """
    correct = np.asarray(correct)
    if correct.ndim != 2 or correct.dtype != bool:
        raise IR3DEError(f"correct must be a (routers, prompts) boolean matrix, got "
                         f"{correct.dtype} of shape {correct.shape}")
    if correct.shape[1] != len(gold) or (ids is not None and len(ids) != len(gold)):
        raise IR3DEError(f"{correct.shape[1]} decisions per router but {len(gold)} gold labels"
                         + ("" if ids is None else f" and {len(ids)} ids"))
    if not len(gold):
        raise IR3DEError("no test prompts to resample")
    if not 1 <= resamples <= MAX_RESAMPLES:  # (the result alone: 8 bytes per router each)
        raise IR3DEError(f"resamples must be from 1 to {MAX_RESAMPLES:,}, got {resamples}")
    keys = list(zip(gold, ids, strict=True)) if ids is not None else list(range(len(gold)))
    # Units: distinct (gold, id) pairs, each with its hits per router and its occurrences.
    unit_of = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    unit = np.fromiter((unit_of[k] for k in keys), np.int64, len(keys))
    hits = np.zeros((correct.shape[0], len(unit_of)))
    np.add.at(hits.T, unit, correct.T.astype(float))
    size = np.bincount(unit, minlength=len(unit_of)).astype(float)
    unit_gold = np.empty(len(unit_of), object)
    unit_gold[unit] = list(gold)
    rng = np.random.default_rng(seed)
    total = np.zeros((resamples, correct.shape[0]))
    domains = list(dict.fromkeys(gold))
    for domain in domains:
        members = np.flatnonzero(unit_gold == domain)
        uniform = np.full(members.size, 1 / members.size)
        # Multinomial counts: how often each unit is drawn in each resample, drawn in
        # blocks (memory bounded whatever resamples is; the same draws as one call).
        for start in range(0, resamples, _RESAMPLE_BLOCK):
            draws = rng.multinomial(members.size, uniform,
                                    size=min(_RESAMPLE_BLOCK, resamples - start)
                                    ).astype(float)
            total[start:start + draws.shape[0]] += (draws @ hits[:, members].T) / (
                draws @ size[members])[:, None]
    return (total / len(domains)).T


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples``.

    >>> percentile_interval(np.arange(101), 0.5)
    (25.0, 75.0)
    """
    if not 0 < level < 1:
        raise IR3DEError(f"level must be in (0, 1), got {level}")
    if not np.size(samples):  # np.quantile would fail with an IndexError
        raise IR3DEError("no bootstrap samples to take a percentile interval of")
    if not np.all(np.isfinite(samples)):  # np.quantile would give NaN bounds, or ±inf ones
        raise IR3DEError("bootstrap samples must be finite numbers (a NaN or Inf among them "
                         "has no place in an interval)")
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def read_scores(path: str | os.PathLike[str], *,
                experts: Collection[str] | None = None) -> dict[tuple[str, str], float]:
    """``{(prompt id, expert): score}`` from a JSONL score file; duplicates are errors, and
    so is, with ``experts`` given, a row of another expert (a misspelt expert's scores
    would otherwise go missing without a word)."""
    scores: dict[tuple[str, str], float] = {}
    for lineno, record in read_numbered_jsonl(path):
        try:
            key = (str(record["id"]), str(record["expert"]))
            score = record["score"]
        except KeyError:
            raise IR3DEError(f"{path}:{lineno}: record needs 'id', 'expert' and a numeric "
                             "'score'") from None
        # A JSON number only: float() would also read "1.0" and true, which are mistakes
        # in whatever wrote the file.
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise IR3DEError(f"{path}:{lineno}: 'score' must be a number, got "
                             f"{json.dumps(score)}")
        score = float(score)
        if not math.isfinite(score):
            raise IR3DEError(f"{path}:{lineno}: record has a non-finite score")
        if key in scores:
            raise IR3DEError(f"{path}:{lineno}: record repeats id {key[0]!r} for expert "
                             f"{key[1]!r}")
        if experts is not None and key[1] not in experts:
            raise IR3DEError(f"{path}:{lineno}: unknown expert {key[1]!r}; the experts are "
                             f"{listed(sorted(experts))}")
        scores[key] = score
    if not scores:
        raise IR3DEError(f"{path}: no scores")
    return scores


def validate_scores(scores: Mapping[tuple[str, str], float], kind: ScoreKind, *,
                    source: str | os.PathLike[str] | None = None,
                    ids: Sequence[str] | None = None, gold: Sequence[str] | None = None,
                    experts: Sequence[str] | None = None) -> None:
    """Raise :class:`IR3DEError` unless ``scores`` of ``kind`` give meaningful ratios.

    Every score must be a finite number, a perplexity > 0 and a task score >= 0: normalized
    performance divides by them (``expert / method``, ``method / expert``), so a negative
    score would rank a worse method above the domain expert and a zero one divide by zero.
    With the test prompts ``ids``, their ``gold`` domains and the ``experts``, it also checks
    that every (prompt, expert) score is there and that each domain expert's mean task score
    over its domain's prompts (the ratio's denominator) is not 0. ``source`` (the score
    file) prefixes the messages.

    >>> validate_scores({("p1", "math"): -2.0}, "perplexity", source="s.jsonl")
    Traceback (most recent call last):
    ...
    ir3de.errors.IR3DEError: s.jsonl: perplexity scores must be > 0 (normalized performance is \
a ratio of them), but id 'p1' for expert 'math' has -2.0
    """
    where = "" if source is None else f"{source}: "
    if kind not in ("perplexity", "task"):
        raise IR3DEError(f"score kind must be 'perplexity' or 'task', got {kind!r}")
    rule = "perplexity scores must be > 0" if kind == "perplexity" else \
        "task scores must be >= 0"

    def acceptable(value: object) -> bool:
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return math.isfinite(value) and (value > 0 if kind == "perplexity" else value >= 0)

    bad = [(k, v) for k, v in scores.items() if not acceptable(v)]
    if bad:
        (pid, expert), value = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise IR3DEError(f"{where}{rule} (normalized performance is a ratio of them), but id "
                         f"{pid!r} for expert {expert!r} has {value!r}{more}")
    if ids is None and gold is None and experts is None:
        return
    if ids is None or gold is None or experts is None:
        raise IR3DEError(f"{where}checking scores against test prompts needs ids, gold and "
                         "experts")
    if len(ids) != len(gold):
        raise IR3DEError(f"{where}{len(ids)} test ids but {len(gold)} gold labels")
    no_expert = sorted(set(gold) - set(experts))
    if no_expert:
        raise IR3DEError(f"{where}gold domains {no_expert} have no expert among "
                         f"{list(experts)}")
    missing = [(i, e) for i in ids for e in experts if (i, e) not in scores]
    if missing:
        raise IR3DEError(f"{where}{len(missing)} (id, expert) scores missing, e.g. id "
                         f"{missing[0][0]!r} for expert {missing[0][1]!r}")
    if kind == "task":
        for domain in dict.fromkeys(gold):
            own = [i for i, g in zip(ids, gold, strict=True) if g == domain]
            # Scores are >= 0 here, so a zero mean means every one of them is 0.
            if not any(scores[(i, domain)] for i in own):
                raise IR3DEError(
                    f"{where}expert {domain!r} scores 0 on all {len(own)} test prompts of its "
                    f"domain (e.g. id {own[0]!r}): task scores are normalized by the domain "
                    "expert's mean, which must not be 0")


def normalized_performance(scores: Mapping[tuple[str, str], float], ids: Sequence[str],
                           gold: Sequence[str], routed: Mapping[str, Sequence[str]], *,
                           kind: ScoreKind, experts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Normalized performance per row: ``{"domains": {domain: value}, "average": mean}``
    (the mean apart from the domains, which may have any name, ``"average"`` included).

    ``routed`` maps a method name to its decisions for ``ids``. Rows returned: every
    method, ``"experts average"`` and ``"domain expert"`` (1.0 by construction).

    >>> s = {("p1", "a"): 2.0, ("p1", "b"): 4.0, ("p2", "a"): 8.0, ("p2", "b"): 4.0}
    >>> out = normalized_performance(s, ["p1", "p2"], ["a", "b"], {"r": ["a", "a"]},
    ...                              kind="perplexity", experts=["a", "b"])
    >>> out["r"]["domains"], out["r"]["average"]
    ({'a': 1.0, 'b': 0.5}, 0.75)
    """
    validate_scores(scores, kind, ids=ids, gold=gold, experts=experts)
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
        unknown = sorted(set(choice) - set(experts))
        if unknown:  # they have no scores
            raise IR3DEError(f"{name}: routed to {unknown}, not among the experts "
                             f"{list(experts)}")
        rows[name] = {d: normalize(mean_score(choice, d), expert_ref[d]) for d in domains}
    rows["experts average"] = {
        d: float(np.mean([normalize(mean_score([e] * len(ids), d), expert_ref[d])
                          for e in experts])) for d in domains}
    rows["domain expert"] = dict.fromkeys(domains, 1.0)
    return {name: {"domains": row, "average": float(np.mean([row[d] for d in domains]))}
            for name, row in rows.items()}
