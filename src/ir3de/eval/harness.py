"""Run routers on evaluation settings and collect comparable results.

Every router of a run sees the same splits and is timed on the same machine in the same
process: *fit time* is the wall time to go from the fit prompts to a usable router (for
IR3DE: counting statistics plus the solve), *routing time* the wall time of one batch call
over all test prompts divided by their number, tokenisation or sentence encoding included.
One-off model loads are charged to no router: the IR3DE embedders are loaded before the
run, and the MiniLM encoder the kNN routers share is loaded by whichever runs first, so its
load time is taken out (:func:`_baseline_times`); MoDEM-style loads the weights it
fine-tunes in every fit, which is part of that fit.

IR3DE settings are never chosen here: each embedder is run with the named presets
(``default``: Naive-Bayes token log-likelihoods, chosen on held-out fit data;
``identity``/``dense``: balanced ridge; ``paper``: the reference configuration) over the
whole selector grid, and the report shows every figure. Saved routers (``routers``, ``ir3de
eval --router``) are scored as they are, with their own settings, on every split's test
prompts: they are not refitted, and have no fit time.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import numbers
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..embedding import Embedder
from ..errors import EmptyInputError, IR3DEError, listed
from ..router import PRESETS, Router, RouterConfig
from ..selector import SELECTORS
from ..statistics import compute_stats
from ..tfidf import TFIDF_BUCKETS
from .metrics import (
    MAX_RESAMPLES,
    ScoreKind,
    bootstrap_balanced,
    metrics_from_confusion,
    normalized_performance,
    percentile_interval,
    routing_metrics,
    validate_scores,
)
from .settings import Setting, Split, check_setting_name, refuse_identical_fit

__all__ = ["BASELINES", "K_GRID", "MIN_RESAMPLES", "MIN_TEST_PROMPTS", "Candidate",
           "check_routers", "check_scores", "data_warnings", "evaluate", "make_baselines",
           "test_prompt_counts"]

# Warnings about the data (test prompts dropped, too few test prompts): with no logging
# configured, Python prints them on stderr as they are, one line each (ir3de eval, even
# with -q); a program that configures logging gets them as "ir3de.eval.harness" records.
log = logging.getLogger(__name__)

K_GRID = (1, 2, 5, 10, 20, 50, 100, 200, 500)
KNN_K = (1, 5, 10)
# Baseline families; "modem" fine-tunes a transformer on CPU, so it is opt-in.
BASELINES = ("random", "knn", "tfidf", "modem")
DEFAULT_BASELINES = ("random", "knn", "tfidf")
# Fixed, so a report's intervals do not change between runs of the same routers.
_BOOTSTRAP_SEED = 0
# Fewer resamples give intervals of a few points (one resample: a point) that exclude 0
# by chance, so a gap would be marked significant; 0 skips the intervals.
MIN_RESAMPLES = 100
# A domain with fewer distinct test prompts than this gets a warning: its accuracy moves by
# 5 points or more per prompt, and a stratified bootstrap that redraws a handful of prompts
# (one prompt: always the same) gives intervals far narrower than the real uncertainty.
MIN_TEST_PROMPTS = 20
_SELECTORS = [("topk", k) for k in K_GRID] + [(s, None) for s in SELECTORS if s != "topk"]
# Terms of the evidence kept per misrouted prompt in decisions.jsonl: the errors' largest
# terms are what error analysis reads (most are one prompt's own, EVALUATION.md), and all of
# them would be every distinct token and pair of every error.
EVIDENCE_TERMS = 5
# Terms per router in the report's summary of what its errors rest on.
ERROR_TERMS = 10
# Seeds of the baselines: scikit-learn's random_state takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


@dataclass
class Candidate:
    """Metrics of one router on one setting, pooled over its splits."""

    name: str
    family: str  # "ir3de", "saved" (a saved router), "random", "knn", "tfidf", "modem"
    params: dict[str, Any]
    split_metrics: list[dict[str, Any]] = field(default_factory=list)
    fit_s: list[float] = field(default_factory=list)
    route_s_per_prompt: list[float] = field(default_factory=list)

    def summary(self, domains: Sequence[str]) -> dict[str, Any]:
        """Pooled metrics: confusion matrices summed over splits, times averaged."""
        pooled = metrics_from_confusion(
            np.sum([np.asarray(m["confusion"]) for m in self.split_metrics], axis=0), domains)
        return {
            "name": self.name, "family": self.family, **self.params,
            "balanced": pooled.balanced, "micro": pooled.micro,
            # None (JSON null) for a domain without test prompts.
            "per_domain": {d: None if np.isnan(r) else r for d, r in pooled.per_domain.items()},
            "confusion": pooled.confusion.tolist(),
            "splits": [{k: m[k] for k in ("split", "balanced", "micro", "seed") if k in m}
                       for m in self.split_metrics],
            # None (JSON null) for a saved router: it was not fitted in this run
            "fit_s": float(np.mean(self.fit_s)) if self.fit_s else None,
            "route_us": 1e6 * float(np.mean(self.route_s_per_prompt)),
        }


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _baseline_times(model: Any, fn: Callable[[], Any], texts: Sequence[str]) -> tuple[Any, float]:
    """Wall time of ``fn``, with memoised sentence encodings charged at their real cost.

    The kNN baselines share one memoising encoder across k and settings; without this
    correction a prompt encoded in an earlier setting would look free. The encoder
    records what encoding each text cost (``cost``), its total encoding time (``spent``)
    and the time it took to load its model (``load_s``): the time is the call's wall time,
    minus the encoding it really did, plus the recorded encoding cost of all of ``texts``,
    minus the model load if this call did it. The load is charged to no router, as the
    IR3DE embedders' loads are not: charged to the first kNN router alone, it made k=1's
    fit look seconds slower than k=5's and k=10's.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "spent"):
        return _timed(fn)
    spent, loaded = encoder.spent, encoder.load_s
    out, wall = _timed(fn)
    return out, (wall - (encoder.spent - spent) - (encoder.load_s - loaded)
                 + encoder.cost(texts))


def make_baselines(names: Sequence[str], *, seed: int = 0, progress: bool = False,
                   device: str = "auto") -> list[tuple[str, Callable[..., Any]]]:
    """``(family, factory)`` pairs for :func:`evaluate`; kNN runs k = 1, 5, 10 on one
    shared, memoising sentence encoder; kNN and MoDEM-style run on the torch ``device``
    (:func:`ir3de.baselines.resolve_device`). A name given twice is run once. Random,
    TF-IDF + LR and MoDEM-style take a seed: :func:`evaluate` gives each split's own, and
    ``seed`` (0 .. :data:`MAX_SEED`) serves a split that has none (one built by hand)."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise IR3DEError(f"unknown baselines {unknown}; choose from {', '.join(BASELINES)}")
    _check_seed(seed, "seed")
    out: list[tuple[str, Callable[..., Any]]] = []
    if not names:
        return out
    from .. import baselines as bl

    for name in dict.fromkeys(names):  # twice would pool each split's figures twice
        if name == "random":
            out.append(("random", functools.partial(bl.RandomRouter, seed=seed)))
        elif name == "knn":
            encoder = bl.SentenceEncoder(show_progress=progress, device=device)
            out += [("knn", functools.partial(bl.KNNRouter, k, encoder=encoder)) for k in KNN_K]
        elif name == "tfidf":
            out.append(("tfidf", functools.partial(bl.TfidfLogReg, seed=seed)))
        else:
            out.append(("modem", functools.partial(bl.ModemClassifier, seed=seed,
                                                   show_progress=progress, device=device)))
    return out


def _check_seed(seed: object, what: str) -> None:
    """Refuse a baseline seed scikit-learn would refuse only when TF-IDF + LR is fitted,
    after the IR3DE routers have run."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise IR3DEError(f"{what} must be an integer in 0..{MAX_SEED}, got {seed!r}")


def _seed_param(factory: Callable[..., Any]) -> inspect.Parameter | None:
    """``factory``'s parameter named ``seed`` if it can be given by keyword (a baseline
    class such as :class:`~ir3de.baselines.TfidfLogReg`, or :func:`make_baselines`'
    factories), else None: one that takes ``**kwargs`` alone gets no seed."""
    try:
        param = inspect.signature(factory).parameters.get("seed")
    except (TypeError, ValueError):  # a callable without a signature to read
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return param if param is not None and param.kind in keyword else None


def _fresh_baseline(factory: Callable[..., Any], split: Split) -> Any:
    """A fresh, unfitted baseline for ``split``: one that takes a seed gets the split's, so
    a setting repeated over seeds also repeats the baseline's random draw (MoDEM-style's
    figure on a fold moves by up to 0.3 point with its training seed, EVALUATION.md)."""
    if split.seed is not None and _seed_param(factory):
        return factory(seed=split.seed)
    return factory()


def _short_name(embedder: Embedder) -> str:
    """What router names call ``embedder``: a built-in by its CLI name (``wordllama``,
    ``minilm``), any other by its own name."""
    kind = embedder.spec.get("kind")
    return kind if kind in ("wordllama", "minilm") else embedder.name


# A router's decisions on a split's test prompts, and for the prompts it misrouted (by
# position) the evidence against their gold domain, when asked for (else None).
_Routed = tuple[Candidate, list[str], dict[int, list[dict[str, Any]]] | None]


def _evidence(router: Router, split: Split, routed: list[str]
              ) -> dict[int, list[dict[str, Any]]]:
    """For each test prompt ``router`` sent elsewhere than its gold domain (``routed``: its
    decisions), the :data:`EVIDENCE_TERMS` largest terms of its decision against the gold
    expert: what led the prompt away from it (``Router.route(..., against=gold)``)."""
    out = {}
    for i, (text, gold, got) in enumerate(zip(split.test_texts, split.test_labels, routed,
                                              strict=True)):
        if got != gold:
            evidence = router.route(text, explain=True, against=gold).evidence or []
            out[i] = [dataclasses.asdict(e) for e in evidence[:EVIDENCE_TERMS]]
    return out


def _error_terms(decisions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per IR3DE router with explained errors (the ``evidence`` of ``decisions``): how many
    errors it made (``errors``) and the :data:`ERROR_TERMS` terms found most often among
    its errors' largest terms with a positive lead, i.e. pulling towards the wrong expert
    (``terms``: kind, tokens, ``errors`` holding it, ``mean_lead`` over those). A term
    that recurs across errors is one a user can act on (a fit set that holds it by
    accident); most terms appear in one error or a few."""
    seen: dict[str, dict[tuple[str, tuple[str | None, ...]], list[float]]] = {}
    errors: Counter[str] = Counter()
    for decision in decisions:
        for name, terms in decision.get("evidence", {}).items():
            errors[name] += 1
            by_term = seen.setdefault(name, {})
            for term in terms:
                if term["lead"] > 0:
                    by_term.setdefault((term["kind"], tuple(term["tokens"])), []).append(
                        term["lead"])
    out = {}
    for name, by_term in seen.items():
        terms = [{"kind": kind, "tokens": list(tokens), "errors": len(leads),
                  "mean_lead": float(np.mean(leads))} for (kind, tokens), leads in by_term.items()]
        # most errors first, then the larger mean lead; ties in first-seen order
        terms.sort(key=lambda t: (-t["errors"], -t["mean_lead"]))
        out[name] = {"errors": errors[name], "terms": terms[:ERROR_TERMS]}
    return out


def _ir3de_candidates(split: Split, embedder: Embedder, presets: Sequence[str],
                      tick: Callable[[], None], explain: bool) -> list[_Routed]:
    """Every preset's router over the selector grid on ``split``; ``explain``: the evidence
    of the preset routers' errors too."""
    short = _short_name(embedder)
    # Counted once for every preset: with the TF-IDF statistics and the skip pairs if one
    # reads them.
    buckets = TFIDF_BUCKETS if any(RouterConfig.preset(p).tfidf_buckets is not None
                                   for p in presets) else None
    skips = any(RouterConfig.preset(p).skip_pairs for p in presets)
    stats, stats_s = _timed(lambda: [compute_stats(embedder, texts, domain=d,
                                                   tfidf_buckets=buckets, skip_pairs=skips)
                                     for d, texts in split.fit.items()])
    out = []
    for preset in presets:
        base = RouterConfig.preset(preset)
        start = time.perf_counter()
        router = Router(embedder, base).fit_stats(stats)
        solve_s = time.perf_counter() - start
        for selector, k in _SELECTORS:
            router.set_params(selector=selector, k=k or base.k)
            routed, route_s = _routed(router, split)
            label = f"topk k={k}" if selector == "topk" else selector
            is_preset = selector == base.selector and (selector != "topk" or k == base.k)
            cand = Candidate(f"IR3DE {label} [{short}, {preset}]",
                             "ir3de", {"embedder": short, "embedder_name": embedder.name,
                                       "preset": preset,
                                       "selector": selector, "k": k, "is_preset": is_preset})
            cand.fit_s.append(stats_s + solve_s)
            cand.route_s_per_prompt.append(route_s / len(split.test_texts))
            evidence = _evidence(router, split, routed) if explain and is_preset else None
            out.append((cand, routed, evidence))
            tick()
    return out


def _saved_candidates(split: Split, routers: Mapping[str, Router],
                      tick: Callable[[], None], explain: bool) -> list[_Routed]:
    out: list[_Routed] = []
    for name, router in routers.items():
        routed, route_s = _routed(router, split)
        cand = Candidate(name, "saved", {"embedder": _short_name(router.embedder),
                                         "embedder_name": router.embedder.name,
                                         "selector": router.config.selector,
                                         "k": router.config.k if router.config.selector
                                         == "topk" else None})
        cand.route_s_per_prompt.append(route_s / len(split.test_texts))
        out.append((cand, routed, _evidence(router, split, routed) if explain else None))
        tick()
    return out


def check_routers(setting: Setting, routers: Mapping[str, Router]) -> None:
    """Raise :class:`~ir3de.errors.IR3DEError` unless every router of ``routers`` (name →
    saved router) routes to exactly ``setting``'s domains: a prompt sent to an expert the
    setting does not test could count for no domain, and a domain no router expert is named
    after could never be right."""
    for name, router in routers.items():
        experts = list(router.experts)
        missing = [d for d in setting.domains if d not in experts]
        extra = [e for e in experts if e not in setting.domains]
        if missing or extra:
            parts = ([f"no expert for the domains {listed(missing)}"] * bool(missing)
                     + [f"experts {listed(extra)} that are not domains of the setting"]
                     * bool(extra))
            raise IR3DEError(f"router {name!r} does not fit setting {setting.name!r}: "
                             f"{' and '.join(parts)} (its experts must be named as the "
                             "domains are)")


def _routed(router: Router, split: Split) -> tuple[Any, float]:
    """``router``'s decisions for the split's test prompts and their wall time; a test
    prompt without a token is named by its id (:func:`_no_token`)."""
    try:
        return _timed(functools.partial(router.predict, split.test_texts))
    except EmptyInputError:
        named = _no_token(split, router.embedder)
        if named is None:
            raise
        raise named from None


def _no_token(split: Split, embedder: Embedder) -> EmptyInputError | None:
    """The error for the first test prompt that ``embedder`` finds no token in, naming it
    by its id and domain (the router's own names it by its place in the harness's
    reordered list), or None when there is none."""
    for ident, text, gold in zip(split.test_ids, split.test_texts, split.test_labels,
                                 strict=True):
        if not embedder.encode(text).size:
            return EmptyInputError(f"split {split.name!r}: test prompt {ident!r} (domain "
                                   f"{gold!r}) has no token to route on with {embedder.name}"
                                   f" ({embedder.why_no_token(text)}): leave it out of the "
                                   "test data")
    return None


def _comparison(summaries: list[dict[str, Any]], correct: Mapping[str, list[bool]],
                gold: list[str], ids: list[str], resamples: int, level: float
                ) -> dict[str, Any] | None:
    """Bootstrap intervals of the kept routers' balanced accuracy (``balanced_ci``, set on
    their summaries) and of each preset IR3DE router minus the best baseline (random does
    not count; no differences without another baseline)."""
    if resamples == 0:
        return None
    names = list(correct)
    samples = bootstrap_balanced(np.array([correct[n] for n in names]), gold, ids,
                                 resamples=resamples, seed=_BOOTSTRAP_SEED)
    row = {n: i for i, n in enumerate(names)}
    by_name = {r["name"]: r for r in summaries}
    for name in names:
        by_name[name]["balanced_ci"] = list(percentile_interval(samples[row[name]], level))
    baselines = [r for r in summaries if r["family"] not in ("ir3de", "saved", "random")]
    best = max(baselines, key=lambda r: r["balanced"]) if baselines else None
    differences = {}
    for r in summaries:
        if best and (r["family"] == "saved" or (r["family"] == "ir3de" and r["is_preset"])):
            low, high = percentile_interval(samples[row[r["name"]]] - samples[row[best["name"]]],
                                            level)
            differences[r["name"]] = {"difference": r["balanced"] - best["balanced"],
                                      "low": low, "high": high}
    return {"baseline": best and best["name"], "level": level, "resamples": resamples,
            "differences": differences}


def test_prompt_counts(setting: Setting) -> dict[str, int]:
    """Distinct test prompts per domain of ``setting``, over all its splits (a prompt that
    several splits test counts once, as the bootstrap counts it); 0 for a domain that is
    routed to but never tested."""
    seen: dict[str, set[str]] = {d: set() for d in setting.domains}
    for split in setting.splits:
        for pid, gold in zip(split.test_ids, split.test_labels, strict=True):
            seen.setdefault(gold, set()).add(pid)
    return {d: len(ids) for d, ids in seen.items()}


def data_warnings(setting: Setting) -> list[str]:
    """One-line warnings about ``setting``'s test data, also shown in the report: test
    prompts left out because their text (leading and trailing whitespace aside) is also a
    fit prompt, domains with some but fewer than :data:`MIN_TEST_PROMPTS` test prompts,
    whose figures and intervals mean little, domains with none, which are routed to but
    never tested, and test texts labelled with more than one domain. Each lists at most
    five domains (per split), then how many more; the report lists them all."""
    out = []
    dropped = [(s.name, {d: n for d, n in s.dropped.items() if n}) for s in setting.splits]
    total = sum(n for _, per in dropped for n in per.values())
    if total:
        parts = "; ".join((f"split {name!r}: " if len(setting.splits) > 1 else "")
                          + listed([f"{d} {n}" for d, n in per.items()])
                          for name, per in dropped if per)
        out.append(f"setting {setting.name!r}: {total} test prompt{'s' * (total != 1)} left "
                   f"out because the same text is also a fit prompt ({parts})")
    counts = test_prompt_counts(setting)
    # A domain without test prompts has no figure to doubt (and does not make the tested
    # domains' figures less meaningful): it is said to be untested, not to have too few.
    few = {d: n for d, n in counts.items() if 0 < n < MIN_TEST_PROMPTS}
    if few:
        out.append(f"setting {setting.name!r}: fewer than {MIN_TEST_PROMPTS} test prompts in "
                   + listed([f"{d} ({n})" for d, n in few.items()])
                   + "; their accuracies and the bootstrap intervals are not meaningful")
    untested = [d for d, n in counts.items() if n == 0]
    if untested:
        out.append(f"setting {setting.name!r}: no test prompts in {listed(untested)}; "
                   f"{'they are' if len(untested) > 1 else 'it is'} routed to but never "
                   "tested, and not in the balanced mean")
    for split in setting.splits:
        # The same text under two gold domains (ids apart): one of them is wrong whatever
        # the router does, which caps every router's accuracy without a word.
        golds: dict[str, dict[str, str]] = {}
        for ident, text, gold in zip(split.test_ids, split.test_texts, split.test_labels,
                                     strict=True):
            golds.setdefault(text.strip(), {}).setdefault(gold, ident)
        torn = [g for g in golds.values() if len(g) > 1]
        if torn:
            where = f", split {split.name!r}" if len(setting.splits) > 1 else ""
            example = listed([f"{ident!r} as {gold}" for gold, ident in torn[0].items()])
            out.append(f"setting {setting.name!r}{where}: {len(torn)} test text"
                       f"{'s' * (len(torn) != 1)} stand{'s' * (len(torn) == 1)} under "
                       f"several domains (e.g. {example}); no router can route "
                       f"{'them' if len(torn) != 1 else 'it'} right every time")
    return out


def check_scores(setting: Setting, scores: Mapping[tuple[str, str], float],
                 kind: ScoreKind, *, source: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`IR3DEError` unless ``scores`` of ``kind`` cover every test prompt of
    every split of ``setting`` for each of its experts, with usable values
    (:func:`ir3de.eval.metrics.validate_scores`); the message names ``source`` (the score
    file), the setting and the split. Known once the setting is built, so checked before
    any router runs, not after all of them."""
    for split in setting.splits:
        where = f"setting {setting.name!r}, split {split.name!r}"
        validate_scores(scores, kind, source=where if source is None else f"{source}: {where}",
                        ids=split.test_ids, gold=split.test_labels, experts=setting.domains)


def _distinct_embedders(embedders: Sequence[Embedder]) -> list[Embedder]:
    """``embedders`` with repeats (the same table, by fingerprint) left out, in order; two
    different embedders under one name are refused: their routers would share names, and
    each figure would pool both."""
    kept: dict[str, Embedder] = {}
    for embedder in embedders:
        other = kept.setdefault(_short_name(embedder), embedder)
        if other.fingerprint != embedder.fingerprint:
            raise IR3DEError(f"two different embedders are both named "
                             f"{_short_name(embedder)!r}; give them distinct names")
    return list(kept.values())


def evaluate(setting: Setting, *, embedders: Sequence[Embedder],
             baselines: Sequence[tuple[str, Callable[..., Any]]] = (),
             presets: Sequence[str] = ("default", "paper"),
             routers: Mapping[str, Router] | None = None,
             scores: Mapping[tuple[str, str], float] | None = None,
             score_kind: ScoreKind = "task", resamples: int = 2000, level: float = 0.95,
             keep_decisions: bool = False, progress: bool = True) -> dict[str, Any]:
    """Evaluate IR3DE (per embedder and preset, full selector grid) and baselines.

    ``baselines`` are ``(family, factory)`` pairs; each factory returns a fresh, unfitted
    object with ``name``, ``fit(texts, labels)`` and ``predict(texts)``; a factory with a
    parameter named ``seed`` is called with each split's seed (:attr:`Split.seed`, which
    must then be in 0 .. :data:`MAX_SEED`), and a baseline's integer ``seed`` attribute is
    kept per split in its ``"splits"``. ``scores`` (see
    :func:`ir3de.eval.metrics.read_scores`) adds normalized performance per split.
    ``routers`` (name → a saved :class:`~ir3de.router.Router` whose experts are the
    setting's domains, :func:`check_routers`) are scored as they are on every split's test
    prompts, next to the routers fitted here; their name must differ from every other
    router's. A setting whose splits have no fit prompts (``--router`` with ``--test``
    alone) can run saved routers only.
    Returns a JSON-ready dict with one entry per router under ``"routers"``. An embedder or
    preset given twice is run once; two baselines of one name are refused (each figure
    would pool both); so are a setting name that cannot name files
    (:func:`~ir3de.eval.settings.check_setting_name`) and two domains with the same fit
    prompts. All of this is checked before any router runs.

    Preset IR3DE routers and baselines also get ``balanced_ci``, a ``level`` stratified
    bootstrap interval of their balanced accuracy over ``resamples`` resamples of the test
    prompts, and ``"comparison"`` holds each preset's paired bootstrap interval of its
    difference to the best baseline (``resamples=0`` skips both): a gap whose interval
    contains 0 is within what another draw of test prompts could reverse.

    :func:`data_warnings` (test prompts dropped as fit prompts, domains with fewer than
    :data:`MIN_TEST_PROMPTS` test prompts or none) are logged as warnings before the run and kept
    under ``"warnings"``; ``"test_prompts"`` counts the distinct test prompts per domain.

    With ``keep_decisions``, ``"decisions"`` lists every test prompt of every split
    (``split``, ``id``, ``gold``) with the domain each preset router and baseline sent it to
    (``routed``): what error analysis, and pairing this run with another run of the same
    setting and seed, need. A prompt that IR3DE routers (presets, saved routers) misrouted
    also has ``evidence``: per such router, the :data:`EVIDENCE_TERMS` largest terms of its
    decision against the gold expert (:class:`~ir3de.router.Evidence` as dicts, what
    ``ir3de route --explain --against GOLD`` prints), and ``"error_terms"`` sums them up per
    router: the terms that recur among its errors (:func:`_error_terms`).
    """
    check_setting_name(setting.name)
    presets = list(dict.fromkeys(presets))  # twice would pool each figure twice
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise IR3DEError(f"unknown presets {unknown}; choose from {', '.join(PRESETS)}")
    embedders = _distinct_embedders(embedders)
    routers = dict(routers or {})
    if not (embedders and presets) and not baselines and not routers:
        raise IR3DEError("nothing to evaluate: no IR3DE embedder (with a preset), no "
                         "baseline and no saved router")
    check_routers(setting, routers)
    fitted_here = bool(embedders and presets) or bool(baselines)
    if fitted_here and not all(split.fit for split in setting.splits):
        raise IR3DEError(f"setting {setting.name!r} has no fit prompts: only saved routers "
                         "can be evaluated on it (no embedder, preset or baseline)")
    # Checked before the slow part, not after every router has run.
    if resamples != 0 and not MIN_RESAMPLES <= resamples <= MAX_RESAMPLES:
        raise IR3DEError(f"resamples must be 0 (no intervals) or from {MIN_RESAMPLES} to "
                         f"{MAX_RESAMPLES:,}, got {resamples}")
    if not 0 < level < 1:
        raise IR3DEError(f"level must be in (0, 1), got {level}")
    # Per factory, not per family: kNN's three factories share one family name.
    params = [(family, _seed_param(f)) for family, f in baselines]
    needy = list(dict.fromkeys(family for family, p in params if p and p.default is p.empty))
    for split in setting.splits:  # routing time is per test prompt: none would divide by 0
        where = f"setting {setting.name!r}, split {split.name!r}"
        if not split.test_texts:
            raise IR3DEError(f"{where}: no test prompts")
        refuse_identical_fit(where, split.fit)  # a setting built by hand, unchecked so far
        if split.seed is not None and any(p for _, p in params):
            _check_seed(split.seed, f"{where}: the seed")
        if split.seed is None and needy:
            raise IR3DEError(f"{where}: no seed, which baselines {needy} need (their "
                             "factory's seed has no default)")
    if scores is not None:
        check_scores(setting, scores, score_kind)
    # Fresh, unfitted objects are cheap to make; their names are what results are kept by,
    # made as the run makes them (a factory's seed may have no default, or name the model).
    names = [_fresh_baseline(factory, setting.splits[0]).name for _, factory in baselines]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise IR3DEError(f"baselines {twice} are given twice; each figure would pool both")
    # (a fitted IR3DE router's name starts with "IR3DE ", a baseline's is one of names)
    clash = [n for n in routers if n in names or n.startswith("IR3DE ")]
    if clash:
        raise IR3DEError(f"saved routers {clash} are named as other routers of the run; "
                         "rename them")
    notes = data_warnings(setting)
    for note in notes:  # before the run, not after it
        log.warning("ir3de: warning: %s", note)
    per_split = len(embedders) * len(presets) * len(_SELECTORS) + len(baselines) + len(routers)
    bar = tqdm(total=per_split * len(setting.splits), desc=setting.name, unit="router",
               disable=not progress, leave=False)
    candidates: dict[str, Candidate] = {}
    normalized: dict[str, Any] = {}
    # Per-prompt hits of the routers that get intervals, pooled over splits.
    correct: dict[str, list[bool]] = {}
    gold: list[str] = []
    ids: list[str] = []
    kept_decisions: list[dict[str, Any]] = []

    def record(cand: Candidate, routed: list[str], split: Split, seed: object = None
               ) -> None:
        metrics = routing_metrics(split.test_labels, routed, setting.domains).to_dict()
        metrics["split"] = split.name
        # The seed a baseline was trained with on this split, a numpy integer included
        # (JSON-ready as an int; anything else is no seed to report).
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            metrics["seed"] = int(seed)
        kept = candidates.setdefault(cand.name, cand)
        if kept is not cand:
            kept.fit_s += cand.fit_s
            kept.route_s_per_prompt += cand.route_s_per_prompt
        kept.split_metrics.append(metrics)

    for split in setting.splits:
        decisions: dict[str, list[str]] = {}
        evidence: dict[str, dict[int, list[dict[str, Any]]]] = {}
        explained = [*(c for e in embedders for c in _ir3de_candidates(
                         split, e, presets, bar.update, keep_decisions)),
                     *_saved_candidates(split, routers, bar.update, keep_decisions)]
        for cand, routed, why in explained:
            record(cand, routed, split)
            if cand.family == "saved" or cand.params["is_preset"]:
                decisions[cand.name] = routed
            if why:
                evidence[cand.name] = why
        for family, factory in baselines:
            model = _fresh_baseline(factory, split)
            bar.set_postfix_str(model.name)
            _, fit_s = _baseline_times(
                model, functools.partial(model.fit, split.fit_texts, split.fit_labels),
                split.fit_texts)
            routed, route_s = _baseline_times(
                model, functools.partial(model.predict, split.test_texts), split.test_texts)
            cand = Candidate(model.name, family, {})
            cand.fit_s.append(fit_s)
            cand.route_s_per_prompt.append(route_s / len(split.test_texts))
            record(cand, list(routed), split, getattr(model, "seed", None))
            decisions[model.name] = list(routed)
            bar.update()
        if scores is not None:
            normalized[split.name] = normalized_performance(
                scores, split.test_ids, split.test_labels, decisions, kind=score_kind,
                experts=setting.domains)
        for name, routed in decisions.items():
            correct.setdefault(name, []).extend(
                r == g for r, g in zip(routed, split.test_labels, strict=True))
        if keep_decisions:
            for i, (pid, g) in enumerate(zip(split.test_ids, split.test_labels, strict=True)):
                kept = {"split": split.name, "id": pid, "gold": g,
                        "routed": {name: routed[i] for name, routed in decisions.items()}}
                terms = {name: why[i] for name, why in evidence.items() if i in why}
                kept_decisions.append(kept | ({"evidence": terms} if terms else {}))
        gold += split.test_labels
        ids += split.test_ids
    bar.close()
    summaries = [c.summary(setting.domains) for c in candidates.values()]
    comparison = _comparison(summaries, correct, gold, ids, resamples, level)
    result = {
        "setting": setting.name, "description": setting.description,
        # The seeds whose splits were run: with several, only those that changed the split.
        "seeds": setting.seeds,
        "leaks_test": setting.leaks_test, "domains": setting.domains,
        "sources": setting.sources,
        # "dropped": test prompts per domain left out as their text is also a fit prompt.
        "splits": [{"name": s.name, "fit": {d: len(t) for d, t in s.fit.items()},
                    "test": {d: s.test_labels.count(d) for d in setting.domains},
                    "dropped": dict(s.dropped)}
                   for s in setting.splits],
        # Distinct test prompts per domain over all splits, what the figures rest on.
        "test_prompts": test_prompt_counts(setting),
        "warnings": notes,
        "routers": summaries,
        "comparison": comparison,
        "normalized_performance": normalized or None,
        "score_kind": score_kind if scores is not None else None,
    }
    if keep_decisions:
        result["decisions"] = kept_decisions
        result["error_terms"] = _error_terms(kept_decisions)
    return result
