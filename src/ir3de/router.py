"""The IR3DE router: statistics in, routing decisions out.

Example:
    >>> from ir3de import Router
    >>> router = Router().fit(
    ...     ["What is 12 * 7?", "Solve 3x + 2 = 11.", "def add(a, b):", "import numpy as np"],
    ...     ["math", "math", "code", "code"])
    >>> router.route("Compute 5 * 8.").expert
    'math'
    >>> router.save("router.safetensors")            # doctest: +SKIP
    >>> Router.load("router.safetensors").predict(["for i in range(3):"])  # doctest: +SKIP
    array(['code'], dtype='<U4')

A router keeps every expert's statistics. Changing the set of experts or the
model settings re-solves the table from them (milliseconds for the default model; the
``identity`` preset's search of μ takes ~0.7 s at h = 256), so
``add_expert``/``remove_expert`` give exactly the router a full refit gives.
Each change builds a new immutable state (settings included) and swaps it in with one
assignment, under the router's lock: a concurrent reader routes either entirely on the
old or on the new router, and two changes never overwrite each other.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, NamedTuple, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

from .embedding import (
    DEFAULT_MAX_TOKENS,
    Embedder,
    EmbedderLike,
    as_embedder,
    is_recipe,
    load_recorded,
)
from .errors import (
    EmptyInputError,
    ExpertError,
    FingerprintMismatchError,
    IR3DEError,
    NotFittedError,
    StatsFormatError,
    is_blank,
    refuse_lone_text,
    require_path,
    told_apart,
    unknown_expert,
)
from .selector import (
    SELECTORS,
    Selection,
    SelectorName,
    TermKind,
    VocabScores,
    _geo_terms,
    _runner_up,
    _vote_terms,
    select,
    vocab_scores,
)
from .solver import (
    DEFAULT_LAMBDA,
    FEW_ALPHA,
    FEW_PAIRS,
    FEW_PROMPTS,
    FEW_SPELLING_FLOOR,
    MU_GRID,
    UNIGRAM_ALPHA,
    Spelling,
    design,
    nb_skips,
    nb_smoothing,
    nb_spelling,
    require_scores,
    solve,
    solve_identity,
    solve_identity_auto,
    solve_nb,
    solve_pairs,
    solve_spelling,
    solve_spelling_prior,
)
from .statistics import (
    DomainStats,
    PairCounts,
    check_same_embedder,
    check_same_max_tokens,
    check_signature,
    compute_stats,
    find_identical,
    int_tensor,
    meta_int,
    meta_version,
    validate_domain_name,
)
from .store import read_safetensors, write_safetensors
from .tfidf import (
    TFIDF_BUCKETS,
    TFIDF_GAMMA,
    TfidfCounts,
    TfidfScores,
    check_same_buckets,
    solve_tfidf,
)

__all__ = ["DEFAULT_K", "MODELS", "PRESETS", "UNSEEN", "Decision", "Evidence", "Router",
           "RouterConfig", "Smoothing", "VotingToken", "read_router_meta"]

# Defaults were chosen on a held-out 20 % of the fit sets, never on test prompts
# (benchmarks/choose_defaults.py, BENCHMARKS.md "Choosing the defaults"): with
# balancing, the avg selector was best (97.3 % balanced) and k = 50 the best topk;
# without balancing (the paper), k = 10.
DEFAULT_K = 50
PAPER_K = 10
# predict and predict_proba tokenise and select this many prompts at a time: a whole
# batch's token ids and scores held at once took ~40 MB per 1,000 long prompts (2.4 GB
# for 60,000 arXiv abstracts); in chunks the results are the same, bit for bit.
_BATCH = 4096

ROUTER_FORMAT = "ir3de-router"
# Version 2 files leave out A for the experts whose token counts they hold (it is formed
# from them); version 1 files hold every expert's A. A router is saved in version 1 when
# every expert has A, so the files an older ir3de could read stay readable by it.
_ROUTER_VERSIONS = (1, 2)
_RESOLVE_KEYS = frozenset({"model", "alpha", "pairs", "skips", "unseen", "spelling",
                           "spelling_prior", "lam", "balance", "normalize", "regularize_bias",
                           "identity", "tfidf"})
MODELS: tuple[str, ...] = ("nb", "ridge")
# The type of the router a method returns itself as (typing.Self needs Python 3.11): a
# subclass's fit() is typed as that subclass.
_RouterT = TypeVar("_RouterT", bound="Router")
# A router file's optional per-expert arrays, each with the tensor that lists the experts
# its rows belong to when only some experts have it (see Router.save).
_RAGGED_ROWS = {"counts": "counts_experts", "doc_counts": "doc_counts_experts",
                "pairs": "pair_experts", "A": "A_experts", "tfidf": "tfidf_experts"}


class _Ridge(TypedDict):
    """The settings the identity solvers share with the dense ridge, as keywords."""

    lam: float
    balance: bool
    regularize_bias: bool


# Settings that one model only reads (see RouterConfig): given for the other model they
# would change nothing. The nb model always weighs every domain the same: balance=True is
# no choice of its (and balance=False is refused).
_MODEL_ONLY = {"alpha": "nb", "pairs": "nb", "skips": "nb", "unseen": "nb", "tfidf": "nb",
               "spelling": "nb", "spelling_prior": "nb", "lam": "ridge", "identity": "ridge",
               "normalize": "ridge", "regularize_bias": "ridge", "balance": "ridge"}
# What the nb model may do with a token no fit prompt holds (see RouterConfig.unseen).
UNSEEN: tuple[str, ...] = ("auto", "score", "ignore")


@dataclass(frozen=True)
class RouterConfig:
    """Router settings. ``model`` and its parameters change the per-token table; ``k``,
    ``selector`` and ``max_tokens`` act at routing time (``max_tokens`` also caps what
    :meth:`Router.fit` counts of each text). ``max_tokens`` None (the default) is the cap
    the statistics were counted with (:meth:`Router.fit`: 1024), as ``ir3de build`` and
    the gateway take it: a router then reads as much of a prompt as its experts' counts
    did, and a fitted router's config holds that number.

    ``model`` is how the per-token table is solved from the statistics:

    * ``"nb"`` (default): Naive-Bayes log-likelihoods of binary token features from each
      domain's document frequencies, Laplace smoothing ``alpha``
      (:func:`~ir3de.solver.solve_nb`), plus, unless ``pairs`` is None, binary features
      of adjacent token pairs smoothed towards the pooled pair distribution with Dirichlet
      mass ``pairs`` (:func:`~ir3de.solver.solve_pairs`; the ``geo`` selector uses them,
      the per-token voting selectors do not); every domain weighs the same (``balance``
      must stay on); ``lam``, ``normalize``, ``regularize_bias`` and ``identity`` do not
      apply. ``skips``: None (the default), or the Dirichlet mass of a second pair table,
      of skip pairs (the id two places back, id), which :meth:`Router.fit` counts when it
      is set and :func:`~ir3de.compute_stats` on request (``skip_pairs=True``);
      ``unseen``: what a token that no fit prompt holds adds to the ``geo`` decision,
      ``"score"`` (the default: its smoothed log-likelihoods, which favour the domains with
      fewer fit prompts) or ``"ignore"`` (nothing). ``alpha``, ``pairs``, ``skips`` and
      ``unseen`` may be ``"auto"`` (the default for ``alpha`` and ``pairs``; preset
      ``skips`` for the other two): chosen per router from the experts' prompt counts,
      lighter smoothing and no skip pairs for small fit sets
      (:func:`~ir3de.solver.nb_smoothing`, :func:`~ir3de.solver.nb_skips`;
      :attr:`Router.smoothing` tells the values in use). ``tfidf``: None (off, the
      default), or the weight of a prompt-level TF-IDF ridge over hashed token ids added
      to the ``geo`` decision (:mod:`ir3de.tfidf`; preset ``tfidf``: 4); it reads the
      experts' TF-IDF statistics (:attr:`tfidf_buckets`), which :meth:`Router.fit` counts
      when it is set and :func:`~ir3de.compute_stats` on request. ``spelling``:
      ``"auto"`` (the default: 0.25; for the small fit sets that ``alpha``'s ``"auto"``
      takes its values for, the prior below with mass 100 where the experts hold 10 to
      100 prompts each on average, else off: :func:`~ir3de.solver.nb_spelling`), the
      weight w of a back-off through spelling added to every token's row, or None (off;
      preset ``pairs``): a Naive-Bayes table over the character n-grams of the token
      strings, from the same document frequencies (:func:`~ir3de.solver.solve_spelling`);
      it changes the per-token table, so every selector reads it, at no cost per prompt.
      ``spelling_prior``: None (the default), or the mass m of the same back-off entered
      as a Dirichlet prior of the token table instead (each domain's counts smoothed
      towards its spelling distribution, :func:`~ir3de.solver.solve_spelling_prior`), or
      ``"auto"`` (preset ``spelling-prior``: 1e5, or 100 for the small fit sets that
      ``alpha``'s ``"auto"`` takes its values for); it replaces the added term, so
      ``spelling`` must then be None. Use it with ``geo``: the per-token voting selectors
      lose 5-27 points with it (a mass of 1e5 outweighs a small domain's counts, whose rows
      become mostly its spelling).
    * ``"ridge"``: the paper's ridge regression on the embedding, ``W = (A + λI)⁻¹ B``,
      with ``lam``, ``balance``, ``normalize``, ``regularize_bias``, and ``identity``:
      token-identity features (embedding ⊕ one-hot token id, see
      :func:`~ir3de.solver.solve_identity`) with ridge μ: a number, ``"auto"`` (μ chosen per
      router by closed-form leave-one-out error on the statistics themselves,
      :func:`~ir3de.solver.choose_identity_mu`) or ``None`` (embedding features only, with
      the reference code's unit-norm columns when ``normalize``).
    """

    model: Literal["nb", "ridge"] = "nb"
    alpha: float | Literal["auto"] = "auto"
    pairs: float | Literal["auto"] | None = "auto"
    skips: float | Literal["auto"] | None = None
    unseen: Literal["auto", "score", "ignore"] = "score"
    spelling: float | Literal["auto"] | None = "auto"
    spelling_prior: float | Literal["auto"] | None = None
    lam: float = DEFAULT_LAMBDA
    k: int = DEFAULT_K
    selector: SelectorName = "geo"
    balance: bool = True
    normalize: bool = True
    regularize_bias: bool = True
    max_tokens: int | None = None
    identity: float | Literal["auto"] | None = "auto"
    tfidf: float | None = None

    def __post_init__(self) -> None:
        # numpy scalars (np.int64 k taken from an array, np.float32 α) stand for the Python
        # numbers they hold, and are stored as those: JSON (save) knows no numpy types.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (np.integer, np.floating, np.bool_)):
                object.__setattr__(self, f.name, value.item())
            elif f.name in _REAL_SETTINGS and type(value) is int and abs(value) > _INT64_MAX:
                # numpy takes such an int (a router file's "alpha": 2**70) for an object, not
                # a number: the solver's checks failed with a TypeError; as a float it is one
                with contextlib.suppress(OverflowError):  # (past a float: refused below)
                    object.__setattr__(self, f.name, float(value))
        for name in ("balance", "normalize", "regularize_bias"):
            # bool("False") and bool(2) are True: anything but a bool is a mistake
            if not isinstance(getattr(self, name), bool):
                raise IR3DEError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.model not in MODELS:
            raise IR3DEError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.alpha != "auto" and not _positive_number(self.alpha):
            raise IR3DEError(f"the smoothing α must be a finite number > 0 or 'auto', "
                             f"got {self.alpha!r}")
        if self.pairs is not None and self.pairs != "auto" and not _positive_number(self.pairs):
            raise IR3DEError(f"the pair Dirichlet mass must be a finite number > 0, 'auto' or "
                             f"None, got {self.pairs!r}")
        if self.skips is not None and self.skips != "auto" and not _positive_number(self.skips):
            raise IR3DEError(f"the skip-pair Dirichlet mass must be a finite number > 0, 'auto' "
                             f"or None, got {self.skips!r}")
        if self.spelling is not None and self.spelling != "auto" \
                and not _positive_number(self.spelling):
            raise IR3DEError(f"the spelling back-off's weight must be a finite number > 0, "
                             f"'auto' or None, got {self.spelling!r}")
        if self.spelling_prior is not None and self.spelling_prior != "auto" \
                and not _positive_number(self.spelling_prior):
            raise IR3DEError(f"the spelling prior's mass must be a finite number > 0, 'auto' "
                             f"or None, got {self.spelling_prior!r}")
        if self.model == "nb" and self.spelling is not None and self.spelling_prior is not None:
            raise IR3DEError(f"the spelling back-off enters once: as an added term (spelling="
                             f"{self.spelling!r}) or as a prior (spelling_prior="
                             f"{self.spelling_prior!r}); set the other to None (null in JSON, "
                             f"'none' on the command line) in the same change (preset "
                             f"'spelling-prior' has the prior alone)")
        if not isinstance(self.unseen, str) or self.unseen not in UNSEEN:
            raise IR3DEError(f"unseen must be one of {', '.join(UNSEEN)}, got {self.unseen!r}")
        if self.tfidf is not None and not _positive_number(self.tfidf):
            raise IR3DEError(f"the TF-IDF weight must be a finite number > 0 or None, got "
                             f"{self.tfidf!r}")
        if self.model == "nb" and not self.balance:
            raise IR3DEError("the 'nb' model weighs every domain the same (a uniform prior); "
                             "balance=False applies to model='ridge' only")
        if self.identity is not None and self.identity != "auto" \
                and not _positive_number(self.identity):
            raise IR3DEError(f"identity μ must be a finite number > 0, 'auto' or None, "
                             f"got {self.identity!r}")
        # (numpy compares k with token counts as int64: a larger k failed in routing)
        if not _positive_int(self.k) or self.k > _INT64_MAX:
            raise IR3DEError(f"k must be a positive integer of at most 2**63 - 1, got {self.k!r}")
        if not _finite_number(self.lam) or self.lam < 0:
            raise IR3DEError(f"λ must be a finite number ≥ 0, got {self.lam!r}")
        if self.selector not in SELECTORS:
            raise IR3DEError(f"unknown selector {self.selector!r}; "
                             f"choose one of {', '.join(SELECTORS)}")
        if self.max_tokens is not None and not _positive_int(self.max_tokens):
            raise IR3DEError(f"max_tokens must be a positive integer or None, got "
                             f"{self.max_tokens!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RouterConfig:
        """A named configuration: ``default`` (measured best: Naive-Bayes log-likelihoods
        of binary token and adjacent-token-pair features, ``geo`` selector, α and pair mass
        ``"auto"``: 0.03 and 1e5, or 0.01 and 3e4 when the experts hold 100 prompts each or
        fewer on average or the smallest holds 50 or fewer, and a back-off through the
        token strings' character trigrams, weight ``"auto"``: 0.25, or for such small fit
        sets the prior's form with mass 100 where the mean is 10 to 100, else none),
        ``spelling-prior`` (the default with the spelling back-off as a
        Dirichlet prior of the token table, mass ``"auto"``: 1e5, or 100 for such small fit
        sets, in place of the added term: the pick of the selection rule with MiniLM's
        tokenizer, not with WordLlama's), ``pairs`` (the default without the spelling
        back-off, as it was before it), ``few`` (α = 0.01 and pair mass 3e4 whatever the
        fit size), ``skips`` (``pairs`` plus skip-pair features, mass 1e6, and tokens no
        fit prompt holds left out, both ``"auto"``: off for small fit sets; 1.3 times the
        default's routing cost),
        ``tfidf`` (``pairs`` plus a prompt-level TF-IDF ridge over 4096 hashed buckets
        blended with weight 4, :mod:`ir3de.tfidf`: better on prompts like the fit data,
        worse where an expert's prompts look unlike its fit data),
        ``unigram`` (without pairs, α = 0.1, for statistics made before pairs were
        counted), ``identity`` (balanced ridge on
        the embedding ⊕ one-hot token ids, μ by leave-one-out, ``avg`` selector),
        ``dense`` (the same without identity features) or ``paper`` (paper-faithful:
        unbalanced ridge on the embedding only, unit-norm columns, entropy top-k). Only the
        default and ``spelling-prior`` have the spelling back-off.

        A preset's own ``balance=False`` (``paper``'s) gives way to ``model="nb"``, which
        always weighs every domain the same; a ``balance`` named here is kept as given.

        >>> RouterConfig.preset("paper", model="nb").balance
        True
        """
        if not isinstance(name, str) or name not in PRESETS:
            raise IR3DEError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[name].with_settings(**overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterConfig:
        """Build from a dict, rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise IR3DEError(f"router settings must be a mapping of setting names to values, "
                             f"got {type(data).__name__}")
        _check_settings(data)
        return cls(**data)

    def ignored(self, names: Iterable[str]) -> tuple[str, str, str | None] | None:
        """The first of the setting ``names`` this configuration would not read, as
        ``(name, setting, needed)``: ``name`` is read only when ``setting`` is ``needed``
        (``("lam", "model", "ridge")``, ``("k", "selector", "topk")``, ``("pairs",
        "selector", "geo")``, ``("normalize", "identity", None)``: unit-norm columns exist
        only without identity features).
        None when every one is read. Front ends refuse such settings instead of dropping
        them without a word. A mapping of settings is read by its keys, the names.

        >>> RouterConfig().ignored(["alpha", "k"])
        ('k', 'selector', 'topk')
        >>> RouterConfig().ignored({"alpha": 0.1})
        """
        if not isinstance(names, Mapping):
            refuse_lone_text(names, "setting names")
        names = list(names)
        for name in names:
            model = _MODEL_ONLY.get(name)
            if model is not None and model != self.model:
                return name, "model", model
        if "normalize" in names and self.identity is not None:
            return "normalize", "identity", None
        if "k" in names and self.selector != "topk":
            return "k", "selector", "topk"
        # Only geo pools pair log-likelihoods and leaves out unseen tokens; the voting
        # selectors read every token's own table alone.
        for name in ("pairs", "skips", "unseen"):
            if name in names and getattr(self, name) is not None and self.selector != "geo":
                return name, "selector", "geo"
        if "tfidf" in names and self.tfidf is not None and self.selector != "geo":
            return "tfidf", "selector", "geo"
        return None

    @property
    def tfidf_buckets(self) -> int | None:
        """The bucket count of the TF-IDF statistics this configuration's model solves
        (:data:`~ir3de.tfidf.TFIDF_BUCKETS` for the nb model with ``tfidf`` set), or None:
        what :func:`~ir3de.compute_stats` must count for it.

        >>> RouterConfig.preset("tfidf").tfidf_buckets, RouterConfig().tfidf_buckets
        (4096, None)
        """
        return TFIDF_BUCKETS if self.model == "nb" and self.tfidf is not None else None

    @property
    def skip_pairs(self) -> bool:
        """Whether the statistics this configuration's model solves must hold skip pairs
        (the nb model with ``skips`` set): what :func:`~ir3de.compute_stats` must count for
        it, as :attr:`tfidf_buckets` says for the TF-IDF statistics.

        >>> RouterConfig.preset("skips").skip_pairs, RouterConfig().skip_pairs
        (True, False)
        """
        return self.model == "nb" and self.skips is not None

    @property
    def reads_pairs(self) -> bool:
        """Whether routing with this configuration reads the experts' token-pair counts:
        the nb model with pair or skip-pair features and the ``geo`` selector (the other
        selectors vote per token)."""
        return self.model == "nb" and self.selector == "geo" \
            and (self.pairs is not None or self.skips is not None)

    def with_settings(self, **settings: Any) -> RouterConfig:
        """A copy with ``settings`` changed (validated like a new config). A change to
        ``model="nb"``, which always weighs every domain the same, makes ``balance`` True
        unless named too (``paper``'s ``balance=False`` gives way, as in
        :meth:`preset`; ``set_params(model="nb")`` of a ``paper`` router, which a grid
        search does, was refused).

        Example:
            >>> RouterConfig.preset("unigram").with_settings(alpha=0.3).alpha
            0.3
        """
        _check_settings(settings)
        if settings.get("model") == "nb" and "balance" not in settings:
            settings = {**settings, "balance": True}
        return replace(self, **settings)


def _check_settings(settings: Mapping[str, Any]) -> None:
    """Unknown setting names are an :class:`IR3DEError` that lists the known ones (a bare
    dataclass would raise a TypeError naming ``RouterConfig.__init__``)."""
    known = [f.name for f in fields(RouterConfig)]
    unknown = sorted(str(key) for key in settings if key not in known)
    if unknown:
        hint = (" (a named configuration is RouterConfig.preset(name), or --preset on the "
                "command line)" if "preset" in unknown else "")
        raise IR3DEError(f"unknown router setting(s): {', '.join(unknown)}; known: "
                         f"{', '.join(known)}{hint}")


def _base_config(config: object) -> RouterConfig:
    """The configuration a router is given: a :class:`RouterConfig`, a preset name, or None
    (the default)."""
    if config is None:
        return RouterConfig()
    if isinstance(config, str):
        return RouterConfig.preset(config)
    if isinstance(config, RouterConfig):
        return config
    # anything else would fail later, on first use, with an AttributeError
    hint = (" (RouterConfig.from_dict(settings), or the settings as keyword arguments)"
            if isinstance(config, Mapping) else "")
    raise IR3DEError(f"config must be a RouterConfig or a preset name "
                     f"({', '.join(PRESETS)}), got {type(config).__name__}{hint}")


def _configure(config: object, settings: Mapping[str, Any]) -> RouterConfig:
    """The configuration ``config`` (see :func:`_base_config`) with ``settings`` changed: a
    preset name as :meth:`RouterConfig.preset` takes it (``"paper"`` with ``model="nb"``
    is balanced, as the nb model always is); a config itself when each setting is the very
    object it holds (so ``Router(**router.get_params())``, which sklearn's ``clone`` does,
    keeps the config object it is given, as clone checks)."""
    if isinstance(config, str) and settings:  # (preset refuses an unknown name first)
        return RouterConfig.preset(config, **settings)
    base = _base_config(config)
    if all(k in _SETTING_NAMES and getattr(base, k) is v for k, v in settings.items()):
        return base
    return base.with_settings(**settings)


def _cap(config: RouterConfig) -> int:
    """How many tokens of a prompt an unfitted router's ``config`` reads (a fitted one's
    holds its number: :func:`_counted_cap`)."""
    return DEFAULT_MAX_TOKENS if config.max_tokens is None else config.max_tokens


def _counted_cap(config: RouterConfig, stats: Mapping[str, DomainStats]) -> RouterConfig:
    """``config`` with ``max_tokens`` None made the cap ``stats`` were counted with (one
    cap for all: :func:`~ir3de.statistics.check_same_max_tokens`)."""
    if config.max_tokens is not None or not stats:
        return config
    return replace(config, max_tokens=next(iter(stats.values())).max_tokens)


def _finite_number(value: Any) -> bool:
    """A finite real number (not a bool, which Python counts as an int; nor an int too large
    for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _positive_number(value: Any) -> bool:
    """A finite real number > 0 (not a bool)."""
    return _finite_number(value) and value > 0


_INT64_MAX = 2**63 - 1
# The settings that are real numbers (or a word, or None), as the solver reads them.
_REAL_SETTINGS = frozenset({"alpha", "pairs", "skips", "spelling", "spelling_prior", "lam",
                            "identity", "tfidf"})


def _positive_int(value: Any) -> bool:
    """An int > 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


_SETTING_NAMES = frozenset(f.name for f in fields(RouterConfig))

# The presets other than the default were measured without the spelling back-off (it came
# later), and keep it off: `pairs` is the default as it was before it. `spelling-prior` is
# the default with the back-off entered as a prior instead of an added term.
PRESETS: dict[str, RouterConfig] = {
    "default": RouterConfig(),
    "spelling-prior": RouterConfig(spelling=None, spelling_prior="auto"),
    "pairs": RouterConfig(spelling=None),
    "few": RouterConfig(alpha=FEW_ALPHA, pairs=FEW_PAIRS, spelling=None),
    "skips": RouterConfig(skips="auto", unseen="auto", spelling=None),
    "tfidf": RouterConfig(tfidf=TFIDF_GAMMA, spelling=None),
    "unigram": RouterConfig(alpha=UNIGRAM_ALPHA, pairs=None, spelling=None),
    "identity": RouterConfig(model="ridge", selector="avg", pairs=None, spelling=None),
    "dense": RouterConfig(model="ridge", selector="avg", identity=None, pairs=None,
                          spelling=None),
    "paper": RouterConfig(model="ridge", k=PAPER_K, selector="topk", balance=False,
                          identity=None, pairs=None, spelling=None),
}


@dataclass(frozen=True)
class VotingToken:
    """A token that took part in a decision (for explanations)."""

    token: str
    position: int
    expert: str
    entropy: float


@dataclass(frozen=True)
class Evidence:
    """One term of a decision, for explanations: a distinct token of the prompt (``"token"``)
    and, for the ``geo`` selector (the ``default`` preset's), a distinct adjacent pair
    (``"pair"``) or skip pair (``"skip"``: two tokens with one between them), or the TF-IDF
    ridge's bias (``"bias"``, the ``tfidf`` preset only).

    ``lead`` is how much the term raised the winner's score above the runner-up's (or the
    expert named by ``route(..., against=...)``; negative: it pulled towards that one), in
    the selector's units (the runner-up: the expert routing ranks second, a tied vote told
    apart by the voters' summed probabilities as routing tells it). ``geo``: the mean
    log-likelihood, and a decision's leads add up to
    ``log(scores[winner] / scores[runner_up])``. ``avg``: the mean probability, a token's
    share over all its occurrences; ``topk`` / ``all``: the vote share, a token's votes for
    the winner less its votes for the runner-up over the number of voters (only the tokens
    that voted have a term); both add up to ``scores[winner] - scores[runner_up]``, which
    is 0 when a vote tied and the voters' summed probabilities broke the tie. Either way the
    leads are what decided, not a summary of it. ``tokens``: the token, or the pair's two
    (None for the start of the prompt; empty for the bias); ``position``: the position of
    its (last) token's first occurrence in the prompt's token ids (among the voters, for a
    vote), -1 for the bias.
    """

    kind: TermKind
    tokens: list[str | None]
    position: int
    lead: float


@dataclass(frozen=True)
class Decision:
    """One routing decision.

    ``confidence`` is the winner's vote share (topk/all), mean probability (avg) or
    normalised geometric mean probability (geo). ``coverage`` is the share of the prompt's
    distinct token pairs seen in the fit data (routers with a pair table, i.e. the
    ``default`` preset; None otherwise): low coverage means the prompt is unlike every
    expert's data. ``scores`` (per expert, same meaning as ``confidence``) and ``tokens``
    (the voters; for ``geo``, every distinct token with its own most likely expert) are
    filled when routing with ``explain=True`` (``scores=True``: the scores alone), and
    ``evidence`` too: every term the
    decision summed, with its share of the winner's lead over the runner-up, largest first
    (:class:`Evidence`; empty for a router of one expert).

    Example:
        >>> d = router.route("def add(a, b): return a + b", explain=True)  # doctest: +SKIP
        >>> [(e.kind, e.tokens, round(e.lead, 2)) for e in d.evidence[:2]]  # doctest: +SKIP
        [('token', ['):'], 0.59), ('token', ['('], 0.57)]
    """

    expert: str
    confidence: float
    scores: dict[str, float] | None = None
    tokens: list[VotingToken] | None = field(default=None)
    coverage: float | None = None
    evidence: list[Evidence] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (omits the explanation fields when absent)."""
        out = asdict(self)
        return {k: v for k, v in out.items() if v is not None}


class Smoothing(NamedTuple):
    """The ``nb`` model's settings in use (:attr:`Router.smoothing`): what ``"auto"``
    chose from the experts' prompt counts, the configured values elsewhere."""

    alpha: float
    pairs: float | None
    skips: float | None
    unseen: Literal["score", "ignore"]
    spelling: float | None
    spelling_prior: float | None


@dataclass(frozen=True, eq=False)
class _State:
    """A fitted router's whole solved state, replaced by one assignment: a decision reads
    it once, so a change made meanwhile by another thread cannot mix two routers."""

    config: RouterConfig  # the settings it was solved with and routes by
    experts: tuple[str, ...]
    stats: Mapping[str, DomainStats]
    W: np.ndarray  # ridge: (h+1, D) weights; nb: (V, D) log-likelihoods
    table: VocabScores
    mu: float | None  # the identity ridge in use (chosen when the config says "auto")
    smoothing: Smoothing | None = None  # nb: what "auto" chose
    # config.max_tokens is the statistics' cap, the user's None (saved, so that a loaded
    # router's parameters say None as the fitted one's did)
    cap_counted: bool = False

    def __post_init__(self) -> None:
        self.W.flags.writeable = False  # Router.W hands it out (see there)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # (unpickled arrays come back writable, and unpickling skips __post_init__)
        self.__dict__.update(state)
        self.W.flags.writeable = False


class Router:
    """Linear token router solved in closed form from additive statistics.

    Args:
        embedder: an :class:`~ir3de.embedding.Embedder` or anything
            :func:`~ir3de.embedding.load_embedder` accepts (default: WordLlama).
        config: a :class:`RouterConfig` or the name of a preset, short for
            ``RouterConfig.preset(name)`` (default: ``"default"``); keyword arguments
            override its fields
            (``model``, ``alpha``, ``pairs``, ``skips``, ``unseen``, ``spelling``,
            ``spelling_prior``, ``lam``, ``k``, ``selector``, ``balance``, ``normalize``,
            ``regularize_bias``, ``max_tokens``, ``identity``, ``tfidf``).

    It is a scikit-learn estimator without importing scikit-learn (an optional extra):
    ``get_params``/``set_params`` (the settings included), ``fit``, ``predict``, ``score``
    (*balanced* accuracy) and ``classes_`` let ``clone``, ``cross_val_score``,
    ``cross_val_predict`` and ``GridSearchCV`` choose settings on held-out data; clones
    share the embedder object. A setting the router would not read changes nothing in a
    grid (``k`` is read by ``selector="topk"`` only; see :meth:`RouterConfig.ignored`)::

        from sklearn.model_selection import GridSearchCV
        search = GridSearchCV(Router(emb), {"alpha": [0.01, 0.03, 0.1],
                                            "selector": ["geo", "avg"]}, cv=3)
        search.fit(texts, labels).best_params_        # then search.best_estimator_.route(...)
    """

    def __init__(self, embedder: EmbedderLike | None = None,
                 config: RouterConfig | str | None = None, **settings: Any) -> None:
        self._config = _configure(config, settings)
        self.embedder = _embedder(embedder)
        self._state: _State | None = None
        # Held by every change (fit, add, remove, set_params), each of which reads the
        # state, solves and replaces it: two at once would lose one. Routing needs none.
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # (a lock cannot be pickled: joblib pickles estimators)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def config(self) -> RouterConfig:
        """The settings in use (:meth:`set_params` changes them)."""
        state = self._state
        return state.config if state is not None else self._config

    @property
    def max_tokens(self) -> int:
        """How many tokens of a prompt the router reads: ``config.max_tokens``, which a
        fitted router holds as a number (None: the cap its statistics were counted with;
        unfitted, the 1024 :meth:`fit` counts)."""
        return _cap(self.config)

    def __repr__(self) -> str:
        """The embedder, the settings that differ from the default and the experts, as
        scikit-learn shows estimators.

        >>> Router(selector="avg")
        Router(embedder='wordllama-l2_supercat-256', selector='avg', experts=None)
        """
        state = self._state
        # (a fitted router's cap, the statistics' own, is what the default stands for)
        default = RouterConfig() if state is None else _counted_cap(RouterConfig(), state.stats)
        changed = "".join(f", {f.name}={getattr(self.config, f.name)!r}"
                          for f in fields(RouterConfig)
                          if getattr(self.config, f.name) != getattr(default, f.name))
        experts = list(state.experts) if state is not None else None
        return f"Router(embedder={self.embedder.name!r}{changed}, experts={experts!r})"

    # ----------------------------------------------------------------- fitting
    def fit(self: _RouterT, texts: Iterable[str], domains: Iterable[str], *,
            progress: bool = False) -> _RouterT:
        """Fit from labelled prompts (one statistics pass per domain).

        The experts are the distinct labels in sorted order (as scikit-learn's
        ``np.unique(y)``), so the fitted router does not depend on the order of the
        samples; blank texts are skipped, as blank lines of a corpus are.
        """
        with self._lock:
            return self._fit(texts, domains, progress)

    def _fit(self: _RouterT, texts: Iterable[str], domains: Iterable[str],
             progress: bool) -> _RouterT:
        texts = _texts(texts, "texts", "text")
        refuse_lone_text(domains, "domain labels")
        domains = list(domains)
        if len(texts) != len(domains):
            raise IR3DEError(f"{len(texts)} texts but {len(domains)} domain labels")
        for i, domain in enumerate(domains):  # before grouping: a list label is unhashable
            if isinstance(domain, (int, np.integer)) and not isinstance(domain, bool):
                # What scikit-learn passes when it label-encodes y itself: say so, not
                # just "not a string", nor blame one of the several places it does it.
                raise ExpertError(
                    f"domain label #{i} is the number {domain}: labels name the experts and "
                    "must be strings. scikit-learn passes numbers where it encodes the "
                    "labels itself: cross_val_predict(method='predict_proba') (use "
                    "method='predict', or cross_val_score with a probability scorer), "
                    "VotingClassifier, StackingClassifier and OneVsRestClassifier, which "
                    "cannot wrap a Router")
            validate_domain_name(domain, f"domain label #{i}")
        # numpy labels (np.str_) would become expert names that print as np.str_('x').
        domains = [str(d) for d in domains]
        groups: dict[str, list[str]] = {}
        where: dict[str, list[int]] = {}  # so an error names a text by its place in `texts`
        for i, (text, domain) in enumerate(zip(texts, domains, strict=True)):
            groups.setdefault(domain, []).append(text)
            where.setdefault(domain, []).append(i)
        return self.fit_stats([
            compute_stats(self.embedder, group, domain=domain, positions=where[domain],
                          max_tokens=_cap(self._config), progress=progress,
                          tfidf_buckets=self._config.tfidf_buckets,
                          skip_pairs=self._config.skip_pairs)
            for domain, group in sorted(groups.items())])

    def fit_stats(self: _RouterT,
                  stats: Mapping[str, DomainStats] | Iterable[DomainStats]) -> _RouterT:
        """Fit from per-domain statistics: a mapping expert → stats, or stats named by domain."""
        expected = "a list of DomainStats or a mapping of expert names to DomainStats"
        if isinstance(stats, DomainStats):
            raise IR3DEError(f"fit_stats takes {expected}, not a single DomainStats (pass "
                             "[stats] for a router with one expert)")
        if isinstance(stats, Mapping):
            for name, s in stats.items():
                _require_stats(s, f"fit_stats takes {expected}; {name!r} is")
            named = list(stats.items())
        elif isinstance(stats, Iterable) and not isinstance(stats, (str, bytes)):
            stats = list(stats)
            for i, s in enumerate(stats):
                _require_stats(s, f"fit_stats takes {expected}; item #{i} is")
            named = [(s.domain, s) for s in stats]
        else:
            raise IR3DEError(f"fit_stats takes {expected}, got {type(stats).__name__}")
        table: dict[str, DomainStats] = {}
        for name, s in named:
            validate_domain_name(name, s.source)
            if name in table:
                raise ExpertError(f"duplicate expert {name!r} ({table[name].source} and "
                                  f"{s.source}); merge shards of one domain first, or rename one")
            table[name] = s if s.domain == name else s.renamed(name)
        return self._fit_table(table, refuse_identical=True)

    def _fit_table(self: _RouterT, table: dict[str, DomainStats], *, refuse_identical: bool,
                   chosen_mu: float | None = None) -> _RouterT:
        """Solve for the experts of ``table`` (checked names), refusing incompatible
        statistics and, with ``refuse_identical``, two experts with identical ones;
        ``chosen_mu``: the identity μ ``"auto"`` already chose for these statistics."""
        with self._lock:
            self._check_compatible(table.values())
            config = self._config  # (the user's settings: a cap of None is counted anew)
            if refuse_identical:
                _refuse_identical(list(table.items()), pairs=config.reads_pairs)
            self._state = self._solve(tuple(table), table, config, chosen_mu)
        return self

    def _check_compatible(self, stats: Iterable[DomainStats]) -> None:
        stats = list(stats)
        check_same_embedder(stats)
        check_same_max_tokens(stats)
        for s in stats:
            if s.fingerprint != self.embedder.fingerprint:
                theirs, ours = told_apart(s.fingerprint, self.embedder.fingerprint)
                raise FingerprintMismatchError(
                    f"{s.source} ({s.domain}) was made with embedding {theirs} but "
                    f"this router uses {self.embedder.name} ({ours})")
            if s.n_tokens == 0:
                raise StatsFormatError(f"{s.source} ({s.domain}) holds no tokens")
            # The fingerprint names the embedder, not the arrays: a hand-made or damaged
            # file can carry the right one with arrays of another size.
            h1, V = self.embedder.dim + 1, self.embedder.vocab_size
            if s.b.shape != (h1,) or (s.A is not None and s.A.shape != (h1, h1)):
                A = "no A" if s.A is None else f"A {s.A.shape}"
                raise StatsFormatError(f"{s.source} ({s.domain}): {A} and b "
                                       f"{s.b.shape} do not fit embedding width {h1 - 1}")
            for what, arr in (("token counts", s.counts), ("document frequencies",
                                                             s.doc_counts)):
                if arr is not None and arr.shape != (V,):
                    raise StatsFormatError(f"{s.source} ({s.domain}): {what} cover "
                                           f"{arr.shape[0]} token ids, the embedder's "
                                           f"vocabulary {V}")

    def _solve(self, experts: tuple[str, ...], stats: Mapping[str, DomainStats],
               config: RouterConfig, chosen_mu: float | None = None) -> _State:
        counted = config.max_tokens is None
        config = _counted_cap(config, stats)
        if config.model == "nb":
            used = _smoothing_in_use(config, [stats[n].n_prompts for n in experts])
            if used.spelling_prior is not None:
                spelling = _spelling(self.embedder)
                if config.spelling == "auto" and not spelling.rows.size:
                    # the prior's own refusal would name a setting the user never gave
                    raise IR3DEError(
                        f"the default's spelling back-off is a prior for experts of "
                        f"{FEW_SPELLING_FLOOR} to {FEW_PROMPTS} prompts each on average, and "
                        f"no token of {self.embedder.name}'s vocabulary has character "
                        f"n-grams to spread it over: set spelling=None (--spelling none)")
                L = solve_spelling_prior(stats, experts, spelling, alpha=used.alpha,
                                         mass=used.spelling_prior)
            else:
                L = solve_nb(stats, experts, alpha=used.alpha)  # (V rows: _check_compatible)
            if used.spelling is not None:
                with np.errstate(over="ignore"):  # (an overflow is refused just below)
                    L += used.spelling * solve_spelling(stats, experts,
                                                        _spelling(self.embedder))
                require_scores(L, f"the spelling back-off's weight {used.spelling:g} is too "
                               "large", "token table")
            pairs = skips = unseen = None
            if used.pairs is not None or used.skips is not None:
                _require_pairs(stats, experts)
            if used.pairs is not None:
                pairs = solve_pairs(stats, experts, mass=used.pairs)
            if used.skips is not None:
                skips = solve_pairs(stats, experts, mass=used.skips, skips=True)
            if used.unseen == "ignore":
                # (doc_counts: the token table's solve has required them)
                unseen = np.flatnonzero(sum(np.asarray(stats[n].doc_counts) for n in experts)
                                        == 0)
            tfidf = None
            if config.tfidf is not None:
                parts = _require_tfidf(stats, experts)
                W, idf = solve_tfidf(parts, [stats[n].n_prompts for n in experts],
                                     names=experts)
                with np.errstate(over="ignore", invalid="ignore"):  # (refused just below)
                    tfidf = TfidfScores.build(W, idf, L.shape[0], config.tfidf)
                for table in (tfidf.rows, tfidf.bias):
                    require_scores(table, f"the TF-IDF weight {config.tfidf:g} is too large",
                                   "TF-IDF table")
            # from_logits normalises its argument in place: W keeps the column-exact L.
            return _State(config, experts, dict(stats), L,
                          VocabScores.from_logits(L.copy(), pairs, tfidf, skips, unseen), None,
                          used, counted)
        ridge: _Ridge = {"lam": config.lam, "balance": config.balance,
                         "regularize_bias": config.regularize_bias}
        if config.identity is not None:
            mu = config.identity
            if mu == "auto" and chosen_mu is not None:
                # A saved router's μ: the search would pick it again from the same
                # statistics, and solving at it gives the search's own (W, U) bit for bit
                # at a fraction of the cost (one solve instead of one per grid value).
                mu = chosen_mu
                W, U = solve_identity(stats, experts, self.embedder, mu=mu, **ridge)
            elif mu == "auto":
                W, U, mu = solve_identity_auto(stats, experts, self.embedder, **ridge)
            else:
                W, U = solve_identity(stats, experts, self.embedder, mu=mu, **ridge)
            return _State(config, experts, dict(stats), W, vocab_scores(self.embedder, W, U),
                          mu, cap_counted=counted)
        A, B = design(stats, experts, balance=config.balance, embedder=self.embedder)
        W = solve(A, B, lam=config.lam, regularize_bias=config.regularize_bias,
                  normalize=config.normalize)
        return _State(config, experts, dict(stats), W, vocab_scores(self.embedder, W), None,
                      cap_counted=counted)

    @property
    def _fitted(self) -> _State:
        if self._state is None:
            raise NotFittedError("this router has no experts yet: fit it or load one")
        return self._state

    # ------------------------------------------------------------- experts
    @property
    def experts(self) -> list[str]:
        """Expert names, in column order."""
        return list(self._fitted.experts)

    @property
    def stats(self) -> dict[str, DomainStats]:
        """Each expert's statistics (what ``remove_expert`` would take away)."""
        return dict(self._fitted.stats)

    @property
    def identity_mu(self) -> float | None:
        """The identity ridge μ in use (the chosen one when ``identity="auto"``), or None."""
        return self._fitted.mu

    @property
    def smoothing(self) -> Smoothing | None:
        """The ``nb`` model's ``(α, pair mass, skip-pair mass, unseen, spelling weight,
        spelling prior's mass)`` in use (the ones chosen from the experts' prompt counts
        where the config says ``"auto"``; a mass or weight is None without that table), or
        None for the ridge model."""
        return self._fitted.smoothing

    @property
    def W(self) -> npt.NDArray[np.float64]:
        """The solved linear model, one column per expert: for ``model="ridge"`` the
        weights on x̃ (shape (h+1, D), last row the bias); for ``model="nb"`` the weights
        on one-hot token ids, i.e. the log-likelihoods ``log p(t | d)`` (shape (V, D)).
        Read-only, as every array the statistics expose: a write to it would stick without
        moving any decision (routing reads the tables solved from it)."""
        return self._fitted.W

    def add_expert(self: _RouterT, name: str, stats: DomainStats) -> _RouterT:
        """Add an expert from its statistics and re-solve: the router equals a full refit
        on every expert's statistics.

        The other experts' statistics are untouched, but their decisions can move: the
        ridge solves all columns jointly, the pair table is smoothed towards the pooled pair
        distribution, and ``"auto"`` settings follow the prompt counts: the smoothing
        switches to lighter values when the new expert holds 50 prompts or fewer or moves
        the mean across 100, ``"auto"`` skip pairs and unseen tokens with it, and the
        default's spelling back-off changes form (added term, prior or off) when the mean
        crosses 100 or 10 (:attr:`smoothing` tells the values in use; fix ``alpha``,
        ``pairs``, ``skips``, ``unseen`` and ``spelling`` or ``spelling_prior`` to keep
        them).
        """
        _require_stats(stats, f"add_expert({name!r}, stats): stats is")
        validate_domain_name(name, stats.source)
        with self._lock:
            state = self._fitted
            if name in state.stats:
                raise ExpertError(f"expert {name!r} already exists; remove it first")
            # Renamed first, so a refusal names the expert being added, not the stats'
            # domain.
            stats = stats if stats.domain == name else stats.renamed(name)
            self._check_compatible([*state.stats.values(), stats])
            _refuse_identical([*state.stats.items(), (name, stats)], new=True,
                              pairs=state.config.reads_pairs)
            new = {**state.stats, name: stats}
            # (the user's settings, as every solve takes them: a cap of None stays the
            # counted one, which a saved router records)
            self._state = self._solve((*state.experts, name), new, self._config)
        return self

    def remove_expert(self, name: str) -> DomainStats:
        """Remove an expert, re-solve, and return its statistics."""
        with self._lock:
            state = self._fitted
            if not isinstance(name, str) or name not in state.stats:
                raise unknown_expert(name, state.experts)
            if len(state.experts) == 1:
                raise ExpertError(f"cannot remove {name!r}: it is the router's only expert")
            new = {n: s for n, s in state.stats.items() if n != name}
            self._state = self._solve(tuple(n for n in state.experts if n != name), new,
                                      self._config)
        return state.stats[name]

    def set_params(self: _RouterT, **params: Any) -> _RouterT:
        """Change settings (sklearn-style) and return the router; re-solves only if the
        model or its parameters change (``model``, ``alpha``, ``pairs``, ``skips``,
        ``unseen``, ``spelling``, ``spelling_prior``, ``lam``, ``balance``, ``normalize``,
        ``regularize_bias``, ``identity``, ``tfidf``).

        Takes every name :meth:`get_params` gives: the settings, ``config`` (a
        :class:`RouterConfig` or a preset name, as in the constructor: each setting not
        named in the same call is taken from it) and ``embedder`` (as in the constructor;
        a fitted router takes only one with the same fingerprint, since its statistics
        were made with this one). A failed change leaves the router as it was.

        >>> Router().set_params(config="paper", k=5).get_params()["k"]
        5
        """
        settings = {k: v for k, v in params.items() if k not in ("embedder", "config")}
        try:
            _check_settings(settings)
        except IR3DEError as exc:
            raise IR3DEError(f"{exc}; set_params also takes embedder and config (a "
                             f"RouterConfig or a preset name)") from None
        with self._lock:
            # From the user's settings, not the solved ones: a cap of None, which the
            # solved config holds as the statistics' number, stays None (the next fit
            # counts its own), and get_params is the same before and after a fit.
            state, current = self._state, self._config
            config = _configure(params.get("config", current), settings)
            embedder = _embedder(params["embedder"]) if "embedder" in params \
                else self.embedder
            if state is not None and embedder.fingerprint != self.embedder.fingerprint:
                ours, theirs = told_apart(self.embedder.fingerprint, embedder.fingerprint)
                raise FingerprintMismatchError(
                    f"this router was fitted with embedding {self.embedder.name} "
                    f"({ours}), not {embedder.name} "
                    f"({theirs}), and its statistics only fit that one; set "
                    f"the embedder on an unfitted router (sklearn.base.clone(router) is one) "
                    f"and fit it")
            if state is not None:
                if current.reads_pairs and not config.reads_pairs:
                    # Experts told apart by their token pairs alone would tie on every
                    # prompt.
                    _refuse_identical(list(state.stats.items()), pairs=False)
                resolve = any(getattr(config, key) != getattr(current, key)
                              for key in _RESOLVE_KEYS)
                # one assignment, settings and solution together (see _State)
                if resolve:
                    self._state = self._solve(state.experts, state.stats, config)
                elif (solved := _counted_cap(config, state.stats)) != state.config or \
                        (config.max_tokens is None) != state.cap_counted:
                    self._state = replace(state, config=solved,
                                          cap_counted=config.max_tokens is None)
            self._config = config
            self.embedder = embedder
        return self

    # --------------------------------------------------------- scikit-learn
    # What scikit-learn's model selection (clone, cross_val_score, cross_val_predict,
    # GridSearchCV) needs of an estimator; none of it imports scikit-learn.
    _estimator_type = "classifier"  # scikit-learn < 1.6 reads this instead of the tags

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The router's parameters (sklearn-style): the constructor's ``embedder`` (the
        loaded :class:`~ir3de.embedding.Embedder` itself, so clones share it and its table
        is never copied) and ``config`` (the :class:`RouterConfig` as set: a fit leaves it
        as it was, so ``max_tokens`` None stays None where :attr:`config` holds the
        statistics' number), then each of that config's settings on its own (``model``,
        ``alpha``, ``pairs``, ``skips``, ``unseen``, ``spelling``, ``spelling_prior``,
        ``lam``, ``k``, ``selector``,
        ``balance``, ``normalize``, ``regularize_bias``, ``max_tokens``, ``identity``,
        ``tfidf``), which a parameter grid can name. ``deep`` changes
        nothing: a router holds no other estimator.

        >>> params = Router("wordllama", "paper").get_params()
        >>> params["model"], params["k"], params["config"] == RouterConfig.preset("paper")
        ('ridge', 10, True)
        """
        config = self._config  # (a fit leaves them as they were: see set_params)
        return {"embedder": self.embedder, "config": config,
                **{f.name: getattr(config, f.name) for f in fields(RouterConfig)}}

    def __sklearn_clone__(self: _RouterT) -> _RouterT:
        """What ``sklearn.base.clone`` returns: an unfitted router with the same parameters
        and the same embedder object (clone's default would deep-copy the embedding table)."""
        return type(self)(**self.get_params(deep=False))

    def __sklearn_is_fitted__(self) -> bool:
        """Whether the router has experts (scikit-learn's ``check_is_fitted`` asks this)."""
        return self._state is not None

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's estimator tags (1.6 and later): a classifier of lists of strings
        (the prompts), which needs its labels to fit. Only scikit-learn calls this, so
        only then is scikit-learn imported."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(),
                    input_tags=InputTags(one_d_array=True, two_d_array=False, string=True))

    @property
    def classes_(self) -> np.ndarray:
        """The experts as a numpy array sorted by name, as every scikit-learn classifier's
        (``np.unique(y)``): the column order of :meth:`predict_proba`. scikit-learn's
        probability scorers (``log_loss``, ``roc_auc_score``, ``top_k_accuracy_score``)
        take the columns to be in sorted label order, which :attr:`experts` is only after
        :meth:`fit` (:meth:`fit_stats`, :meth:`add_expert` and :meth:`load` keep their own
        order). Like scikit-learn's fitted attributes it does not exist before the router is
        fitted (:class:`~ir3de.errors.NotFittedError`, an AttributeError)."""
        return np.array(sorted(self._fitted.experts))

    def score(self, texts: Iterable[str], labels: Iterable[str],
              sample_weight: Iterable[float] | None = None) -> float:
        """**Balanced** accuracy of routing ``texts`` against their gold ``labels``: the
        mean over the gold domains of the share of that domain's prompts routed to its own
        expert, the figure this project reports everywhere (:mod:`ir3de.eval.metrics`), so
        that a large domain cannot hide a weak one. scikit-learn classifiers' ``score`` is
        plain accuracy instead; ``cross_val_score`` and ``GridSearchCV`` use this method
        when given no ``scoring``, and ``scoring="accuracy"`` gives plain accuracy.
        A gold label that is no expert counts as misrouted. ``sample_weight`` (one
        non-negative number per text) weighs each text within its domain's share, as
        scikit-learn's ``balanced_accuracy_score`` does; a domain whose texts all weigh 0
        is left out.

        >>> router = Router().fit(["What is 2 + 2?", "Solve x + 1 = 3.", "import os"],
        ...                       ["math", "math", "code"])
        >>> router.score(["What is 3 + 5?", "import sys", "from os import path"],
        ...              ["math", "code", "math"])  # (math 1/2 + code 1/1) / 2; accuracy 2/3
        0.75
        >>> router.score(["What is 3 + 5?", "import sys", "from os import path"],
        ...              ["math", "code", "math"], sample_weight=[3, 1, 1])  # (3/4 + 1) / 2
        0.875
        """
        texts = _texts(texts, "texts", "text")
        labels = _texts(labels, "domain labels", "domain label")
        if len(texts) != len(labels):
            raise IR3DEError(f"{len(texts)} texts but {len(labels)} domain labels")
        if not texts:
            raise IR3DEError("no texts to score")
        weight = np.ones(len(texts)) if sample_weight is None \
            else _sample_weight(sample_weight, len(texts))
        gold = np.array(labels, dtype=object)
        hit = gold == self.predict(texts).astype(object)
        shares = [np.sum(weight[mine] * hit[mine]) / np.sum(weight[mine])
                  for mine in (gold == domain for domain in dict.fromkeys(labels))
                  if np.sum(weight[mine]) > 0]
        return float(np.mean(shares))

    # ------------------------------------------------------------- routing
    @property
    def reports_coverage(self) -> bool:
        """Whether decisions carry ``coverage``: the ``geo`` selector on a pair table."""
        state = self._fitted
        return state.config.selector == "geo" and state.table.pairs is not None

    def route(self, prompt: str, *, explain: bool = False, scores: bool = False,
              against: str | None = None) -> Decision:
        """Route one prompt. Raises :class:`~ir3de.errors.EmptyInputError` if it has no token.

        ``explain``: fill the decision's scores, voting tokens and evidence; ``scores``: the
        scores alone (what ``ir3de route --scores`` prints), without the cost of the rest;
        ``against`` (with ``explain``): the expert the evidence compares the winner with
        instead of the runner-up, to ask why a prompt did not go there (when ``against`` won,
        the runner-up as usual).

        Example:
            >>> d = router.route("def f(x): return x", explain=True,  # doctest: +SKIP
            ...                  against="math")
            >>> d.expert, [(e.tokens, round(e.lead, 2)) for e in d.evidence[:2]]  # doctest: +SKIP
            ('coding', [(['('], 1.27), (['):'], 1.24)])
        """
        return self.route_batch([prompt], explain=explain, scores=scores, against=against)[0]

    def route_batch(self, prompts: Iterable[str], *, explain: bool = False,
                    scores: bool = False, token_ids: Sequence[np.ndarray] | None = None,
                    against: str | None = None) -> list[Decision]:
        """Route many prompts at once (tokenised in parallel, selected vectorised).

        ``token_ids``: the prompts' token ids as :meth:`encode` gives them, to route
        without tokenising them again (a caller that checked every prompt first); they
        must be one non-empty integer array per prompt, below the vocabulary size, at
        most ``max_tokens`` long and without special ids. ``explain``, ``scores`` and
        ``against``: as :meth:`route`'s.
        """
        state = self._fitted
        config = state.config
        if against is not None:
            if not explain:
                raise IR3DEError("against applies to explanations only (explain=True): it "
                                 "names the expert the evidence compares the winner with")
            if not isinstance(against, str) or against not in state.stats:
                raise unknown_expert(against, state.experts)
        if token_ids is None:
            ids = self._encode(_prompts(prompts), max_tokens=_cap(config))
        else:
            ids = self._checked_ids(_texts(prompts, "prompts", "prompt"), token_ids,
                                    _cap(config))
        sel = select(ids, state.table, selector=config.selector, k=config.k)
        experts = state.experts
        other = None if against is None else experts.index(against)
        decisions = []
        for i in range(len(ids)):
            per_expert = tokens = evidence = None
            if explain or scores:
                per_expert = dict(zip(experts, sel.scores[i].tolist(), strict=True))
            if explain:
                pos = sel.voters[i]
                tok_ids = ids[i][pos]
                tokens = [VotingToken(token=t, position=int(p), expert=experts[v],
                                      entropy=float(e))
                          for t, p, v, e in zip(self.embedder.tokens(tok_ids), pos,
                                                state.table.vote[tok_ids],
                                                state.table.entropy[tok_ids], strict=True)]
                evidence = self._evidence(
                    ids[i], sel.voters[i], state.table, config.selector, sel.scores[i],
                    int(sel.choice[i]), other)
            coverage = None if sel.coverage is None else float(sel.coverage[i])
            decisions.append(Decision(experts[sel.choice[i]], float(sel.confidence[i]),
                                      per_expert, tokens, coverage, evidence))
        return decisions

    def _evidence(self, x: np.ndarray, voters: np.ndarray, table: VocabScores, selector: str,
                  scores: np.ndarray, winner: int, against: int | None) -> list[Evidence]:
        """The :class:`Evidence` of a decision by ``selector`` on token ids ``x`` (``voters``:
        its voters' positions; for ``geo`` each distinct id's first) for expert
        ``winner``, whose per-expert scores are ``scores``, against expert ``against`` or,
        when that is None or the winner, the runner-up (:func:`_runner_up`)."""
        if scores.size < 2:
            return []
        if against is None or against == winner:
            against = _runner_up(x, voters, table, selector, scores, winner)
        terms = (_geo_terms(x, voters, table, winner, against) if selector == "geo"
                 else _vote_terms(x, voters, table, selector, winner, against))
        # every id the terms name, turned into strings in one call
        ids = [i for _, a, b, _, _ in terms for i in (a, b) if i is not None]
        names = dict(zip(ids, self.embedder.tokens(ids), strict=True))
        evidence = []
        for kind, a, b, position, lead in terms:
            named = [] if b is None else [None if a is None else names[a], names[b]]
            evidence.append(Evidence(kind, named[1:] if kind == "token" else named,
                                     position, lead))
        return evidence

    def _checked_ids(self, prompts: list[str], token_ids: Sequence[np.ndarray], cap: int
                     ) -> list[np.ndarray]:
        """``token_ids`` given to :meth:`route_batch`, refused unless they can be what
        :meth:`encode` gives for ``prompts`` (an id outside the vocabulary would index
        another token's row, or fail deep in numpy; more ids than the cap, or special
        ids, are what encode never gives)."""
        ids = list(token_ids)  # (as int32 once checked: see below)
        if len(ids) != len(prompts):
            raise IR3DEError(f"{len(ids)} token-id arrays for {len(prompts)} prompts")
        vocab = self.embedder.vocab_size
        special = self.embedder.special_ids
        for i, x in enumerate(ids):
            if not isinstance(x, np.ndarray) or x.ndim != 1 or x.dtype.kind not in "iu":
                raise IR3DEError(f"token ids #{i}: expected a 1-D integer numpy array, as "
                                 "Router.encode gives")
            if not x.size:
                raise EmptyInputError(f"prompt #{i} has no token to route on")
            if x.min() < 0 or x.max() >= vocab:
                raise IR3DEError(f"token ids #{i}: ids must be in [0, {vocab}), the "
                                 f"vocabulary of {self.embedder.name}")
            # (encode caps and drops these; ids that skip it would route on more, or on
            # tokens no statistics file counts)
            if x.size > cap:
                raise IR3DEError(f"token ids #{i}: {x.size} ids, more than this router's "
                                 f"max_tokens ({cap}); Router.encode caps them")
            if special.size and np.isin(x, special).any():
                raise IR3DEError(f"token ids #{i}: special token id(s) "
                                 f"{sorted(set(x[np.isin(x, special)].tolist()))}, which "
                                 "Router.encode drops")
        # encode's type: numpy joins uint64 and int32 arrays as float64, which cannot index
        return [x.astype(np.int32, copy=False) for x in ids]

    def encode(self, prompts: Iterable[str]) -> list[npt.NDArray[np.int32]]:
        """Each prompt's token ids as routing reads them (capped at ``max_tokens``,
        special tokens dropped); an empty prompt or one without a token to route on is an
        :class:`~ir3de.errors.EmptyInputError` naming it (``prompt #i``, from 0).

        Example:
            >>> [x.size for x in router.encode(["What is 17 * 23?"])]  # doctest: +SKIP
            [10]
        """
        return self._encode(_prompts(prompts), max_tokens=_cap(self.config))

    def _encode(self, prompts: list[str], first: int = 0, *,
                max_tokens: int) -> list[np.ndarray]:
        """:meth:`encode` of checked, non-blank ``prompts`` capped at ``max_tokens``
        (the caller's settings, read once), numbered from ``first`` in its errors."""
        ids = self.embedder.encode_batch(prompts, max_tokens,
                                         positions=range(first, first + len(prompts)))
        for i, x in enumerate(ids):
            if not x.size:  # said here, where the text is at hand to tell why
                raise EmptyInputError(f"prompt #{first + i} has no token to route on "
                                      f"({self.embedder.why_no_token(prompts[i])})")
        return ids

    def predict(self, prompts: Iterable[str]) -> npt.NDArray[np.str_]:
        """Expert name for each prompt, a numpy array of strings (as scikit-learn's
        ``classes_[argmax]``), so ``router.predict(texts) == labels`` compares per prompt.

        >>> router = Router().fit(["What is 12 * 7?", "def add(a, b):"], ["math", "code"])
        >>> router.predict(["import os", "What is 2 + 2?"])
        array(['code', 'math'], dtype='<U4')
        """
        experts, selections = self._select(prompts)
        return np.array(experts)[np.concatenate([s.choice for s in selections])]

    def predict_proba(self, prompts: Iterable[str]) -> npt.NDArray[np.float64]:
        """Each prompt's score per expert, shape (prompts, experts) in :attr:`classes_`
        order (sorted by name, whatever the order of :attr:`experts`), each row summing to 1
        (sklearn-style, for probability scorers such as ``log_loss`` or ``roc_auc_score``):
        the softmax of the mean log-likelihood (``geo``),
        the mean token probabilities (``avg``) or the voters' shares (``topk``, ``all``);
        what ``route(..., explain=True)`` reports as ``scores``. A row's argmax is the
        prediction, except where votes tie (the voters' summed probabilities break that)
        and where two experts' scores are exactly equal: routing picks the first in
        :attr:`experts` order, the columns here are in sorted order.

        Example:
            >>> router.classes_  # doctest: +SKIP
            array(['coding', 'instruction_following', 'math', 'multilingual'], dtype='<U21')
            >>> router.predict_proba(["What is 17 * 23?"]).round(2)  # doctest: +SKIP
            array([[0.14, 0.21, 0.64, 0.01]])
        """
        experts, selections = self._select(prompts)
        # columns from the state read once (_select), sorted as classes_ sorts them
        order = sorted(range(len(experts)), key=experts.__getitem__)
        return np.concatenate([s.scores for s in selections])[:, order]

    def _select(self, prompts: Iterable[str]) -> tuple[tuple[str, ...], list[Selection]]:
        """The configured selector's decisions for ``prompts`` (checked, after the router
        is known to be fitted), :data:`_BATCH` prompts at a time, and the experts their
        columns name: one state read once, so an expert added or removed meanwhile (by
        another thread) cannot mislabel them (predict indexed the experts read anew)."""
        state = self._fitted
        config = state.config
        texts = _prompts(prompts)
        selections = [select(self._encode(texts[start:start + _BATCH], start,
                                          max_tokens=_cap(config)), state.table,
                             selector=config.selector, k=config.k)
                      for start in range(0, max(len(texts), 1), _BATCH)]
        return state.experts, selections

    # ------------------------------------------------------------ persistence
    def describe(self) -> dict[str, Any]:
        """What ``ir3de inspect`` prints: experts, counts, settings, embedder."""
        return self._describe(self._fitted)

    def _describe(self, state: _State) -> dict[str, Any]:
        """:meth:`describe` of ``state``, which the caller read once."""
        return _describe(state.config, self.embedder.name, self.embedder.fingerprint,
                         self.embedder.spec, self.embedder.dim,
                         [_expert_meta(n, state.stats[n], self.embedder.spec)
                          for n in state.experts],
                         state.mu, state.smoothing)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        """Save as one safetensors file (statistics + JSON settings), atomically; with
        ``overwrite=False`` an existing file (also one created meanwhile by another
        process) is left as it is: :class:`~ir3de.errors.OutputExistsError`."""
        require_path(path, "Router.save")
        state = self._fitted
        stats = [state.stats[n] for n in state.experts]
        tensors = {"b": np.stack([s.b for s in stats])}
        # Each expert's optional arrays are saved as it has them: experts without them must
        # not cost the others theirs (a router is rebuilt from the file, e.g. when an
        # expert is removed and the model changed). When only some experts have an array,
        # its rows are theirs, listed in <key>_experts; without that tensor, the rows are
        # every expert's (files written before it existed).
        for key, rows in _RAGGED_ROWS.items():
            have = [i for i, s in enumerate(stats) if getattr(s, key) is not None]
            if not have:
                continue
            if len(have) < len(stats):
                tensors[rows] = np.array(have, dtype=np.int64)
            if key == "A":
                tensors[key] = np.stack([np.asarray(stats[i].A) for i in have])
            elif key == "pairs":
                parts = [p for p in (stats[i].pairs for i in have) if p is not None]
                tensors.update(_ragged_tensors(("pair_keys", "pair_counts", "pair_offsets"),
                                               [(p.keys, p.counts) for p in parts]))
            elif key == "tfidf":
                # df stacked; the Gram entries ragged, as the pairs are.
                counted = [t for t in (stats[i].tfidf for i in have) if t is not None]
                tensors["tfidf_df"] = np.stack([t.df for t in counted])
                tensors.update(_ragged_tensors(("tfidf_keys", "tfidf_values", "tfidf_offsets"),
                                               [(t.keys, t.values) for t in counted]))
            else:
                tensors[key] = np.stack([getattr(stats[i], key) for i in have])
        version = max(s.format_version for s in stats)  # 1: every expert's A is stored
        # (the state read once: a change made meanwhile by another thread would otherwise
        # give the file one state's tensors and another's metadata)
        write_safetensors(path, tensors, {"format": ROUTER_FORMAT, "version": version,
                                          **self._describe(state),
                                          "max_tokens_counted": state.cap_counted},
                          overwrite=overwrite)

    @classmethod
    def load(cls: type[_RouterT], path: str | os.PathLike[str], *,
             embedder: EmbedderLike | None = None) -> _RouterT:
        """Load a saved router; its embedder is reloaded from the recorded recipe
        (or ``embedder``) and must have the recorded fingerprint."""
        require_path(path, "Router.load")
        tensors, meta = read_safetensors(path)
        meta = _check_router_meta(meta, str(path))
        emb = _embedder(embedder) if embedder is not None else load_recorded(
            meta["embedder"], f"{path} was built with",
            "load it with embedder=THAT_PLACE, on the command line --embedder",
            "load it with embedder=load_embedder(TOKENIZER_JSON, table=TABLE), on the command "
            "line --embedder TOKENIZER_JSON --table TABLE")
        if emb.fingerprint != meta["fingerprint"]:
            recorded, loaded = told_apart(meta["fingerprint"], emb.fingerprint)
            raise FingerprintMismatchError(
                f"{path} was built with embedding {recorded} but {emb.name} has {loaded}")
        if meta["dim"] != emb.dim:  # what inspect reports must be what routes
            raise StatsFormatError(f"{path}: metadata says dim {meta['dim']} but its "
                                   f"embedder {emb.name} has width {emb.dim}")
        experts = meta["experts"]
        b = tensors.get("b")
        h1 = emb.dim + 1
        if b is None or b.shape != (len(experts), h1):
            raise StatsFormatError(f"{path}: tensor b does not match {len(experts)} experts "
                                   f"of width {h1 - 1}")
        A = _router_grams(tensors, meta["version"], len(experts), h1, str(path))
        counts, doc_counts = (
            _router_rows(tensors, name, what, len(experts), emb.vocab_size, str(path))
            for name, what in (("counts", "token counts"),
                               ("doc_counts", "document frequencies")))
        pairs = _router_pairs(tensors, len(experts), str(path))
        tfidf = _router_tfidf(tensors, len(experts), str(path))
        stats = {e["name"]: DomainStats(
            domain=e["name"], A=A[i], b=b[i].astype(np.float64),
            n_tokens=e["n_tokens"], n_prompts=e["n_prompts"],
            fingerprint=meta["fingerprint"], embedder=e.get("embedder", meta["embedder"]),
            max_tokens=e["max_tokens"], source=f"{path}:{e['name']}",
            counts=counts[i], doc_counts=doc_counts[i], pairs=pairs[i], tfidf=tfidf[i],
            signature=e.get("signature"))
            for i, e in enumerate(experts)}
        config = RouterConfig.from_dict(meta["config"])
        if meta["max_tokens_counted"]:  # (the cap the experts' statistics hold)
            config = replace(config, max_tokens=None)
        router = cls(emb, config)
        # Names were checked with the metadata. Identical experts are refused when a router
        # is built or changed, not here: a file saved before that rule still loads.
        return router._fit_table(stats, refuse_identical=False,
                                 chosen_mu=meta.get("identity_mu"))


def _texts(texts: Iterable[str], what: str, item: str) -> list[str]:
    """``texts`` as a list, read once (a generator validated first would be empty after);
    one text where many are expected, or an item that is not a string, is refused."""
    refuse_lone_text(texts, what)
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise IR3DEError(f"{item} #{i} is of type {type(text).__name__}, not a string")
    return texts


def _prompts(prompts: Iterable[str]) -> list[str]:
    """``prompts`` as a list of strings, none of them blank (:class:`EmptyInputError`
    naming ``prompt #i``, from 0)."""
    texts = _texts(prompts, "prompts", "prompt")
    for i, text in enumerate(texts):
        if is_blank(text):
            raise EmptyInputError(f"prompt #{i} is empty"
                                  + ("" if not text.strip() else " (it holds only invisible "
                                     "characters)"))
    return texts


def _sample_weight(values: Iterable[float], n: int) -> np.ndarray:
    """:meth:`Router.score`'s ``sample_weight``, checked: ``n`` finite numbers, none
    negative, not all 0."""
    try:
        weight = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise IR3DEError("sample_weight must be numbers, one per text") from None
    if weight.ndim != 1:
        raise IR3DEError(f"sample_weight must be one number per text, got an array of shape "
                         f"{weight.shape}")
    if weight.shape != (n,):
        raise IR3DEError(f"sample_weight has {weight.size} values for {n} texts")
    if not np.isfinite(weight).all() or (weight < 0).any() or not weight.any():
        raise IR3DEError("sample_weight must be finite and non-negative, not all 0")
    # Scaled to a largest weight of 1, which leaves every ratio the score takes as it was:
    # finite weights near 1e308 overflowed their sums to inf (and the score to a wrong one).
    return weight / weight.max()


def _require_stats(value: object, context: str) -> None:
    """Refuse anything but statistics (it would fail later with an AttributeError)."""
    if not isinstance(value, DomainStats):
        raise IR3DEError(f"{context} a {type(value).__name__}, not a DomainStats (made by "
                         "compute_stats or read by DomainStats.load)")


def _embedder(source: object) -> Embedder:
    """The embedder a router is given (:func:`~ir3de.embedding.as_embedder`; None: the
    default), with a hint for the likeliest mistake, a config given first."""
    try:
        return as_embedder(source, default=True)
    except IR3DEError as exc:
        if isinstance(source, RouterConfig):
            raise IR3DEError(f"{exc} (a RouterConfig is the second argument, or "
                             "config=...)") from None
        raise


def _refuse_identical(named: Sequence[tuple[str, DomainStats]], new: bool = False, *,
                      pairs: bool) -> None:
    """Refuse two experts with identical statistics (:func:`~ir3de.statistics.find_identical`):
    one corpus under two names would tie on every prompt. ``pairs``: whether the router
    reads token pairs, which then tell apart experts with the same tokens in another order.
    With ``new``, the last of ``named`` is an expert being added: only it is compared with
    the others (a router saved before this rule keeps working), and it is named without its
    file (the gateway's upload has only a temporary one)."""
    if new:
        name, stats = named[-1]
        for other, s in named[:-1]:
            if find_identical([s, stats], pairs=pairs) is not None:
                raise ExpertError(f"identical statistics: the new expert {name!r} holds "
                                  f"exactly the counts of expert {other!r}"
                                  f"{_why_identical(s, stats)}; to rename {other!r}, remove "
                                  "it first")
        return
    found = find_identical([s for _, s in named], pairs=pairs)
    if found is not None:
        (first, a), (second, b) = named[found[0]], named[found[1]]
        raise ExpertError(f"identical statistics: experts {first!r} ({a.source}) and "
                          f"{second!r} ({b.source}) hold exactly the same counts"
                          f"{_why_identical(a, b)}; each expert needs the statistics of its "
                          "own corpus")


def _why_identical(a: DomainStats, b: DomainStats) -> str:
    """The likely cause of two experts' identical counts, or, when only their pair tables
    differ, that the router at hand does not read those: they would tie all the same."""
    if find_identical([a, b], pairs=True) is not None:
        return " (the same corpus twice?)"
    return (", but for token pairs, which these settings do not read (the nb model with "
            "pairs and the geo selector does): they would tie on every prompt")


def _refuse_lacking(stats: Mapping[str, DomainStats], experts: Sequence[str], name: str,
                    what: str, why: str) -> None:
    """Refuse experts whose statistics lack the optional table ``name`` (``what`` it holds),
    naming them, every way they can have come to lack it and the ways out (``why``)."""
    missing = [f"{stats[n].source} ({n})" for n in experts if getattr(stats[n], name) is None]
    if missing:
        raise StatsFormatError(f"no {what} in {', '.join(missing)}: {why}")


def _require_pairs(stats: Mapping[str, DomainStats], experts: Sequence[str]) -> None:
    """Pair features need every expert's pair counts."""
    _refuse_lacking(stats, experts, "pairs", "token-pair frequencies",
                    "made with ir3de stats --no-pairs, merged from such files, or by an ir3de "
                    "before pairs were counted; build without pair features (--preset unigram "
                    "or --pairs none; RouterConfig.preset('unigram') or pairs=None), or count "
                    "them again without --no-pairs")


def _require_tfidf(stats: Mapping[str, DomainStats],
                   experts: Sequence[str]) -> list[TfidfCounts]:
    """Every expert's TF-IDF statistics, over one bucket count."""
    _refuse_lacking(stats, experts, "tfidf", "TF-IDF statistics",
                    f"count them with ir3de stats --tfidf-buckets {TFIDF_BUCKETS} "
                    "(compute_stats(tfidf_buckets=...)), or build without the TF-IDF blend "
                    "(the default; --tfidf none, tfidf=None)")
    parts = [p for p in (stats[n].tfidf for n in experts) if p is not None]  # (all, now)
    check_same_buckets(parts, "the experts'")
    return parts


def _row_experts(tensors: dict[str, np.ndarray], key: str, n_experts: int,
                 where: str) -> np.ndarray:
    """The experts (indices) the rows of the optional array ``key`` of a router file belong
    to: those its ``<key>_experts`` tensor lists (distinct, ascending), else every one."""
    name = _RAGGED_ROWS[key]
    rows = int_tensor(tensors, name, where)
    if rows is None:
        return np.arange(n_experts)
    if rows.ndim != 1 or not rows.size or np.any(np.diff(rows) <= 0) or rows[0] < 0 \
            or rows[-1] >= n_experts:
        raise StatsFormatError(f"{where}: tensor {name!r} must list distinct expert indices "
                               f"in ascending order, each below {n_experts}")
    return rows


def _refuse_rows_alone(tensors: dict[str, np.ndarray], key: str, what: str,
                       where: str) -> None:
    """For a router file without the optional array ``key`` (its tensors, ``what``): its
    ``<key>_experts`` list alone is a :class:`StatsFormatError`."""
    if _RAGGED_ROWS[key] in tensors:
        raise StatsFormatError(f"{where}: holds {_RAGGED_ROWS[key]!r} but no {what}")


def _router_rows(tensors: dict[str, np.ndarray], key: str, what: str, n_experts: int,
                 vocab_size: int, where: str) -> list[np.ndarray | None]:
    """Each expert's token or document counts ``key`` from a router file (None for the
    experts that have none)."""
    array = int_tensor(tensors, key, where)
    if array is None:
        _refuse_rows_alone(tensors, key, repr(key), where)
        return [None] * n_experts
    rows = _row_experts(tensors, key, n_experts, where)
    if array.shape != (rows.size, vocab_size):
        raise StatsFormatError(f"{where}: {what} do not match {rows.size} experts and a "
                               f"vocabulary of {vocab_size}")
    out: list[np.ndarray | None] = [None] * n_experts
    for row, expert in enumerate(rows):
        out[expert] = array[row]
    return out


def _router_grams(tensors: dict[str, np.ndarray], version: int, n_experts: int, h1: int,
                  where: str) -> list[np.ndarray | None]:
    """Each expert's ``A`` from a router file: every expert's in version 1, in version 2
    those of the experts it lists in ``A_experts`` (all without that tensor), or none."""
    array = tensors.get("A")
    if array is None:
        if version == 1 or _RAGGED_ROWS["A"] in tensors:
            raise StatsFormatError(f"{where}: holds no tensor 'A'; a version {version} "
                                   f"router file holds {_expected_grams(version)}")
        return [None] * n_experts
    rows = np.arange(n_experts) if version == 1 else _row_experts(tensors, "A", n_experts,
                                                                  where)
    if array.shape != (rows.size, h1, h1) or (version == 1 and _RAGGED_ROWS["A"] in tensors):
        raise StatsFormatError(f"{where}: tensor A does not match {rows.size} experts of "
                               f"width {h1 - 1}; a version {version} router file holds "
                               f"{_expected_grams(version)}")
    out: list[np.ndarray | None] = [None] * n_experts
    for row, expert in enumerate(rows):
        out[expert] = array[row].astype(np.float64)
    return out


def _expected_grams(version: int) -> str:
    return ("every expert's A" if version == 1 else
            "A for the experts that 'A_experts' lists, or for none")


def _router_pairs(tensors: dict[str, np.ndarray], n_experts: int,
                  where: str) -> list[PairCounts | None]:
    """Each expert's pair frequencies from a router file (None for the experts that have
    none)."""
    names = ("pair_keys", "pair_counts", "pair_offsets")
    if not any(name in tensors for name in names):
        _refuse_rows_alone(tensors, "pairs", "token-pair tensors", where)
        return [None] * n_experts
    rows = _row_experts(tensors, "pairs", n_experts, where)
    keys, counts, offsets = (int_tensor(tensors, name, where) for name in names)
    spans = _ragged_spans(keys, counts, offsets, rows.size)
    if keys is None or counts is None or spans is None:
        raise StatsFormatError(f"{where}: token-pair tensors do not match {rows.size} experts")
    out: list[PairCounts | None] = [None] * n_experts
    for expert, (a, b) in zip(rows, spans, strict=True):
        out[expert] = PairCounts(keys[a:b], counts[a:b])
    return out


def _ragged_tensors(names: tuple[str, str, str],
                    rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-expert ``(keys, values)`` of different lengths as a router file stores them (what
    :func:`_ragged_spans` reads back): both concatenated, with each expert's start in the
    third tensor, named ``names``."""
    return {names[0]: np.concatenate([k for k, _ in rows]),
            names[1]: np.concatenate([v for _, v in rows]),
            names[2]: np.cumsum([0, *(k.size for k, _ in rows)])}


def _ragged_spans(keys: np.ndarray | None, values: np.ndarray | None,
                  offsets: np.ndarray | None, n_rows: int) -> list[tuple[int, int]] | None:
    """Each row's ``(start, end)`` in a router file's ragged per-expert tensors (``keys``
    and ``values`` concatenated over ``n_rows`` experts, each one's start in ``offsets``),
    or None when they do not fit together."""
    if keys is None or values is None or offsets is None or keys.ndim != 1 \
            or values.shape != keys.shape or offsets.shape != (n_rows + 1,) \
            or offsets[0] != 0 or offsets[-1] != keys.size or np.any(np.diff(offsets) < 0):
        return None
    return list(itertools.pairwise(offsets.tolist()))


def _router_tfidf(tensors: dict[str, np.ndarray], n_experts: int,
                  where: str) -> list[TfidfCounts | None]:
    """Each expert's TF-IDF statistics from a router file (None for the experts that have
    none)."""
    names = ("tfidf_df", "tfidf_keys", "tfidf_values", "tfidf_offsets")
    arrays = [int_tensor(tensors, name, where) for name in names]
    if all(a is None for a in arrays):
        _refuse_rows_alone(tensors, "tfidf", "TF-IDF tensors", where)
        return [None] * n_experts
    rows = _row_experts(tensors, "tfidf", n_experts, where)
    df, keys, values, offsets = arrays
    spans = _ragged_spans(keys, values, offsets, rows.size)
    if df is None or keys is None or values is None or spans is None or df.ndim != 2 \
            or df.shape[0] != rows.size:
        raise StatsFormatError(f"{where}: TF-IDF tensors do not match {rows.size} experts")
    out: list[TfidfCounts | None] = [None] * n_experts
    for i, (expert, (a, b)) in enumerate(zip(rows, spans, strict=True)):
        out[expert] = TfidfCounts(df[i], keys[a:b], values[a:b])
    return out


def _expert_meta(name: str, s: DomainStats, spec: dict[str, Any]) -> dict[str, Any]:
    """An expert's entry in a router's metadata. Signed statistics keep their signature,
    and the embedder recipe they were signed with where it is not the router's (``spec``),
    so that the loaded expert can still be verified (:func:`ir3de.signing.verify`)."""
    meta = {"name": name, "n_tokens": s.n_tokens, "n_prompts": s.n_prompts,
            "max_tokens": s.max_tokens}
    if s.signature:
        meta["signature"] = s.signature
        if s.embedder != spec:
            meta["embedder"] = s.embedder
    return meta


def _describe(config: RouterConfig, name: str, fingerprint: str, spec: dict[str, Any],
              dim: int, experts: list[dict[str, Any]], mu: float | None,
              smoothing: Smoothing | None) -> dict[str, Any]:
    return {"config": asdict(config), "identity_mu": mu, "smoothing": _smoothing(smoothing),
            "embedder_name": name, "fingerprint": fingerprint, "embedder": spec, "dim": dim,
            "experts": experts}


_SPELLINGS: dict[str, Spelling] = {}


def _spelling(embedder: Embedder) -> Spelling:
    """The spelling map of ``embedder``'s vocabulary, built once per fingerprint (a
    pass over every token string; a re-solve after add/remove reuses it)."""
    spelling = _SPELLINGS.get(embedder.fingerprint)
    if spelling is None:
        spelling = Spelling.of(embedder.tokens(range(embedder.vocab_size)))
        _SPELLINGS[embedder.fingerprint] = spelling
    return spelling


def _smoothing_in_use(config: RouterConfig, n_prompts: Sequence[int]) -> Smoothing:
    """The nb model's settings in use for experts of ``n_prompts`` prompts each (what
    ``"auto"`` chooses; the solve's and the saved file's description alike)."""
    return Smoothing(*nb_smoothing(config.alpha, config.pairs, n_prompts),
                     *nb_skips(config.skips, config.unseen, n_prompts),
                     *nb_spelling(config.spelling, config.spelling_prior, n_prompts))


def _smoothing(smoothing: Smoothing | None) -> dict[str, Any] | None:
    """``Router.smoothing`` as the JSON object of ``describe`` (and ``inspect --json``)."""
    return None if smoothing is None else smoothing._asdict()


def _check_router_meta(meta: dict[str, Any], where: str) -> dict[str, Any]:
    if meta.get("format") != ROUTER_FORMAT:
        raise StatsFormatError(f"{where}: not an ir3de router file (format {meta.get('format')!r})")
    meta_version(meta, _ROUTER_VERSIONS, where, "router")
    for key in ("config", "fingerprint", "embedder", "experts", "dim"):
        if key not in meta:
            raise StatsFormatError(f"{where}: router metadata lacks {key!r}")
    # Hand-edited or corrupt metadata is refused here, naming the field, rather than by a
    # KeyError or TypeError deep inside loading (and `inspect` prints only checked fields).
    if not isinstance(meta["config"], dict):
        raise StatsFormatError(f"{where}: metadata field 'config' must be an object of "
                               f"router settings, got {meta['config']!r}")
    # Settings a router was saved without did not exist then: they take the behaviour of
    # that time, not today's defaults (on load or in `inspect`). Before the 'nb' model,
    # routers were ridge routers; before pair features, nb used none; before the spelling
    # back-off, none.
    try:
        config = RouterConfig.from_dict({"model": "ridge", "pairs": None, "tfidf": None,
                                         "spelling": None, **meta["config"]})
    except IR3DEError as exc:
        raise StatsFormatError(f"{where}: metadata field 'config': {exc}") from None
    meta["config"] = asdict(config)
    if not isinstance(meta["fingerprint"], str) or not meta["fingerprint"]:
        raise StatsFormatError(f"{where}: metadata field 'fingerprint' must be a non-empty "
                               f"string, got {meta['fingerprint']!r}")
    if not is_recipe(meta["embedder"]):
        raise StatsFormatError(f"{where}: metadata field 'embedder' must be an embedder recipe "
                               f"(an object with a string 'kind'), got {meta['embedder']!r}")
    meta["dim"] = meta_int(meta["dim"], 1, where, "dim")
    # Files saved before it was recorded hold the cap as the user's: kept so.
    meta.setdefault("max_tokens_counted", False)
    if not isinstance(meta["max_tokens_counted"], bool):
        raise StatsFormatError(f"{where}: metadata field 'max_tokens_counted' must be true or "
                               f"false, got {meta['max_tokens_counted']!r}")
    mu = meta.get("identity_mu")
    if mu is not None and not _positive_number(mu):
        raise StatsFormatError(f"{where}: metadata field 'identity_mu' must be a number > 0 "
                               f"or null, got {mu!r}")
    # The μ a router is solved at on load, unsearched: it must be one the search or the
    # configured value can give (a hand-edited μ loaded and moved decisions).
    allowed: list[float | None] = [None]
    if config.model != "ridge" or config.identity is None:
        what = "the router has no identity features"
    elif config.identity == "auto":
        allowed += MU_GRID
        what = "leave-one-out picks from " + ", ".join(f"{m:g}" for m in MU_GRID)
    else:
        allowed.append(config.identity)
        what = f"its config sets μ = {config.identity:g}"
    if mu not in allowed:
        raise StatsFormatError(f"{where}: metadata field 'identity_mu' is {mu!r}, but {what}")
    experts = meta["experts"]
    if not isinstance(experts, list) or not experts:
        raise StatsFormatError(f"{where}: metadata field 'experts' must be a non-empty list "
                               f"of objects, got {experts!r}")
    checked: dict[str, dict[str, Any]] = {}
    for i, e in enumerate(experts):
        field_name = f"experts[{i}]"
        if not isinstance(e, dict):
            raise StatsFormatError(f"{where}: metadata field {field_name!r} must be an object, "
                                   f"got {e!r}")
        for key in ("name", "n_tokens", "n_prompts", "max_tokens"):
            if key not in e:
                raise StatsFormatError(f"{where}: metadata field {field_name!r} lacks {key!r}")
        # legacy: a router saved before stricter names still loads, so its expert can go
        validate_domain_name(e["name"], f"{where}: {field_name}", legacy=True)
        # (what a signature holds is checked by verify, which names the expert)
        check_signature(e.get("signature"), where, f"{field_name}.signature")
        if "embedder" in e and not is_recipe(e["embedder"]):
            raise StatsFormatError(f"{where}: metadata field '{field_name}.embedder' must be "
                                   f"an embedder recipe, got {e['embedder']!r}")
        if e["name"] in checked:  # a dict keyed by name would merge them silently
            raise StatsFormatError(f"{where}: duplicate expert {e['name']!r}")
        checked[e["name"]] = {
            **e, "n_tokens": meta_int(e["n_tokens"], 0, where, f"{field_name}.n_tokens"),
            "n_prompts": meta_int(e["n_prompts"], 0, where, f"{field_name}.n_prompts"),
            "max_tokens": meta_int(e["max_tokens"], 1, where, f"{field_name}.max_tokens")}
    meta["experts"] = list(checked.values())
    # Derived, not read: what the solve will use (files saved before "auto" lack it, and a
    # hand-edited value would only mislead `inspect`).
    meta["smoothing"] = _smoothing(None if config.model != "nb" else _smoothing_in_use(
        config, [e["n_prompts"] for e in meta["experts"]]))
    return meta


def read_router_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A saved router's description, without loading its embedder."""
    _, meta = read_safetensors(path)
    return _check_router_meta(meta, str(path))
