"""Choosing when to abstain: the gateway's fallback cuts from held-out prompts.

A router always names an expert. The gateway sends a prompt to its ``fallback`` expert
instead when the decision's ``confidence`` is below ``threshold``, or its ``coverage``
(the share of the prompt's distinct token pairs seen in the fit data; the ``default``
preset's routers) is below ``min_coverage``. :func:`calibrate` routes prompts the router
was not fitted on and, for each target share of prompts to keep, gives the cut that keeps
at least that share and what the kept prompts' balanced accuracy then is: an accuracy /
coverage table to choose a cut from, and the value to write in ``gateway.yaml``.

The prompts must be ones the router has not seen, or every cut looks better than it is
(a fit prompt's pairs are all "seen", so its coverage is 1). Two ways to get them:

* held-out prompts, labelled with their experts' names or not (without labels the table
  has the kept shares only);
* ``folds=N``: labelled prompts that *are* part of the router's fit data. The router's
  statistics are sums, so each fold's own statistics are subtracted from its experts'
  and the rest re-solved: exactly the router a fit without that fold would give
  (smoothing fixed at the full router's values), which then routes the fold. Prompts that
  were not part of the fit data can make counts negative, which is refused, or go
  unnoticed when their counts happen to fit; only pass the prompts the statistics were
  counted from.

Example:
    >>> from ir3de import Router
    >>> from ir3de.calibration import calibrate
    >>> router = Router().fit(["What is 2 + 2?", "Solve x + 1 = 3.", "Add 5 and 7.",
    ...                        "import os", "def f(): pass", "print(len(xs))"],
    ...                       ["math"] * 3 + ["code"] * 3)
    >>> table = calibrate(router, ["What is 3 + 9?", "import sys"], ["math", "code"],
    ...                   keep=[1.0, 0.5])
    >>> table.accuracy, [cut.kept for cut in table.cuts if cut.knob == "threshold"]
    (1.0, [1.0, 0.5])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from .errors import ExpertError, IR3DEError, listed, refuse_lone_text
from .router import Decision, Router
from .statistics import compute_stats

__all__ = ["DEFAULT_KEEP", "Calibration", "Cut", "calibrate", "render_plot"]

Knob = Literal["threshold", "min_coverage"]

#: The target shares of prompts to keep that :func:`calibrate` computes cuts for by default.
DEFAULT_KEEP: tuple[float, ...] = (1.0, 0.99, 0.98, 0.95, 0.9, 0.8)


@dataclass(frozen=True)
class Cut:
    """One gateway cut: prompts whose ``confidence`` (knob ``threshold``) or ``coverage``
    (knob ``min_coverage``) is below ``value`` go to the fallback expert.

    ``keep`` is the target share of prompts kept and ``kept`` the share this cut keeps on
    the calibration prompts (at least ``keep``: prompts tied at the cut are all kept).
    With labels, ``accuracy`` is the balanced accuracy of the kept prompts (the mean over
    gold domains with a kept prompt of the share routed to their own expert) and
    ``least_kept`` the gold domain with the smallest kept share, and that share.
    """

    knob: Knob
    keep: float
    value: float
    kept: float
    accuracy: float | None = None
    least_kept: tuple[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"knob": self.knob, "keep": self.keep, "value": self.value,
                               "kept": self.kept, "accuracy": self.accuracy}
        if self.least_kept is not None:
            out["least_kept"] = {"domain": self.least_kept[0], "kept": self.least_kept[1]}
        return out


@dataclass(frozen=True, eq=False)
class Calibration:
    """What :func:`calibrate` measured: every prompt's decision and the cuts.

    ``gold`` (labels given) and ``routed`` hold each prompt's gold domain and the expert
    the router chose; ``confidence`` and ``coverage`` (None for a router whose decisions
    carry none) its decision's values. ``accuracy`` is the balanced accuracy of every
    prompt (labels given). ``held_out`` says where the prompts came from: ``"given"`` or
    ``"N folds"``, and ``fold`` (with folds) each prompt's fold, from 0.
    """

    held_out: str
    routed: tuple[str, ...]
    confidence: np.ndarray
    coverage: np.ndarray | None
    gold: tuple[str, ...] | None
    accuracy: float | None
    cuts: tuple[Cut, ...]
    fold: np.ndarray | None = None

    @property
    def knobs(self) -> tuple[Knob, ...]:
        """The cuts this router's decisions allow: ``threshold``, and ``min_coverage``
        when they carry a coverage."""
        return ("threshold",) if self.coverage is None else ("threshold", "min_coverage")

    @property
    def seen(self) -> float | None:
        """The share of prompts whose every token pair occurs in the fit data (coverage
        1; None without coverage). Near 1 for the router's own fit prompts given without
        ``folds``, whose cuts then describe no new prompt."""
        return None if self.coverage is None else float(np.mean(self.coverage == 1.0))

    def kept(self, threshold: float = 0.0, min_coverage: float = 0.0) -> float:
        """The share of the prompts the gateway keeps with both cuts set (a prompt below
        either goes to the fallback)."""
        for name, value in (("threshold", threshold), ("min_coverage", min_coverage)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not np.isfinite(float(value)):  # (NaN kept nothing, without a word)
                raise IR3DEError(f"{name} must be a finite number, got {value!r}")
        keep = self.confidence >= threshold
        if self.coverage is not None:
            keep &= self.coverage >= min_coverage
        elif min_coverage > 0:
            raise IR3DEError("this router's decisions carry no coverage: min_coverage does "
                             "not apply")
        return float(np.mean(keep))

    def cut(self, knob: Knob, keep: float) -> Cut:
        """The cut of ``knob`` for the target share ``keep`` (one that was asked for)."""
        for cut in self.cuts:
            if cut.knob == knob and cut.keep == keep:
                return cut
        asked = sorted({c.keep for c in self.cuts}, reverse=True)
        raise IR3DEError(f"no {knob} cut keeping {keep:g} was computed (knobs "
                         f"{', '.join(self.knobs)}; shares {', '.join(f'{k:g}' for k in asked)})")

    def curve(self, knob: Knob) -> tuple[np.ndarray, np.ndarray]:
        """Every cut of ``knob`` at once: the kept share and the kept prompts' balanced
        accuracy for each distinct value as the cut, highest share first (labels
        needed); what a plot of accuracy against coverage draws."""
        if self.gold is None:
            raise IR3DEError("the accuracy of kept prompts needs labelled prompts")
        values = self._values(knob)
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        # A cut at a value keeps the prompts from its first place in value order onwards:
        # per domain, suffix sums give every cut's kept and correct counts at once.
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        gold, correct = np.array(self.gold)[order], self._correct()[order]
        recalls = []
        for domain in sorted(set(self.gold)):
            mine = gold == domain
            kept_here = np.cumsum(mine[::-1])[::-1][starts]
            right = np.cumsum((mine & correct)[::-1])[::-1][starts]
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls.append(np.where(kept_here > 0, right / kept_here, np.nan))
        return (len(values) - starts) / len(values), np.nanmean(np.array(recalls), axis=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the cuts, not the per-prompt values)."""
        return {"held_out": self.held_out, "prompts": len(self.routed),
                "domains": None if self.gold is None else sorted(set(self.gold)),
                "accuracy": self.accuracy, "cuts": [c.to_dict() for c in self.cuts]}

    def _values(self, knob: Knob) -> np.ndarray:
        if knob not in ("threshold", "min_coverage"):  # (a typo drew min_coverage's curve)
            raise IR3DEError(f"unknown knob {knob!r}; this router's are "
                             f"{', '.join(self.knobs)}")
        if knob == "threshold":
            return self.confidence
        if self.coverage is None:
            raise IR3DEError("this router's decisions carry no coverage (it needs the token-"
                             "pair table of the default preset): only threshold applies")
        return self.coverage

    def _correct(self) -> np.ndarray:
        assert self.gold is not None
        return np.array(self.gold, dtype=object) == np.array(self.routed, dtype=object)


def calibrate(router: Router, texts: Iterable[str], labels: Iterable[str] | None = None, *,
              keep: Iterable[float] = DEFAULT_KEEP, folds: int | None = None,
              seed: int = 0, token_ids: Sequence[np.ndarray] | None = None) -> Calibration:
    """Route ``texts`` and compute, for each share in ``keep``, the ``threshold`` and
    (with a pair table) ``min_coverage`` cut that keeps it.

    ``texts`` must be prompts the router was not fitted on, unless ``folds`` is given:
    then they (with their ``labels``) must be part of its fit data, and each of ``folds``
    seeded folds (stratified by label) is routed by the router re-solved without that
    fold's statistics (see the module's docstring; the copies of a text share a fold).
    ``labels`` name each prompt's expert;
    without them the cuts carry kept shares only. ``token_ids``: the texts' ids as
    :meth:`Router.encode` gives them, when the caller has them already (checked as
    :meth:`Router.route_batch` checks them); they are not tokenised again for routing.

    Raises :class:`~ir3de.errors.EmptyInputError` for a prompt with no token to route on,
    :class:`~ir3de.errors.ExpertError` for a label that is not one of the router's
    experts, and :class:`~ir3de.errors.IR3DEError` for bad shares or folds.
    """
    if not isinstance(router, Router):  # (was an AttributeError on first use)
        raise IR3DEError(f"calibrate needs a fitted Router, got {type(router).__name__}")
    refuse_lone_text(texts, "texts")
    texts = list(texts)
    if not texts:
        raise IR3DEError("no prompts to calibrate on")
    gold = None if labels is None else _labels(labels, len(texts), router.experts)
    shares = _shares(keep)
    if token_ids is None:
        ids = router.encode(texts)  # a blank prompt, or one without a token, is named here
    else:
        ids = list(token_ids)  # (checked by route_batch, which routes every prompt)
        if len(ids) != len(texts):
            raise IR3DEError(f"{len(ids)} token-id arrays for {len(texts)} texts")
    fold = None
    if folds is None:
        decisions = router.route_batch(texts, token_ids=ids)
        held_out = "given"
    else:
        if gold is None:
            raise IR3DEError("folds need labels: each fold's statistics come off its "
                             "experts' statistics")
        fold = _fold_of(texts, gold, _folds(folds, gold), seed)
        decisions = _cross_fitted(router, texts, ids, gold, fold)
        held_out = f"{folds} folds"
    confidence = np.array([d.confidence for d in decisions])
    coverage = np.array([d.coverage for d in decisions], dtype=float) \
        if router.reports_coverage else None
    routed = tuple(d.expert for d in decisions)
    table = Calibration(held_out, routed, confidence, coverage, gold, None, (), fold)
    accuracy = None if gold is None else \
        _balanced(table._correct(), gold, np.ones(len(texts), bool))[0]
    cuts = tuple(_cut(table, knob, share) for knob in table.knobs for share in shares)
    return replace(table, accuracy=accuracy, cuts=cuts)


def _labels(labels: Iterable[str], n: int, experts: Sequence[str]) -> tuple[str, ...]:
    refuse_lone_text(labels, "labels")
    gold = tuple(labels)
    if len(gold) != n:
        raise IR3DEError(f"{n} texts but {len(gold)} labels")
    for i, label in enumerate(gold):
        if not isinstance(label, str):
            raise IR3DEError(f"label #{i} is {type(label).__name__} {label!r}, not a string "
                             "naming an expert")
    unknown = sorted(set(gold) - set(experts))
    if unknown:
        raise ExpertError(f"labels {listed([repr(u) for u in unknown])} are not among the "
                          "router's experts "
                          f"({listed(list(experts))}): calibration prompts are labelled "
                          "with the expert they belong to")
    return gold


def _shares(keep: Iterable[float]) -> list[float]:
    if isinstance(keep, (int, float, np.number)) or (isinstance(keep, np.ndarray)
                                                     and keep.ndim == 0):
        raise IR3DEError(f"keep is a list of shares of prompts to keep, got the number {keep!r} "
                         "(pass [share] for one)")
    if isinstance(keep, (str, bytes)) or not isinstance(keep, Iterable):
        raise IR3DEError(f"keep is a list of shares of prompts to keep, got "
                         f"{type(keep).__name__} {keep!r}")
    shares = set()
    for share in keep:
        if isinstance(share, bool) or not isinstance(share, (int, float, np.number)) \
                or not 0 < share <= 1:
            raise IR3DEError(f"a share of prompts to keep is a number in (0, 1], got {share!r}")
        shares.add(float(share))
    if not shares:
        raise IR3DEError("no share of prompts to keep was given")
    return sorted(shares, reverse=True)


def _folds(folds: int, gold: Sequence[str]) -> int:
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise IR3DEError(f"folds must be an integer of at least 2, got {folds!r}")
    if folds > len(gold):
        raise IR3DEError(f"{folds} folds but only {len(gold)} prompts")
    return int(folds)


def _fold_of(texts: list[str], gold: tuple[str, ...], folds: int, seed: int) -> np.ndarray:
    """Each prompt's fold, seeded and stratified: each fold holds ~1/folds of a domain's
    distinct texts, and every copy of a text is in one fold, also copies labelled with
    different experts (a copy left in the re-solved router would make its twin look seen:
    cuts too strict for new prompts; copies in two experts' fit data went to folds of
    their own, and each held-out copy had coverage 1)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise IR3DEError(f"seed must be an integer >= 0, got {seed!r}")
    fold = np.empty(len(gold), int)
    rng = np.random.default_rng(seed)
    assigned: dict[str, int] = {}  # a text's fold, once an expert's copy of it has one
    for domain in sorted(set(gold)):
        mine = np.flatnonzero(np.array(gold) == domain)
        distinct, copy_of = np.unique(np.array([texts[i] for i in mine], dtype=object),
                                      return_inverse=True)
        of_distinct = np.empty(len(distinct), int)
        of_distinct[rng.permutation(len(distinct))] = np.arange(len(distinct)) % folds
        # (drawn as before, then overridden: folds without shared texts stay as they were)
        for j, text in enumerate(distinct):
            of_distinct[j] = assigned.setdefault(text, int(of_distinct[j]))
        fold[mine] = of_distinct[copy_of]
    return fold


def _cross_fitted(router: Router, texts: list[str], ids: list[np.ndarray],
                  gold: tuple[str, ...], fold: np.ndarray) -> list[Decision]:
    """Each prompt's decision by the router re-solved without its fold's statistics."""
    folds = int(fold.max()) + 1
    config = _pinned(router)
    full = router.stats
    decisions: dict[int, Decision] = {}
    for f in range(folds):
        members = np.flatnonzero(fold == f)
        if not members.size:
            continue
        rest = dict(full)
        for domain in sorted({gold[i] for i in members}):
            tfidf = full[domain].tfidf
            part = compute_stats(router.embedder,
                                 [texts[i] for i in members if gold[i] == domain],
                                 domain=domain, max_tokens=full[domain].max_tokens,
                                 tfidf_buckets=None if tfidf is None else tfidf.buckets,
                                 skip_pairs=full[domain].skip_pairs is not None)
            if full[domain].pairs is None:
                part = replace(part, pairs=None)
            if full[domain].counts is None:  # statistics without token counts: Gram only
                part = replace(part, A=part.gram(router.embedder), counts=None,
                               doc_counts=None, pairs=None)
            try:
                rest[domain] = full[domain] - part
            except IR3DEError as exc:
                raise IR3DEError(f"fold {f + 1} of {folds}: the prompts labelled {domain!r} "
                                 f"are not all part of expert {domain!r}'s fit data ({exc}); "
                                 "folds are for the prompts the router was fitted on, give "
                                 "other prompts without folds") from None
            if rest[domain].n_prompts == 0:
                raise IR3DEError(f"fold {f + 1} of {folds} holds every prompt of expert "
                                 f"{domain!r}: nothing would be left to fit it on; use fewer "
                                 "folds or more of its prompts")
        held = Router(router.embedder, config).fit_stats(rest)
        for i, decision in zip(members, held.route_batch([texts[i] for i in members],
                                                         token_ids=[ids[i] for i in members]),
                               strict=True):
            decisions[int(i)] = decision
    return [decisions[i] for i in range(len(texts))]  # every prompt is in one fold


def _pinned(router: Router) -> Any:
    """The router's settings with what ``"auto"`` chose for its full statistics fixed, so
    a fold's router differs from it by the data only (a smaller fit set could switch the
    automatic smoothing)."""
    config = router.config
    if router.smoothing is not None:
        return config.with_settings(**router.smoothing._asdict())
    if router.identity_mu is not None:
        return config.with_settings(identity=router.identity_mu)
    return config


def _cut(table: Calibration, knob: Knob, share: float) -> Cut:
    values = table._values(knob)
    ordered = np.sort(values)
    # Drop at most the lowest (1 - share) of the prompts: the cut is the lowest value kept.
    # (The tolerance keeps 0.95 of 20 prompts at 19; the loop, that no rounding keeps less.)
    n = len(values)
    drop = min(math.floor((1 - share) * n + 1e-9), n - 1)
    while drop > 0 and (n - drop) / n < share:
        drop -= 1
    value = float(ordered[drop])
    kept = values >= value
    accuracy = least = None
    if table.gold is not None:
        accuracy, least = _balanced(table._correct(), table.gold, kept)
    return Cut(knob, share, value, float(np.mean(kept)), accuracy, least)


def _balanced(correct: np.ndarray, gold: Sequence[str],
              kept: np.ndarray) -> tuple[float, tuple[str, float]]:
    """Balanced accuracy of the kept prompts (over the gold domains with one kept), and
    the gold domain with the smallest kept share with that share."""
    labels = np.array(gold)
    recalls, shares = [], {}
    for domain in sorted(set(gold)):
        mine = labels == domain
        shares[domain] = float(np.mean(kept[mine]))
        if np.any(kept & mine):
            recalls.append(float(np.mean(correct[kept & mine])))
    least = min(shares, key=lambda d: (shares[d], d))
    return float(np.mean(recalls)), (least, shares[least])


def render_plot(calibration: Calibration, keep: float) -> bytes:
    """A PNG of the kept prompts' balanced accuracy against the share kept, one line per
    knob, the cuts for ``keep`` marked with their values (labelled prompts only; needs
    matplotlib, the ``eval`` extra)."""
    import matplotlib

    from .eval.plots import figure_png

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    names = {"threshold": "threshold (confidence)", "min_coverage": "min_coverage (coverage)"}
    with matplotlib.rc_context({"text.parse_math": False}):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for knob, color in zip(calibration.knobs, ("tab:blue", "tab:orange"), strict=False):
            kept, accuracy = calibration.curve(knob)
            # Shares below half are no fallback setting anyone runs, and their accuracy
            # over a few prompts is noise that would set the axis' scale.
            shown = kept >= min(0.5, min(c.kept for c in calibration.cuts))
            ax.plot(100 * kept[shown], 100 * accuracy[shown], color=color, label=names[knob])
            cut = calibration.cut(knob, keep)
            assert cut.accuracy is not None
            ax.plot(100 * cut.kept, 100 * cut.accuracy, "o", color=color)
            value = math.floor(cut.value * 1e4) / 1e4  # down: a copied value keeps enough
            ax.annotate(f"{knob}: {value:.4f}", (100 * cut.kept, 100 * cut.accuracy),
                        textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)
        ax.set_xlabel("prompts kept (%); the rest go to the fallback expert")
        ax.set_ylabel("balanced accuracy of the kept prompts (%)")
        ax.set_title(f"{len(calibration.routed)} prompts, held out: {calibration.held_out}",
                     fontsize=10)
        ax.invert_xaxis()  # from keeping everything (left) to cutting more (right)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        return figure_png(fig)
