"""Closed-form ridge solve of the token router: ``W = (A + λI)⁻¹ B``.

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

from collections.abc import Mapping, Sequence

import numpy as np

from .embedding import Embedder
from .errors import IR3DEError, StatsFormatError
from .statistics import DomainStats

__all__ = ["DEFAULT_LAMBDA", "design", "domain_weights", "solve", "solve_identity"]

DEFAULT_LAMBDA = 1e-2


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
           balance: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``A = Σ_d w_d A_d`` (summed in sorted-name order), ``B = [w_d b_d]`` in ``experts`` order."""
    if not experts:
        raise IR3DEError("a router needs at least one expert")
    weights = domain_weights(stats, balance)
    names = sorted(experts)
    A = weights[names[0]] * stats[names[0]].A
    for n in names[1:]:  # in place: at h = 4096 a stacked copy would be D x 134 MB
        A += weights[n] * stats[n].A
    B = np.stack([weights[n] * stats[n].b for n in experts], axis=1)
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
    h1 = A.shape[0]
    penalty = np.full(h1, float(lam))
    if not regularize_bias:
        penalty[-1] = 0.0
    reg = A + np.diag(penalty)
    try:
        W = np.linalg.solve(reg, B)
    except np.linalg.LinAlgError:
        raise IR3DEError("the ridge system is singular: use λ > 0 or fit on more data") from None
    if not np.all(np.isfinite(W)):
        raise IR3DEError("the ridge solve produced NaN/Inf: the system is ill-conditioned; "
                         "increase λ")
    if normalize:
        norms = np.linalg.norm(W, axis=0)
        if np.any(norms == 0):
            raise IR3DEError("a domain column of W is zero: that domain has no data")
        W = W / norms
    return W


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
    the dense model, small μ lets frequent tokens carry their own domain evidence.
    Columns are not rescaled (a unit-norm W would break the joint solution).
    """
    if not mu > 0 or not np.isfinite(mu):
        raise IR3DEError(f"the identity ridge μ must be a finite number > 0, got {mu}")
    missing = [n for n in experts if stats[n].counts is None]
    if missing:
        raise StatsFormatError(f"statistics of {missing} carry no token counts (made by an "
                               "older ir3de?): recompute them to use identity features")
    weights = domain_weights(stats, balance)
    names = sorted(experts)  # canonical order: add/remove gives a refit's exact sums
    c = weights[names[0]] * stats[names[0]].counts.astype(np.float64)
    for n in names[1:]:
        c += weights[n] * stats[n].counts
    if c.shape != (embedder.vocab_size,):
        raise StatsFormatError(f"token counts have length {c.shape[0]}, the embedder's "
                               f"vocabulary {embedder.vocab_size}")
    C = np.stack([weights[n] * stats[n].counts.astype(np.float64) for n in experts], axis=1)
    h1 = embedder.dim + 1
    M = np.zeros((h1, h1))
    R = np.zeros((h1, len(experts)))
    keep = mu / (c + mu)
    for start, rows in embedder.blocks():
        stop = start + rows.shape[0]
        X = np.empty((rows.shape[0], h1))
        X[:, :-1] = rows
        X[:, -1] = 1.0
        M += X.T @ (X * (c[start:stop] * keep[start:stop])[:, None])
        R += X.T @ (C[start:stop] * keep[start:stop, None])
    W = solve((M + M.T) / 2, R, lam=lam, regularize_bias=regularize_bias, normalize=False)
    U = np.empty_like(C)
    for start, rows in embedder.blocks():
        stop = start + rows.shape[0]
        dense = rows @ W[:-1] + W[-1]
        U[start:stop] = (C[start:stop] - c[start:stop, None] * dense) / \
            (c[start:stop] + mu)[:, None]
    return W, U
