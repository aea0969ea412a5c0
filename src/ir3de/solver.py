"""Closed-form solves of the per-token table from additive statistics: the ridge
``W = (A + λI)⁻¹ B`` (with token-identity features: :func:`solve_identity`), and the
count tables of the ``nb`` model (the default): :func:`solve_nb` for tokens,
:func:`solve_pairs` for adjacent token pairs and skip pairs, smoothed as :func:`nb_smoothing`
and :func:`nb_skips` say, and :func:`solve_spelling` for the back-off through the token
strings' character n-grams (:func:`nb_spelling`).

The design is assembled from per-domain statistics in a canonical order (sorted
by expert name), so a router that gained and then lost an expert, or that was
built from files given in any order, solves exactly the same system as a full
refit and gets bit-identical weights.

Example:
    >>> import numpy as np
    >>> from ir3de.solver import solve
    >>> A = np.eye(3) * 10; B = np.ones((3, 2))
    >>> np.round(solve(A, B, lam=0.0), 3).tolist()
    [[0.577, 0.577], [0.577, 0.577], [0.577, 0.577]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from .embedding import Embedder
from .errors import IR3DEError, StatsFormatError
from .selector import PairScores
from .statistics import DomainStats, _table_blocks, split_pairs

__all__ = ["DEFAULT_ALPHA", "DEFAULT_LAMBDA", "DEFAULT_PAIRS", "DEFAULT_SKIPS", "DEFAULT_SPELLING",
           "DEFAULT_SPELLING_PRIOR", "FEW_ALPHA", "FEW_MIN_PROMPTS", "FEW_PAIRS", "FEW_PROMPTS",
           "FEW_SPELLING_FLOOR", "FEW_SPELLING_PRIOR", "MU_GRID", "SCORE_BOUND", "SPELLING_BETA",
           "SPELLING_N", "UNIGRAM_ALPHA",
           "Spelling", "choose_identity_mu", "design", "domain_weights", "identity_loo", "nb_skips",
           "nb_smoothing", "nb_spelling", "require_scores", "solve", "solve_identity",
           "solve_identity_auto", "solve_nb", "solve_pairs", "solve_spelling",
           "solve_spelling_prior"]

DEFAULT_LAMBDA = 1e-2
# Chosen by the mean balanced accuracy on a held-out 20 % of the fit data over all five
# evaluation splits (benchmarks/explore_counts.py; EVALUATION.md), never on test prompts.
# With pair features, α = 0.03 and a Dirichlet mass of 1e5 (explore_smoothing.py, the same
# rule); without them, α = 0.1 (explore_counts.py).
DEFAULT_ALPHA = 0.03
UNIGRAM_ALPHA = 0.1
DEFAULT_PAIRS = 1e5
# Skip pairs (the id two places back, id) with their own Dirichlet mass, and tokens that no
# fit prompt holds adding nothing (the `skips` preset, "auto"): the pick of
# benchmarks/explore_longer.py by the same rule (held-out 99.59 against 99.56), then ahead
# on the three fresh checks of fresh_unseen.py (98.68 against 98.59); not the default, as
# it costs 2.5 times the avg selector per prompt (EVALUATION.md, "Skip pairs, built").
DEFAULT_SKIPS = 1e6
# A back-off through spelling (the `spelling` setting, "auto" in the default): each token's
# row of the nb table plus w times a Naive-Bayes table over the character n-grams of its
# string, from the same document frequencies; n, β and w as benchmarks/explore_subword.py
# picked them by the rule (held-out 99.563 against 99.556, then 98.65 against 98.59 on the
# fresh checks), which made it the default.
DEFAULT_SPELLING = 0.25
# The same back-off as a Dirichlet prior of the token table instead (the `spelling_prior`
# setting, "auto" in the `spelling-prior` preset): each domain's token counts smoothed
# towards its spelling distribution with mass m, so the spelling speaks where a token's own
# counts are few. benchmarks/explore_spelling_prior.py's pick by the rule with MiniLM's
# tokenizer (held-out 99.33 against 99.31, then 98.86 against 97.94 on the fresh checks);
# with WordLlama's it stays below the added term on held-out data, so it is not the default.
DEFAULT_SPELLING_PRIOR = 1e5
# ... and its mass for fit sets small enough for FEW_ALPHA / FEW_PAIRS: the pick of
# benchmarks/explore_spelling_prior.py --small against no spelling there (held-out +0.08,
# fresh checks +0.33 over four small sizes; with MiniLM's tokenizer +0.09 and +0.25). The
# default's back-off takes this form too where the mean prompt count is small (--default-
# small: held-out +0.05, fresh +0.17 over those sizes and four with one or half of the
# experts small, where the mean mostly stays over 100 and the back-off off; MiniLM +0.04,
# +0.12), from FEW_SPELLING_FLOOR prompts per expert on average up: the rule's pick with
# WordLlama over sizes down to one prompt per expert (--default-tiny: held-out +0.11, fresh
# +0.06; MiniLM's check preferred no floor by 0.07).
FEW_SPELLING_PRIOR = 1e2
FEW_SPELLING_FLOOR = 10
SPELLING_N = 3
SPELLING_BETA = 0.1
# For fit sets of about 100 prompts per domain or fewer (the `few` preset, and what "auto"
# picks for them, FEW_PROMPTS below): chosen by the same rule on the five splits with every
# fit set cut to 10 / 30 / 100 prompts per domain or to 3 % of it, then checked on fresh
# prompts (benchmarks/explore_scale.py --alpha-small on the held-out parts cleaned of test
# prompts; it replaced α = 0.003, m = 1e4, the pick on the old ones; EVALUATION.md).
FEW_ALPHA = 0.01
FEW_PAIRS = 3e4
# α and the pair mass "auto" (the default) take the FEW_ values when the experts hold
# FEW_PROMPTS prompts each or fewer on average, or when the smallest holds FEW_MIN_PROMPTS or
# fewer, else the DEFAULT_ ones: the switch with the best held-out accuracy over fit sets
# from 10 prompts per domain to the full five splits, where it never fires, and then (the
# minimum) over routers with one or half of their experts cut to 10-100 prompts
# (benchmarks/explore_scale.py --auto and --mixed-or; --rechoose kept it, also with today's
# FEW_ values; EVALUATION.md).
FEW_PROMPTS = 100
FEW_MIN_PROMPTS = 50
# Pseudo-count of every pair (the unseen one included) in the pooled background, so that
# the background gives every pair a positive probability.
_PAIR_EPS = 1e-2

_T = TypeVar("_T")


def domain_weights(stats: Mapping[str, DomainStats], balance: bool) -> dict[str, float]:
    """Weight of each domain in the ridge objective.

    Unbalanced (the paper): every token weighs 1. Balanced: every domain's
    tokens weigh ``n̄ / n_d`` (n̄ = mean tokens per domain), so each domain
    contributes the same total weight whatever its size, while the overall scale
    (and therefore the meaning of λ) stays that of the unbalanced problem. The
    weighted problem is still a sum of per-domain statistics.
    """
    if not balance:
        return dict.fromkeys(stats, 1.0)
    mean = float(np.mean([s.n_tokens for s in stats.values()]))
    return {name: mean / s.n_tokens for name, s in stats.items()}


def design(stats: Mapping[str, DomainStats], experts: Sequence[str], *,
           balance: bool = False,
           embedder: Embedder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``A = Σ_d w_d A_d`` (summed in sorted-name order, so a router that gained and lost
    an expert solves a refit's system) and ``B = [w_d b_d]`` in ``experts`` order.

    Statistics with token counts enter with ``A_d`` and ``b_d`` formed from them
    (:meth:`~ir3de.statistics.DomainStats.moments`), which needs ``embedder``; the others
    with their stored ``A_d`` and ``b_d``.
    """
    if not experts:
        raise IR3DEError("a router needs at least one expert")
    weights = domain_weights(stats, balance)
    names = sorted(experts)
    moments = {n: stats[n].moments(embedder) for n in names}
    A = weights[names[0]] * moments[names[0]][0]
    for n in names[1:]:  # in place: at h = 4096 a stacked copy would be D x 134 MB
        A += weights[n] * moments[n][0]
    B = np.stack([weights[n] * moments[n][1] for n in experts], axis=1)
    return A, B


def solve(A: np.ndarray, B: np.ndarray, *, lam: float = DEFAULT_LAMBDA,
          regularize_bias: bool = True, normalize: bool = True) -> np.ndarray:
    """Solve ``(A + λI) W = B`` for W of shape (h+1, D).

    Args:
        A: (h+1, h+1) summed second moments (last row/column = bias).
        B: (h+1, D) one column of summed features per domain.
        lam: ridge penalty λ ≥ 0 (the reference code uses 1e-2).
        regularize_bias: penalise the bias row too, as the reference code does.
        normalize: scale every domain column of W to unit L2 norm (reference code).
    """
    if lam < 0 or not np.isfinite(lam):
        raise IR3DEError(f"λ must be a finite number ≥ 0, got {lam}")
    reg = A + _penalty(A.shape[0], lam, regularize_bias)
    _refuse_singular(reg, lam, regularize_bias)
    try:
        W = np.linalg.solve(reg, B)
    except np.linalg.LinAlgError:
        raise IR3DEError("the ridge system is singular: use λ > 0 or fit on more data") from None
    if not np.all(np.isfinite(W)):
        raise IR3DEError("the ridge solve produced NaN/Inf: the system is ill-conditioned; "
                         "increase λ")
    if normalize:
        # Each column is scaled by a power of two (exactly) before it is squared: at a
        # large λ the weights are tiny (≈ B/λ) and their squares would underflow to a zero
        # norm, though the column itself is not zero.
        _, exp = np.frexp(np.abs(W).max(axis=0))
        scale = np.ldexp(1.0, exp - 1)
        norms = np.linalg.norm(W / scale, axis=0) * scale
        if np.any(norms == 0):
            if np.any(~B.any(axis=0) & (norms == 0)):
                raise IR3DEError("a domain column of W is zero: that domain has no data")
            raise IR3DEError(f"λ={lam:g} is too large: the weights underflow to zero")
        W = W / norms
    return W


# Grid of identity ridges searched by choose_identity_mu (log-spaced; wide enough that on
# every built-in setting the pick is interior: 3 or 10, EVALUATION.md "Kept: choosing μ
# automatically").
MU_GRID: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
_ROWS_CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True, eq=False)
class _IdentitySums:
    """Weighted token counts of the identity problem: ``c`` (V,) all domains, ``C`` (V, D)."""

    c: np.ndarray
    C: np.ndarray
    weights: np.ndarray  # (D,) per-token weight of each domain, in ``experts`` order
    seen: np.ndarray  # ids with c > 0
    _cache: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def blocks(self, embedder: Embedder) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """``(ids, X̃)`` over the observed ids. A μ search visits them ~20 times, so they are
        kept in memory when that costs at most _ROWS_CACHE_BYTES (h ≲ 1000 for a 32k
        vocabulary); wider tables are re-read block by block instead."""
        if self._cache:
            return self._cache
        if self.seen.size * (embedder.dim + 1) * 8 > _ROWS_CACHE_BYTES:
            return _table_blocks(embedder, self.seen)
        self._cache.extend(_table_blocks(embedder, self.seen))
        return self._cache


def _require(stats: Mapping[str, DomainStats], experts: Sequence[str],
             get: Callable[[DomainStats], _T | None], what: str, use: str) -> dict[str, _T]:
    """At least one expert, and every expert's statistics carry what ``get`` reads (older
    files may not): returns it per expert. The error names the experts, what is missing and
    what to do instead."""
    if not experts:
        raise IR3DEError("a router needs at least one expert")
    found = {n: get(stats[n]) for n in experts}
    missing = [f"{stats[n].source} ({n})" for n in experts if found[n] is None]
    if missing:
        raise StatsFormatError(
            f"no {what} in {', '.join(missing)}: made by streaming_stats (the "
            "reference accumulation, which keeps A and b only) or by an older ir3de that did "
            f"not count them; count them again with compute_stats (ir3de stats) to {use}")
    return {n: value for n, value in found.items() if value is not None}


def _vocab_size(stats: DomainStats) -> int:
    """The vocabulary size of statistics with a pair table, which comes with the document
    frequencies that bound it (one per token id)."""
    assert stats.doc_counts is not None
    return stats.doc_counts.size


# The largest score a table may hold: a prompt's score sums at most a few times the
# vocabulary's size of them (distinct tokens, pairs), which then stays far below float64's
# 1.8e308. Real tables hold scores of tens at most.
SCORE_BOUND = 1e300


def require_scores(table: np.ndarray, setting: str, what: str) -> None:
    """An accepted but extreme setting can overflow or underflow a table to ±inf, or fill
    it with scores a prompt's sum overflows (and the selectors' normalisation then gives
    NaN): refuse it, naming the setting, rather than route every prompt to the first expert
    with confidence NaN."""
    if not np.all(np.isfinite(table)):
        raise IR3DEError(f"{setting}: the {what} is not finite")
    if table.size and np.abs(table).max() > SCORE_BOUND:
        raise IR3DEError(f"{setting}: the {what} holds scores beyond ±{SCORE_BOUND:g}, which "
                         "a prompt's sum of them could overflow")


def _identity_sums(stats: Mapping[str, DomainStats], experts: Sequence[str],
                   embedder: Embedder, balance: bool) -> _IdentitySums:
    counts = _require(stats, experts, lambda s: s.counts, "token counts",
                      "use identity features, or use the 'dense' preset")
    weights = domain_weights(stats, balance)
    names = sorted(experts)  # canonical order: add/remove gives a refit's exact sums
    c = weights[names[0]] * counts[names[0]].astype(np.float64)
    for n in names[1:]:
        c += weights[n] * counts[n]
    if c.shape != (embedder.vocab_size,):
        raise StatsFormatError(f"token counts have length {c.shape[0]}, the embedder's "
                               f"vocabulary {embedder.vocab_size}")
    C = np.stack([weights[n] * counts[n].astype(np.float64) for n in experts], axis=1)
    return _IdentitySums(c, C, np.array([weights[n] for n in experts]), np.flatnonzero(c))


# Beyond this condition number a float64 solve keeps under 4 significant digits: W would be
# one of many near-solutions, picked by how LAPACK pivots.
_MAX_CONDITION = 1e12


def _refuse_singular(reg: np.ndarray, lam: float, regularize_bias: bool) -> None:
    """Raise :class:`IR3DEError` if ``reg = A + λI`` is singular or nearly so. LAPACK
    fails only on an exact zero pivot: at λ = 0, statistics of a few tokens (rank 4 of 257)
    were "solved" into arbitrary weights. A's eigenvalues are ≥ 0 and ≤ its trace, so with
    the whole diagonal penalised the condition number is at most (trace + λ) / λ, and only
    past the limit (λ = 0 or tiny) are the eigenvalues computed (O(h³), once)."""
    if regularize_bias and lam > 0 and (np.trace(reg) + lam) / lam <= _MAX_CONDITION:
        return
    eig = np.linalg.eigvalsh(reg)
    if eig[0] <= eig[-1] / _MAX_CONDITION:
        condition = "infinite" if eig[0] <= 0 else f"{eig[-1] / eig[0]:.1e}"
        raise IR3DEError(f"the ridge system is singular or nearly so (condition number "
                         f"{condition}, λ = {lam:g}): use a larger λ or fit on more data")


def _penalty(h1: int, lam: float, regularize_bias: bool) -> np.ndarray:
    penalty = np.full(h1, float(lam))
    if not regularize_bias:
        penalty[-1] = 0.0
    return np.diag(penalty)


def _identity_solve(sums: _IdentitySums, embedder: Embedder, mu: float, lam: float,
                    regularize_bias: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Schur-complement solve: ``(W, U, S)`` with ``S`` the regularised (h+1)-square system.

    Token ids that never occur contribute nothing to the system and get ``U = 0``, so only
    the observed ones are visited.
    """
    c, C = sums.c, sums.C
    h1 = embedder.dim + 1
    M = np.zeros((h1, h1))
    R = np.zeros((h1, C.shape[1]))
    keep = mu / (c + mu)
    for ids, X in sums.blocks(embedder):
        M += X.T @ (X * (c[ids] * keep[ids])[:, None])
        R += X.T @ (C[ids] * keep[ids, None])
    M = (M + M.T) / 2
    W = solve(M, R, lam=lam, regularize_bias=regularize_bias, normalize=False)
    U = np.zeros_like(C)
    for ids, X in sums.blocks(embedder):
        U[ids] = (C[ids] - c[ids, None] * (X @ W)) / (c[ids] + mu)[:, None]
    return W, U, M + _penalty(h1, lam, regularize_bias)


def solve_identity(stats: Mapping[str, DomainStats], experts: Sequence[str],
                   embedder: Embedder, *, mu: float, lam: float = DEFAULT_LAMBDA,
                   balance: bool = False,
                   regularize_bias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Joint ridge on token features ``[x̃_t, one-hot(t)]``: returns ``(W, U)``.

    A token's scores are ``x̃_t W + U[t]``. The identity block of the normal equations is
    diagonal (``diag(c) + μI`` with ``c`` the weighted token counts), so eliminating it
    leaves an (h+1)-square system, the Schur complement:

        (Ẽᵀ diag(cμ/(c+μ)) Ẽ + λI) W = Ẽᵀ diag(μ/(c+μ)) C,   U = (C - diag(c) Ẽ W) / (c+μ)

    with ``C = [w_d c_d]``. Only per-domain token counts are needed, so the model stays a
    sum of per-domain statistics. ``μ`` is the identity block's ridge: large μ gives back
    the dense model, small μ lets frequent tokens carry their own domain evidence
    (:func:`choose_identity_mu` picks it from the statistics alone).
    Columns are not rescaled (a unit-norm W would break the joint solution).
    """
    _check_mu(mu)
    sums = _identity_sums(stats, experts, embedder, balance)
    W, U, _ = _identity_solve(sums, embedder, mu, lam, regularize_bias)
    return W, U


def _check_mu(mu: float) -> None:
    if not mu > 0 or not np.isfinite(mu):
        raise IR3DEError(f"the identity ridge μ must be a finite number > 0, got {mu}")


def identity_loo(stats: Mapping[str, DomainStats], experts: Sequence[str],
                 embedder: Embedder, *, mu: float, lam: float = DEFAULT_LAMBDA,
                 balance: bool = False, regularize_bias: bool = True) -> float:
    """Exact leave-one-out squared error of the identity ridge, per unit of token weight.

    Every training token is one observation ``(φ_t, y_t)``; the closed-form PRESS residual
    of observation i is ``r_i / (1 - h_i)`` with leverage ``h_i = w_i φ_iᵀ (G + Λ)⁻¹ φ_i``.
    Tokens with the same id share ``φ``, and the block inverse gives
    ``φ_vᵀ (G + Λ)⁻¹ φ_v = 1/(c_v+μ) + (μ/(c_v+μ))² x̃_vᵀ S⁻¹ x̃_v`` (S the Schur system), so
    the whole sum costs one pass over the observed vocabulary: no text, no refits.
    """
    _check_mu(mu)
    sums = _identity_sums(stats, experts, embedder, balance)
    return _loo(sums, embedder, mu, *_identity_solve(sums, embedder, mu, lam, regularize_bias))


def _loo(sums: _IdentitySums, embedder: Embedder, mu: float, W: np.ndarray, U: np.ndarray,
         S: np.ndarray) -> float:
    """PRESS error of the identity ridge solved at ``mu`` as ``(W, U, S)``."""
    S_inv = np.linalg.inv(S)
    total = 0.0
    for ids, X in sums.blocks(embedder):
        scores = X @ W + U[ids]
        c = sums.c[ids]
        q = 1.0 / (c + mu) + (mu / (c + mu)) ** 2 * np.einsum("ij,ij->i", X @ S_inv, X)
        lev = q[:, None] * sums.weights[None, :]  # (ids, D): leverage of a token in domain d
        # ||e_d - s_v||² for every (v, d) without forming the one-hot targets.
        sq = (scores ** 2).sum(axis=1, keepdims=True) - 2 * scores + 1.0
        total += float((sums.C[ids] * sq / (1.0 - lev) ** 2).sum())
    return total / float(sums.c.sum())


def choose_identity_mu(stats: Mapping[str, DomainStats], experts: Sequence[str],
                       embedder: Embedder, *, lam: float = DEFAULT_LAMBDA,
                       balance: bool = False, regularize_bias: bool = True,
                       grid: Sequence[float] = MU_GRID) -> tuple[float, dict[float, float]]:
    """The μ of ``grid`` with the lowest :func:`identity_loo` error, and every grid error.

    Deterministic in the summed statistics, so a router that gained and lost an expert
    picks the same μ as a full refit. Ties go to the larger μ (the smoother model).

    Example:
        >>> mu, errors = choose_identity_mu(router.stats, router.experts,
        ...                                 router.embedder)  # doctest: +SKIP
    """
    mu, errors, _, _ = _search(_identity_sums(stats, experts, embedder, balance), embedder,
                               grid, lam, regularize_bias)
    return mu, errors


def solve_identity_auto(stats: Mapping[str, DomainStats], experts: Sequence[str],
                        embedder: Embedder, *, lam: float = DEFAULT_LAMBDA,
                        balance: bool = False, regularize_bias: bool = True,
                        grid: Sequence[float] = MU_GRID
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """``(W, U, μ)``: :func:`solve_identity` at the μ :func:`choose_identity_mu` picks,
    reusing the search's own solve at that μ instead of solving once more."""
    mu, _, W, U = _search(_identity_sums(stats, experts, embedder, balance), embedder, grid,
                          lam, regularize_bias)
    return W, U, mu


def _search(sums: _IdentitySums, embedder: Embedder, grid: Sequence[float], lam: float,
            regularize_bias: bool) -> tuple[float, dict[float, float], np.ndarray, np.ndarray]:
    """Best μ of ``grid`` (ties to the larger μ), every error, and ``(W, U)`` at the best."""
    if not grid:
        raise IR3DEError("the μ grid is empty")
    for mu in grid:
        _check_mu(mu)
    errors: dict[float, float] = {}
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for mu in map(float, grid):
        W, U, S = _identity_solve(sums, embedder, mu, lam, regularize_bias)
        errors[mu] = _loo(sums, embedder, mu, W, U, S)
        if best is None or (errors[mu], -mu) < (errors[best[0]], -best[0]):
            best = (mu, W, U)  # only the best solve is kept: U is vocabulary-sized
    assert best is not None
    return best[0], errors, best[1], best[2]


def nb_smoothing(alpha: float | Literal["auto"], pairs: float | Literal["auto"] | None,
                 n_prompts: Sequence[int]) -> tuple[float, float | None]:
    """The token table's α and the pair mass in use for experts of ``n_prompts`` prompts
    each: a number is kept, ``"auto"`` becomes ``FEW_ALPHA`` / ``FEW_PAIRS`` when the mean
    prompt count is at most ``FEW_PROMPTS`` or the smallest is at most ``FEW_MIN_PROMPTS``,
    and ``DEFAULT_ALPHA`` / ``DEFAULT_PAIRS`` otherwise (None, no pairs, stays None). The
    values are the router's, not a column's: a small α for a tiny expert's column alone
    measured worse than either (EVALUATION.md). Prompt counts are summed statistics like any
    other, so adding or removing an expert and re-solving still equals a full refit, even
    where it moves the router across the line.

    >>> nb_smoothing("auto", "auto", [30, 80, 120])
    (0.01, 30000.0)
    >>> nb_smoothing("auto", "auto", [20, 3000, 5000])
    (0.01, 30000.0)
    >>> nb_smoothing("auto", None, [300, 5000])
    (0.03, None)
    """
    few = _few(n_prompts)
    return (((FEW_ALPHA if few else DEFAULT_ALPHA) if alpha == "auto" else alpha),
            ((FEW_PAIRS if few else DEFAULT_PAIRS) if pairs == "auto" else pairs))


def nb_spelling(spelling: float | Literal["auto"] | None,
                spelling_prior: float | Literal["auto"] | None,
                n_prompts: Sequence[int]) -> tuple[float | None, float | None]:
    """The spelling back-off in use for experts of ``n_prompts`` prompts each, as the added
    term's weight and the prior's mass (at most one of them set); a number or None is kept.

    ``spelling="auto"`` (the default) gives the added term ``DEFAULT_SPELLING``, except where
    :func:`nb_smoothing` takes its values for few fit prompts. There the back-off takes the
    prior's form with ``FEW_SPELLING_PRIOR`` when the mean prompt count is at most
    ``FEW_PROMPTS`` and at least ``FEW_SPELLING_FLOOR`` (every expert small on average:
    explore_spelling_prior.py --default-small, --default-tiny), and is off otherwise: below
    the floor, and when only the smallest expert is small (the added term did not beat none
    on small fit sets, explore_subword.py --small; nor did the prior beside whole experts,
    explore_spelling_prior.py --small-mixed). ``spelling_prior="auto"`` (preset
    ``spelling-prior``) gives ``DEFAULT_SPELLING_PRIOR``, or ``FEW_SPELLING_PRIOR`` wherever
    :func:`nb_smoothing` switches (explore_spelling_prior.py --small).

    >>> nb_spelling("auto", None, [300, 5000])  # the added term
    (0.25, None)
    >>> nb_spelling("auto", None, [30, 80, 120])  # every expert small: the prior
    (None, 100.0)
    >>> nb_spelling("auto", None, [20, 3000, 5000])  # one small expert beside whole ones
    (None, None)
    >>> nb_spelling("auto", None, [2, 5, 9])  # fewer than FEW_SPELLING_FLOOR on average
    (None, None)
    >>> nb_spelling(None, "auto", [300, 5000]), nb_spelling(None, "auto", [20, 3000, 5000])
    ((None, 100000.0), (None, 100.0))
    """
    if spelling is not None and spelling_prior is not None:
        raise IR3DEError(f"the spelling back-off is either an added term (spelling="
                         f"{spelling!r}) or a prior (spelling_prior={spelling_prior!r})")
    few = _few(n_prompts)
    if spelling == "auto":
        if not few:
            return DEFAULT_SPELLING, None
        every_small = _mean_within(n_prompts, FEW_SPELLING_FLOOR, FEW_PROMPTS)
        return None, FEW_SPELLING_PRIOR if every_small else None
    if spelling_prior == "auto":
        return None, FEW_SPELLING_PRIOR if few else DEFAULT_SPELLING_PRIOR
    return spelling, spelling_prior


def _few(n_prompts: Sequence[int]) -> bool:
    """Whether "auto" settings take their values for few fit prompts (see :func:`nb_smoothing`)."""
    # (no experts is "few" before min is asked)
    return _mean_within(n_prompts, 0, FEW_PROMPTS) or min(n_prompts) <= FEW_MIN_PROMPTS


def _mean_within(n_prompts: Sequence[int], low: int, high: int) -> bool:
    """Whether the mean prompt count is from ``low`` to ``high`` (both inclusive)."""
    # exact in integers: no rounding of the mean at either line
    total, n = sum(n_prompts), len(n_prompts)
    return low * n <= total <= high * n


def nb_skips(skips: float | Literal["auto"] | None, unseen: Literal["auto", "score", "ignore"],
             n_prompts: Sequence[int]) -> tuple[float | None, Literal["score", "ignore"]]:
    """The skip-pair mass and the treatment of unseen tokens in use for experts of
    ``n_prompts`` prompts each. ``"auto"`` gives ``DEFAULT_SKIPS`` and ``"ignore"`` (a token
    no fit prompt holds adds nothing), or, where :func:`nb_smoothing` takes its values for few
    fit prompts, no skip pairs and ``"score"`` (its Laplace row): the setting that was
    measured on small fit sets (benchmarks/explore_scale.py); a number, None or the
    treatment itself is kept.

    >>> nb_skips("auto", "auto", [300, 5000])
    (1000000.0, 'ignore')
    >>> nb_skips("auto", "auto", [30, 80, 120])
    (None, 'score')
    """
    few = _few(n_prompts)
    return ((None if few else DEFAULT_SKIPS) if skips == "auto" else skips,
            ("score" if few else "ignore") if unseen == "auto" else unseen)


def solve_nb(stats: Mapping[str, DomainStats], experts: Sequence[str], *,
             alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Naive-Bayes log-likelihoods of binary token features, shape (V, D) in ``experts`` order.

    ``L[t, d] = log((df[t, d] + α) / (n_d + α V))`` with ``df[t, d]`` the number of domain
    d's prompts that contain token t and ``n_d = Σ_t df[t, d]`` (Laplace smoothing α over a
    vocabulary of V ids). This is the closed-form maximum-a-posteriori fit of a linear model
    on one-hot token features; each column depends on its own domain's statistics only, so
    adding or removing an expert leaves every other column bit-identical. Summed over a
    prompt's distinct tokens (the ``geo`` selector), it is the Naive-Bayes decision with a
    uniform prior: every domain weighs the same whatever its size.

    Example:
        >>> L = solve_nb(router.stats, router.experts, alpha=0.1)  # doctest: +SKIP
    """
    doc_counts = _doc_counts(stats, experts)
    if not alpha > 0 or not np.isfinite(alpha):
        raise IR3DEError(f"the smoothing α must be a finite number > 0, got {alpha}")
    V = {doc_counts[n].shape[0] for n in experts}
    if len(V) != 1:
        raise StatsFormatError(f"document frequencies of different lengths {sorted(V)}")
    L = np.empty((V.pop(), len(experts)))
    for j, name in enumerate(experts):
        df = doc_counts[name].astype(np.float64)
        L[:, j] = np.log(df + alpha) - np.log(df.sum() + alpha * df.size)
    # Only a huge α overflows (α V → inf); a tiny one leaves log(α) finite.
    require_scores(L, f"α={alpha:g} is too large", "token table")
    return L


def _doc_counts(stats: Mapping[str, DomainStats], experts: Sequence[str]
                ) -> dict[str, np.ndarray]:
    """Each expert's document frequencies, or the error that names the files without them
    and the presets that route on such statistics."""
    # The ridge presets need A and b only ('identity' also the token counts).
    ridge = ("'identity' or 'dense'" if all(stats[n].counts is not None for n in experts)
             else "'dense' or 'paper'")
    return _require(stats, experts, lambda s: s.doc_counts, "document frequencies",
                    f"use the 'nb' model, or use the {ridge} preset")


@dataclass(frozen=True, eq=False)
class Spelling:
    """G (``vocab_size``, ``n_grams``), the map from each token id to the character n-grams
    of its string, as coordinates: entry i links token ``rows[i]`` to n-gram ``cols[i]``
    with ``weights[i]`` = 1 / (that token's number of n-grams), so a row sums to 1 (or is
    empty: special and byte tokens, ``<...>`` and ``[...]``). A fixed function of the
    vocabulary."""

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    vocab_size: int
    n_grams: int

    @classmethod
    def of(cls, tokens: Sequence[str], n: int = SPELLING_N) -> Spelling:
        """The map of a vocabulary's strings: each lower-cased, the word-start marker ``▁``
        read as a space, ``<`` and ``>`` around it, cut into its distinct n-grams.

        >>> g = Spelling.of(["▁Cat", "cat", "<s>"])
        >>> g.rows.tolist(), g.vocab_size, g.n_grams
        ([0, 0, 0, 0, 1, 1, 1], 3, 5)
        """
        ids: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        weights: list[float] = []
        tokens = list(tokens)
        for t, token in enumerate(tokens):
            if token[:1] + token[-1:] in ("<>", "[]"):
                continue
            padded = "<" + token.replace("▁", " ").lower() + ">"
            grams = {padded[i:i + n] for i in range(max(1, len(padded) - n + 1))}
            # sorted: the ids, and so the sums' order, do not depend on hash seeds
            cols.extend(ids.setdefault(g, len(ids)) for g in sorted(grams))
            rows.extend([t] * len(grams))
            weights.extend([1 / len(grams)] * len(grams))
        return cls(np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                   np.array(weights), len(tokens), len(ids))


def solve_spelling(stats: Mapping[str, DomainStats], experts: Sequence[str],
                   spelling: Spelling, *, beta: float = SPELLING_BETA) -> np.ndarray:
    """Each token's back-off row through its spelling, shape (V, D) in ``experts`` order:
    ``R = G L_f``, with ``L_f[f, d] = log((C[f, d] + β) / (Σ_f C[f, d] + β F))`` a
    Naive-Bayes table over the F character n-grams and ``C = Gᵀ df`` their counts from
    each domain's document frequencies (G: :class:`Spelling`). Each column depends on its
    own domain's statistics only, as :func:`solve_nb`'s do, so add/remove stays exact.

    Example:
        >>> R = solve_spelling(router.stats, router.experts, Spelling.of(emb.tokens(
        ...     range(emb.vocab_size))))  # doctest: +SKIP
    """
    doc_counts = _require(stats, experts, lambda s: s.doc_counts, "document frequencies",
                          "use the 'nb' model")
    g = spelling
    R = np.empty((g.vocab_size, len(experts)))
    for j, name in enumerate(experts):
        df = np.asarray(doc_counts[name], dtype=np.float64)
        if df.size != g.vocab_size:
            raise StatsFormatError(f"document frequencies cover {df.size} token ids, the "
                                   f"vocabulary {g.vocab_size}")
        if not g.n_grams:  # every token special: no spelling to back off through
            R[:, j] = 0.0  # (the normaliser below would be log 0)
            continue
        C = np.bincount(g.cols, weights=g.weights * df[g.rows], minlength=g.n_grams)
        Lf = np.log(C + beta) - np.log(C.sum() + beta * g.n_grams)
        R[:, j] = np.bincount(g.rows, weights=g.weights * Lf[g.cols], minlength=g.vocab_size)
    return R


def solve_spelling_prior(stats: Mapping[str, DomainStats], experts: Sequence[str],
                         spelling: Spelling, *, alpha: float = DEFAULT_ALPHA,
                         mass: float = DEFAULT_SPELLING_PRIOR, beta: float = SPELLING_BETA
                         ) -> np.ndarray:
    """The token table with the spelling back-off as a Dirichlet prior, shape (V, D) in
    ``experts`` order, in place of :func:`solve_nb`'s:
    ``L[t, d] = log((df[t, d] + α + m s_d(t)) / (n_d + α V + m))``, where ``s_d`` is
    domain d's spelling distribution over the tokens, ``s_d(t) ∝ exp(R[t, d])`` with R
    :func:`solve_spelling`'s rows, normalised over the tokens that have n-grams (the others,
    special and byte tokens, get α alone), and m the prior's ``mass``. A token that domain
    d's prompts hold often keeps its own frequency; a rare one takes the share its spelling
    gives it. Each column depends on its own domain's statistics only, so add/remove stays
    exact.

    Example:
        >>> L = solve_spelling_prior(router.stats, router.experts, Spelling.of(emb.tokens(
        ...     range(emb.vocab_size))), mass=1e5)  # doctest: +SKIP
    """
    for value, what in ((alpha, "smoothing α"), (mass, "spelling prior's mass")):
        if not value > 0 or not np.isfinite(value):
            raise IR3DEError(f"the {what} must be a finite number > 0, got {value}")
    doc_counts = _doc_counts(stats, experts)  # (refused as solve_nb refuses them)
    spelt = np.bincount(spelling.rows, minlength=spelling.vocab_size) > 0
    if not spelt.any():
        raise IR3DEError("no token of the vocabulary has character n-grams (every one is a "
                         "special or byte token): the spelling prior has nothing to spread "
                         "its mass over; use the additive back-off or none")
    R = solve_spelling(stats, experts, spelling, beta=beta)  # (checks the doc counts' size)
    L = np.empty_like(R)
    for j, name in enumerate(experts):
        # One column at a time: a reduction over a 2-D array can sum in another order than
        # over one column, and each column must stay bit-identical whatever the other
        # experts are. exp of R less its largest spelt entry: every share ≤ 1, their sum
        # ≥ 1, no overflow.
        r = R[:, j]
        share = np.where(spelt, np.exp(r - r[spelt].max()), 0.0)
        df = np.asarray(doc_counts[name], dtype=np.float64)
        L[:, j] = (np.log(df + alpha + mass * (share / share.sum()))
                   - np.log(df.sum() + alpha * df.size + mass))
    require_scores(L, f"α={alpha:g} or the spelling prior's mass {mass:g} is too large",
                   "token table")
    return L


def solve_pairs(stats: Mapping[str, DomainStats], experts: Sequence[str], *,
                mass: float = DEFAULT_PAIRS, skips: bool = False) -> PairScores:
    """Naive-Bayes log-likelihoods of binary token-pair features, normalised per pair: of
    adjacent pairs, or with ``skips`` of skip pairs (keyed as
    :func:`~ir3de.statistics.skip_keys` gives them), each kind a table of its own.

    The pairs are those seen in any expert's statistics (sorted keys, see
    :class:`~ir3de.statistics.PairCounts`), plus one row shared by every pair none of them
    holds; the columns are the ``experts``, in order:

        T[p, d] = log((df[p, d] + m q[p]) / (n_d + m)),   q[p] ∝ Σ_d df[p, d] + ε

    with ``df[p, d]`` the number of domain d's prompts that hold pair p, ``n_d = Σ_p df[p, d]``
    and ``m`` the Dirichlet ``mass``: a domain's pair distribution is smoothed towards the
    pooled one (ε = 0.01 keeps unseen pairs possible), so a pair a domain has never shown
    is judged by how common it is overall. The selector reads ``T`` less its log-sum-exp
    per row, ``log(m q[p] Σ_d 1/(n_d + m) + Σ_d df[p, d]/(n_d + m))`` in closed form, so the
    table is ``base[p] + offset[d]`` wherever ``df[p, d] = 0`` plus ``log1p(df / (m q))``
    where it is not: stored sparse (:class:`~ir3de.selector.PairScores`), O(pairs +
    nonzeros) whatever the number of experts. It depends on the summed statistics only
    (integers, exactly the same in any order), so adding or removing an expert and
    re-solving equals a full refit.

    Example:
        >>> table = solve_pairs(router.stats, router.experts)  # doctest: +SKIP
    """
    tables = _require(stats, experts, lambda s: s.pairs, "token-pair frequencies",
                      "use pair features, or use the 'unigram', 'identity' or 'dense' preset")
    what = "skip-pair" if skips else "pair"
    if not mass > 0 or not np.isfinite(mass):
        raise IR3DEError(f"the {what} Dirichlet mass must be a finite number > 0, got {mass}")
    split = {n: split_pairs(tables[n], _vocab_size(stats[n]))[int(skips)] for n in experts}
    lacking = [f"{stats[n].source} ({n})" for n in experts if split[n] is None]
    pairs = {n: table for n, table in split.items() if table is not None}
    if lacking:
        raise StatsFormatError(
            f"no skip-pair frequencies in {', '.join(lacking)}: counted without them; count "
            "them again with ir3de stats --skip-pairs (compute_stats(skip_pairs=True)), or "
            "build without skip pairs (--skips none; skips=None)")
    keys = np.unique(np.concatenate([pairs[n].keys for n in experts]))
    row = np.concatenate([np.searchsorted(keys, pairs[n].keys) for n in experts])
    col = np.concatenate([np.full(pairs[n].keys.size, j) for j, n in enumerate(experts)])
    df = np.concatenate([pairs[n].counts for n in experts]).astype(np.float64)
    n = np.array([pairs[name].counts.sum() for name in experts], dtype=np.float64) + mass
    q = np.bincount(row, weights=df, minlength=keys.size + 1) + _PAIR_EPS
    mq = mass * (q / q.sum())
    # Only a tiny mass underflows (m q → 0 gives log 0): checked below, with an error
    # naming it rather than numpy's warning.
    with np.errstate(divide="ignore", invalid="ignore"):
        base = np.log(mq) - np.log(mq * (1.0 / n).sum()
                                   + np.bincount(row, weights=df / n[col],
                                                 minlength=keys.size + 1))
        delta = np.log1p(df / mq[row])
    for part in (base, delta):
        require_scores(part, f"the {what} Dirichlet mass {mass:g} is too small",
                       f"{what} table")
    order = np.argsort(row * len(experts) + col)  # CSR: by row, then by expert
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=keys.size + 1))])
    return PairScores(keys, base, -np.log(n), indptr, col[order], delta[order])
