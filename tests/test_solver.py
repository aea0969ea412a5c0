"""The closed-form ridge solve and the design it is assembled from."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from ir3de import DomainStats, IR3DEError, StatsFormatError
from ir3de.solver import (
    DEFAULT_ALPHA,
    DEFAULT_LAMBDA,
    DEFAULT_PAIRS,
    DEFAULT_SPELLING,
    DEFAULT_SPELLING_PRIOR,
    FEW_ALPHA,
    FEW_MIN_PROMPTS,
    FEW_PAIRS,
    FEW_PROMPTS,
    FEW_SPELLING_FLOOR,
    FEW_SPELLING_PRIOR,
    Spelling,
    design,
    domain_weights,
    nb_smoothing,
    nb_spelling,
    solve,
    solve_spelling,
    solve_spelling_prior,
)
from ir3de.statistics import split_pairs


def reference_solve(A: np.ndarray, B: np.ndarray, lam: float, regularize_bias: bool = True,
                    normalize: bool = True) -> np.ndarray:
    reg = A.copy()
    n = A.shape[0] if regularize_bias else A.shape[0] - 1
    for i in range(n):
        reg[i, i] += lam
    W = np.linalg.inv(reg) @ B
    if normalize:
        W = W / np.sqrt((W ** 2).sum(axis=0))
    return W


def test_solve_matches_the_formula(toy_stats: dict[str, DomainStats], emb) -> None:
    names = list(toy_stats)
    A = sum(toy_stats[n].gram(emb) for n in names)
    B = np.stack([toy_stats[n].b for n in names], axis=1)
    for lam in (1e-3, DEFAULT_LAMBDA, 1.0):
        for regularize_bias in (True, False):
            for normalize in (True, False):
                W = solve(A, B, lam=lam, regularize_bias=regularize_bias, normalize=normalize)
                ref = reference_solve(A, B, lam, regularize_bias, normalize)
                assert W.shape == (A.shape[0], len(names))
                np.testing.assert_allclose(W, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
                # The defining equation holds to working precision.
                if not normalize:
                    penalty = np.full(A.shape[0], lam)
                    if not regularize_bias:
                        penalty[-1] = 0
                    resid = (A + np.diag(penalty)) @ W - B
                    assert np.abs(resid).max() <= 1e-8 * np.abs(B).max()
    W = solve(A, B)
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, rtol=1e-14)


def test_docstring_example() -> None:
    W = solve(np.eye(3) * 10, np.ones((3, 2)), lam=0.0)
    np.testing.assert_allclose(W, np.full((3, 2), 1 / np.sqrt(3)), rtol=1e-15)


def test_solve_errors() -> None:
    A, B = np.eye(3), np.ones((3, 2))
    for lam in (-1e-3, np.nan, np.inf):
        with pytest.raises(IR3DEError, match="λ"):
            solve(A, B, lam=lam)
    with pytest.raises(IR3DEError, match="singular"):
        solve(np.zeros((3, 3)), B, lam=0.0)
    # Rank-deficient but without an exact zero pivot: LAPACK "solved" it into one of
    # infinitely many W, picked by its pivoting.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 6))
    low_rank, B6 = X.T @ X, X.T @ np.eye(2)
    with pytest.raises(IR3DEError, match=r"singular or nearly so \(condition number "
                                         r"\S+, λ = 0\): use a larger λ"):
        solve(low_rank, B6, lam=0.0)
    with pytest.raises(IR3DEError, match="nearly so"):
        solve(low_rank, B6, lam=1e-300)  # a λ too small to matter
    assert np.all(np.isfinite(solve(low_rank, B6, lam=1e-2)))  # λ as the reference code
    assert np.all(np.isfinite(solve(low_rank + np.eye(6), B6, lam=0.0,
                                    regularize_bias=False)))  # well-conditioned: no penalty needed
    with pytest.raises(IR3DEError, match="zero"):
        solve(A, np.array([[1.0, 0.0]] * 3), lam=0.1)
    # A huge λ: the tiny weights are normalised exactly (their squares would underflow);
    # only weights that underflow themselves are refused, naming λ, not "no data".
    np.testing.assert_allclose(solve(A, B, lam=1e300), 1 / np.sqrt(3), rtol=1e-15)
    with pytest.raises(IR3DEError, match=r"λ=1e\+300 is too large: the weights underflow"):
        solve(A, B * 1e-300, lam=1e300)
    # Without normalisation a zero column is allowed (and stays zero).
    assert np.all(solve(A, np.array([[1.0, 0.0]] * 3), normalize=False)[:, 1] == 0)


def _with_gram(stats: dict[str, DomainStats], emb) -> dict[str, DomainStats]:
    """The statistics as statistics without token counts hold them: A stored instead."""
    return {n: dataclasses.replace(s, A=s.gram(emb), counts=None, doc_counts=None, pairs=None)
            for n, s in stats.items()}


def test_design_is_order_independent(toy_stats: dict[str, DomainStats], emb) -> None:
    names = list(toy_stats)
    stored = _with_gram(toy_stats, emb)
    kinds = ({"stats": toy_stats, "embedder": emb}, {"stats": stored})
    for kw in kinds:
        for balance in (False, True):  # balanced weights make the sums inexact: order matters
            A1, B1 = design(kw["stats"], names, balance=balance, embedder=kw.get("embedder"))
            for perm in itertools.permutations(range(len(names))):
                A2, B2 = design(kw["stats"], [names[i] for i in perm], balance=balance,
                                embedder=kw.get("embedder"))
                np.testing.assert_array_equal(A2, A1)  # summed in sorted-name order: bitwise
                np.testing.assert_array_equal(B2, B1[:, list(perm)])  # experts' order
    # A formed from the counts (and kept with the statistics) or stored: the same system.
    A1, B1 = design(toy_stats, names, embedder=emb)
    A0, B0 = design(stored, names)
    np.testing.assert_array_equal(A1, A0)
    np.testing.assert_array_equal(B1, B0)
    for j, n in enumerate(names):  # b formed from the counts is the b they were made with
        np.testing.assert_array_equal(B0[:, j], toy_stats[n].b)
        np.testing.assert_array_equal(B1[:, j], toy_stats[n].b)
    np.testing.assert_allclose(A1, sum(s.gram(emb) for s in toy_stats.values()), rtol=1e-14,
                               atol=1e-14 * np.abs(A1).max())
    # A subset of experts uses only their statistics.
    A3, B3 = design(toy_stats, names[:2], embedder=emb)
    np.testing.assert_allclose(A3, toy_stats[names[0]].gram(emb) + toy_stats[names[1]].gram(emb),
                               rtol=1e-14, atol=1e-14 * np.abs(A3).max())
    assert B3.shape[1] == 2
    # A mix: experts with a stored A and without counts enter through it.
    mixed = {**toy_stats, names[0]: stored[names[0]]}
    A4, _ = design(mixed, names, embedder=emb)
    np.testing.assert_allclose(A4, A1, rtol=1e-13, atol=1e-13 * np.abs(A1).max())
    with pytest.raises(IR3DEError, match=r"<memory> \(\w+\) keeps token counts: forming A and "
                                         r"b from them needs the embedder they were made with"):
        design(toy_stats, names)
    with pytest.raises(IR3DEError, match="at least one expert"):
        design(toy_stats, [], embedder=emb)


def test_balanced_design(toy_stats: dict[str, DomainStats], emb) -> None:
    names = list(toy_stats)
    n = {k: s.n_tokens for k, s in toy_stats.items()}
    assert len(set(n.values())) > 1  # the toy domains really differ in size
    w = domain_weights(toy_stats, balance=True)
    mean = np.mean(list(n.values()))
    for k in names:
        assert w[k] == pytest.approx(mean / n[k], rel=1e-15)
    # Every domain carries the same total weight; the overall weight is unchanged.
    assert {round(w[k] * n[k], 9) for k in names} == {round(mean, 9)}
    assert sum(w[k] * n[k] for k in names) == pytest.approx(sum(n.values()), rel=1e-12)
    assert domain_weights(toy_stats, balance=False) == dict.fromkeys(names, 1.0)
    A, B = design(toy_stats, names, balance=True, embedder=emb)
    np.testing.assert_allclose(A, sum(w[k] * toy_stats[k].gram(emb) for k in names),
                               rtol=1e-13, atol=1e-13 * np.abs(A).max())
    np.testing.assert_allclose(B, np.stack([w[k] * toy_stats[k].b for k in names], axis=1),
                               rtol=1e-13, atol=1e-13 * np.abs(B).max())
    assert A[-1, -1] == pytest.approx(sum(n.values()), rel=1e-12)


@pytest.mark.parametrize("balance", [False, True])
def test_identity_solve_equals_the_full_joint_ridge(emb, toy_stats, balance: bool) -> None:
    """The Schur-complement solve equals a direct ridge on [x̃_t, one-hot(t)] features,
    restricted to the token ids that occur (unseen ids get U = 0 either way)."""
    from ir3de.solver import domain_weights, solve_identity

    mu, lam = 3.0, 1e-2
    experts = list(toy_stats)
    W, U = solve_identity(toy_stats, experts, emb, mu=mu, lam=lam, balance=balance)
    weights = domain_weights(toy_stats, balance)
    seen = np.flatnonzero(sum(s.counts for s in toy_stats.values()))
    X = np.hstack([emb.rows(seen), np.ones((seen.size, 1))])
    Z = np.hstack([X, np.eye(seen.size)])  # one row per distinct seen token
    c = np.stack([weights[n] * toy_stats[n].counts[seen] for n in experts], axis=1)
    gram = Z.T @ (Z * c.sum(axis=1)[:, None])
    rhs = Z.T @ c
    penalty = np.r_[np.full(X.shape[1], lam), np.full(seen.size, mu)]
    theta = np.linalg.solve(gram + np.diag(penalty), rhs)
    np.testing.assert_allclose(W, theta[:X.shape[1]], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(U[seen], theta[X.shape[1]:], rtol=1e-7, atol=1e-9)
    unseen = np.setdiff1d(np.arange(emb.vocab_size), seen)
    assert np.all(U[unseen] == 0)


def test_identity_needs_counts_and_a_positive_mu(emb, toy_stats) -> None:
    from dataclasses import replace

    from ir3de.solver import solve_identity

    with pytest.raises(IR3DEError, match="μ must be a finite number > 0"):
        solve_identity(toy_stats, list(toy_stats), emb, mu=0.0)
    old = {n: replace(s, counts=None, doc_counts=None, pairs=None, A=s.gram(emb))
           for n, s in toy_stats.items()}
    with pytest.raises(IR3DEError, match="no token counts in "):
        solve_identity(old, list(old), emb, mu=1.0)


@pytest.mark.parametrize("balance", [False, True])
def test_identity_loo_equals_brute_force_leave_one_out(emb, toy_stats, balance: bool) -> None:
    """The closed-form PRESS error equals refitting without each training token in turn
    (domain weights held fixed, as PRESS assumes), on the direct joint ridge."""
    from ir3de.solver import domain_weights, identity_loo

    mu, lam = 2.0, 1e-2
    experts = list(toy_stats)
    weights = domain_weights(toy_stats, balance)
    w = np.array([weights[n] for n in experts])
    seen = np.flatnonzero(sum(s.counts for s in toy_stats.values()))
    raw = np.stack([toy_stats[n].counts[seen] for n in experts], axis=1).astype(float)
    X = np.hstack([emb.rows(seen), np.ones((seen.size, 1))])
    Z = np.hstack([X, np.eye(seen.size)])
    penalty = np.diag(np.r_[np.full(X.shape[1], lam), np.full(seen.size, mu)])

    def scores(c: np.ndarray) -> np.ndarray:
        theta = np.linalg.solve(Z.T @ (Z * c.sum(axis=1)[:, None]) + penalty, Z.T @ c)
        return Z @ theta

    total = 0.0
    for v, d in zip(*np.nonzero(raw), strict=True):
        c = raw * w
        c[v, d] -= w[d]  # one token of id seen[v] in domain d left out
        s = scores(c)[v]
        total += raw[v, d] * w[d] * (np.sum(s ** 2) - 2 * s[d] + 1.0)
    expected = total / (raw * w).sum()
    got = identity_loo(toy_stats, experts, emb, mu=mu, lam=lam, balance=balance)
    assert got == pytest.approx(expected, rel=1e-6)


def test_choose_identity_mu_picks_the_lowest_loo_error(emb, toy_stats) -> None:
    from ir3de.solver import (
        choose_identity_mu,
        identity_loo,
        solve_identity,
        solve_identity_auto,
    )

    experts = list(toy_stats)
    mu, errors = choose_identity_mu(toy_stats, experts, emb, grid=(0.5, 5.0, 500.0))
    assert set(errors) == {0.5, 5.0, 500.0}
    assert errors[mu] == min(errors.values())
    assert errors[5.0] == identity_loo(toy_stats, experts, emb, mu=5.0)
    with pytest.raises(IR3DEError, match="grid is empty"):
        choose_identity_mu(toy_stats, experts, emb, grid=())
    # The router's path keeps the search's solve at the chosen μ: the same arrays as
    # solving again at that μ.
    W, U, chosen = solve_identity_auto(toy_stats, experts, emb, grid=(0.5, 5.0, 500.0))
    assert chosen == mu
    W2, U2 = solve_identity(toy_stats, experts, emb, mu=mu)
    np.testing.assert_array_equal(W, W2)
    np.testing.assert_array_equal(U, U2)
    with pytest.raises(IR3DEError, match="μ must be a finite number > 0"):
        choose_identity_mu(toy_stats, experts, emb, grid=(1.0, -2.0))


def test_nb_smoothing_switches_on_the_mean_or_the_smallest_prompt_count() -> None:
    """"auto" takes the small-fit-set values up to a mean of FEW_PROMPTS prompts per expert,
    or when the smallest expert holds FEW_MIN_PROMPTS or fewer (both inclusive, exact in
    integers), and the full-size ones otherwise; numbers and None stay."""
    few, full = (FEW_ALPHA, FEW_PAIRS), (DEFAULT_ALPHA, DEFAULT_PAIRS)
    small = FEW_MIN_PROMPTS + 1  # above the minimum's line
    assert nb_smoothing("auto", "auto", [FEW_PROMPTS] * 3) == few
    assert nb_smoothing("auto", "auto", [FEW_PROMPTS] * 2 + [FEW_PROMPTS + 1]) == full
    assert nb_smoothing("auto", "auto", [small, 2 * FEW_PROMPTS - small]) == few  # the mean
    assert nb_smoothing("auto", "auto", [small, 2 * FEW_PROMPTS - small + 1]) == full
    assert nb_smoothing("auto", "auto", [FEW_MIN_PROMPTS, 10_000, 10_000]) == few  # the min
    assert nb_smoothing("auto", "auto", [small, 10_000, 10_000]) == full
    assert nb_smoothing(0.5, "auto", [10]) == (0.5, FEW_PAIRS)
    assert nb_smoothing("auto", 3e3, [10_000]) == (DEFAULT_ALPHA, 3e3)
    assert nb_smoothing("auto", None, [10]) == (FEW_ALPHA, None)


def test_nb_spelling_takes_the_prior_where_every_expert_is_small() -> None:
    """The default's spelling "auto": the added term at full size; inside nb_smoothing's
    small-fit-set switch the prior of FEW_SPELLING_PRIOR where the mean is FEW_SPELLING_FLOOR
    to FEW_PROMPTS (both inclusive, exact in integers), else off; the preset's prior "auto"
    switches with nb_smoothing alone; numbers and None stay, both forms at once are
    refused."""
    prior, off = (None, FEW_SPELLING_PRIOR), (None, None)
    floor, top = FEW_SPELLING_FLOOR, FEW_PROMPTS
    assert nb_spelling("auto", None, [top] * 3) == prior
    assert nb_spelling("auto", None, [top] * 2 + [top + 1]) == (DEFAULT_SPELLING, None)
    assert nb_spelling("auto", None, [floor] * 3) == prior
    assert nb_spelling("auto", None, [floor] * 2 + [floor - 1]) == off  # the mean under 10
    assert nb_spelling("auto", None, [1, 2 * floor - 1]) == prior  # the mean, not the min
    # the smallest fires alone: off (a mean over FEW_PROMPTS)
    assert nb_spelling("auto", None, [FEW_MIN_PROMPTS, 10_000]) == off
    assert nb_spelling(None, "auto", [FEW_MIN_PROMPTS, 10_000]) == prior
    assert nb_spelling(None, "auto", [1, 1]) == prior  # the preset's: no floor
    assert nb_spelling(None, "auto", [10_000]) == (None, DEFAULT_SPELLING_PRIOR)
    assert nb_spelling(0.5, None, [1]) == (0.5, None)
    assert nb_spelling(None, 7.0, [10_000]) == (None, 7.0)
    assert nb_spelling(None, None, [10]) == off
    with pytest.raises(IR3DEError, match="either an added term"):
        nb_spelling("auto", 100.0, [10])


def test_the_sparse_pair_table_is_the_dense_formula(emb, skip_stats, monkeypatch) -> None:
    """solve_pairs stores the per-row normalised Dirichlet table as base + offset + sparse
    corrections (closed-form log-sum-exp): the same numbers as forming the dense K x D table
    and normalising it, in O(pairs + nonzeros); the routers read either form alike."""
    import ir3de.selector as selector_module
    from ir3de import Router, RouterConfig
    from ir3de.solver import _PAIR_EPS, solve_pairs

    experts = list(skip_stats)
    for mass, skips in itertools.product((DEFAULT_PAIRS, FEW_PAIRS, 3.0), (False, True)):
        table = solve_pairs(skip_stats, experts, mass=mass, skips=skips)
        # each kind alone: the adjacent pairs, or the skip pairs keyed without their offset
        kind = {n: split_pairs(skip_stats[n].pairs, emb.vocab_size)[skips] for n in experts}
        keys = np.unique(np.concatenate([kind[n].keys for n in experts]))
        C = np.zeros((keys.size + 1, len(experts)))
        for j, n in enumerate(experts):
            C[np.searchsorted(keys, kind[n].keys), j] = kind[n].counts
        q = C.sum(axis=1) + _PAIR_EPS
        T = np.log(C + mass * q[:, None] / q.sum()) - np.log(C.sum(axis=0) + mass)
        T -= np.log(np.exp(T).sum(axis=1, keepdims=True))
        np.testing.assert_array_equal(table.keys, keys)
        np.testing.assert_allclose(table.logp(np.arange(keys.size + 1)), T, rtol=0,
                                   atol=1e-12)
        assert table.delta.size == np.count_nonzero(C)  # one stored entry per nonzero count
    with pytest.raises(IR3DEError, match=r"the pair Dirichlet mass 4\.94066e-324 is too "
                                         r"small: the pair table is not finite"):
        solve_pairs(skip_stats, experts, mass=5e-324)  # m q underflows to 0
    # Many experts with pairs of their own: a few numbers per pair, not one per expert.
    from ir3de import compute_stats

    words = ["apple", "river", "stone", "cloud", "maple", "tiger", "violin", "copper",
             "garden", "harbor", "lantern", "meadow", "pepper", "quartz", "saddle", "timber",
             "velvet", "walnut", "anchor", "basket"]
    many = {f"d{i}": compute_stats(emb, [f"{words[i % 20]} {words[(3 * i + 1) % 20]} and "
                                         f"{words[(7 * i + 2) % 20]} {i}"], domain=f"d{i}")
            for i in range(40)}
    table = solve_pairs(many, list(many))
    stored = sum(a.nbytes for a in (table.base, table.indptr, table.cols, table.delta))
    assert stored < 8 * table.base.size * len(many) / 4
    # Routers read the table dense when it is small, sparse beyond _DENSE_ENTRIES: the
    # same decisions, scores equal to rounding.
    prompts = ["What is 12 times 7?", "def add(a, b): return a + b", "Quelle heure est-il ?"]
    config = RouterConfig.preset("default", skips=1e6)  # (auto: none for so few prompts)
    dense = Router(emb, config).fit_stats(skip_stats)
    monkeypatch.setattr(selector_module, "_DENSE_ENTRIES", -1)
    sparse = Router(emb, config).fit_stats(skip_stats)
    for kind in ("pairs", "skips"):
        assert getattr(sparse._state.table, kind)._dense is None
        assert getattr(dense._state.table, kind)._dense is not None
    a, b = dense.route_batch(prompts), sparse.route_batch(prompts)
    assert [d.expert for d in a] == [d.expert for d in b]
    np.testing.assert_allclose([d.confidence for d in a], [d.confidence for d in b],
                               rtol=1e-12)
    assert [sparse.route(p).confidence for p in prompts] == [d.confidence for d in b]


def test_solve_spelling_prior(toy_stats: dict[str, DomainStats], emb) -> None:
    """Each column a distribution over the vocabulary (the prior's mass spread over the
    tokens that have n-grams, α over all), solved from its own domain's statistics alone
    (so add/remove leaves the other columns bit-identical); a mass that swamps the counts
    gives the spelling distribution itself; bad masses, and a vocabulary with no spelt
    token, are refused by name."""
    experts = sorted(toy_stats)
    spelling = Spelling.of(emb.tokens(range(emb.vocab_size)))
    L = solve_spelling_prior(toy_stats, experts, spelling, alpha=0.03, mass=1e3)
    np.testing.assert_allclose(np.exp(L).sum(axis=0), 1.0, rtol=1e-9)
    alone = solve_spelling_prior(toy_stats, experts[1:2], spelling, alpha=0.03, mass=1e3)
    assert np.array_equal(L[:, 1], alone[:, 0])
    # As the mass grows, each column tends to exp(R) normalised over the spelt tokens.
    huge = np.exp(solve_spelling_prior(toy_stats, experts, spelling, alpha=1e-9, mass=1e12))
    R = solve_spelling(toy_stats, experts, spelling)
    spelt = np.bincount(spelling.rows, minlength=emb.vocab_size) > 0
    expected = np.where(spelt[:, None], np.exp(R), 0.0)
    np.testing.assert_allclose(huge, expected / expected.sum(axis=0), atol=1e-9)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(IR3DEError, match="the spelling prior's mass must be a finite "
                                             "number > 0"):
            solve_spelling_prior(toy_stats, experts, spelling, mass=bad)
    with pytest.raises(IR3DEError, match="the smoothing α must be a finite number > 0"):
        solve_spelling_prior(toy_stats, experts, spelling, alpha=0.0)
    unspelt = Spelling.of(["<s>"] * emb.vocab_size)
    with pytest.raises(IR3DEError, match="no token of the vocabulary has character n-grams"):
        solve_spelling_prior(toy_stats, experts, unspelt)


def test_solve_spelling_refuses_a_map_of_another_vocabulary(
        toy_stats: dict[str, DomainStats], emb) -> None:
    """A spelling map built from another vocabulary's strings is named, not broadcast."""
    experts = sorted(toy_stats)
    spelling = Spelling.of(emb.tokens(range(emb.vocab_size - 1)))
    with pytest.raises(StatsFormatError, match=rf"^document frequencies cover "
                                               rf"{emb.vocab_size} token ids, the vocabulary "
                                               rf"{emb.vocab_size - 1}$"):
        solve_spelling(toy_stats, experts, spelling)
    full = solve_spelling(toy_stats, experts, Spelling.of(emb.tokens(range(emb.vocab_size))))
    assert full.shape == (emb.vocab_size, len(experts)) and np.isfinite(full).all()
