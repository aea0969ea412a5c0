"""Selectors against a slow, direct reference implementation of the formulas."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPORA, jsonl_texts

from ir3de import DomainStats, Embedder, EmptyInputError, IR3DEError, Router
from ir3de.selector import Selection, VocabScores, select, vocab_scores
from ir3de.statistics import pair_keys

K_VALUES = (1, 2, 3, 5, 10, 50)


class Reference:
    """p = softmax(x̃W) per token in float64, straight from the embedding rows."""

    def __init__(self, emb: Embedder, W: np.ndarray) -> None:
        self.emb, self.W = emb, W
        self.D = W.shape[1]
        self._cache: dict[int, tuple[list[float], float]] = {}

    def token(self, t: int) -> tuple[list[float], float]:
        """(probabilities, entropy) of token id ``t``; they depend on the id only."""
        t = int(t)
        if t not in self._cache:
            x = [*self.emb.rows(np.array([t]))[0].tolist(), 1.0]
            logits = [math.fsum(xi * wi for xi, wi in zip(x, self.W[:, j], strict=True))
                      for j in range(self.D)]
            m = max(logits)
            e = [math.exp(v - m) for v in logits]
            z = math.fsum(e)
            p = [v / z for v in e]
            entropy = -math.fsum(pi * math.log(pi) for pi in p if pi > 0)
            self._cache[t] = (p, entropy)
        return self._cache[t]

    def vote(self, t: int) -> int:
        p, _ = self.token(t)
        return max(range(self.D), key=lambda d: (p[d], -d))  # ties: first listed

    def select(self, ids: np.ndarray, selector: str, k: int
               ) -> tuple[int, float, list[float], list[int]]:
        """(choice, confidence, scores, voter positions) for one prompt."""
        n, D = len(ids), self.D
        probs = [self.token(t)[0] for t in ids]
        if selector == "avg":
            mean = [math.fsum(p[d] for p in probs) / n for d in range(D)]
            choice = max(range(D), key=lambda d: (mean[d], -d))
            return choice, mean[choice], mean, list(range(n))
        if selector == "geo":  # each distinct token once, at its first position
            first = sorted({int(t): i for i, t in reversed(list(enumerate(ids)))}.values())
            logmean = [math.fsum(math.log(probs[i][d]) for i in first) / len(first)
                       for d in range(D)]
            m = max(logmean)
            z = math.fsum(math.exp(v - m) for v in logmean)
            geo = [math.exp(v - m) / z for v in logmean]
            choice = max(range(D), key=lambda d: (geo[d], -d))
            return choice, geo[choice], geo, first
        order = sorted(range(n), key=lambda i: (self.token(ids[i])[1], i))
        voters = order[:k] if selector == "topk" else order
        votes = Counter(self.vote(ids[i]) for i in voters)
        best = max(votes.values())
        tied = [d for d in range(D) if votes[d] == best]
        choice = max(tied, key=lambda d: (math.fsum(probs[i][d] for i in voters), -d))
        scores = [votes[d] / len(voters) for d in range(D)]
        return choice, best / len(voters), scores, voters


def assert_matches(sel: Selection, ref: Reference, prompts: list[np.ndarray], selector: str,
                   k: int) -> None:
    assert sel.choice.shape == (len(prompts),) and sel.scores.shape == (len(prompts), ref.D)
    for i, ids in enumerate(prompts):
        choice, conf, scores, voters = ref.select(ids, selector, k)
        where = f"prompt #{i} {ids.tolist()[:12]} ({selector}, k={k})"
        assert sel.choice[i] == choice, where
        assert sel.confidence[i] == pytest.approx(conf, rel=1e-12, abs=1e-15), where
        np.testing.assert_allclose(sel.scores[i], scores, rtol=1e-12, atol=1e-15, err_msg=where)
        assert sel.voters[i].tolist() == voters, where


@pytest.fixture(scope="module")
def router(emb: Embedder, toy_stats: dict[str, DomainStats]) -> Router:
    """A private router (tests below change its selector and k); embedding features only,
    which the reference implements (identity scores go through the same tables)."""
    return Router(emb, model="ridge", identity=None).fit_stats(toy_stats)


@pytest.fixture(scope="module")
def ref(router: Router) -> Reference:
    return Reference(router.embedder, router.W)


def tokens_by_vote(router: Router, rng: np.random.Generator, per_domain: int = 4
                   ) -> list[np.ndarray]:
    """A few non-special token ids voting for each domain."""
    table = router._state.table
    allowed = np.ones(router.embedder.vocab_size, dtype=bool)
    allowed[router.embedder.special_ids] = False
    out = []
    for d in range(len(router.experts)):
        candidates = np.flatnonzero((table.vote == d) & allowed)
        assert candidates.size >= per_domain, f"no token votes for {router.experts[d]}"
        out.append(rng.choice(candidates, size=per_domain, replace=False))
    return out


@pytest.fixture(scope="module")
def random_prompts(router: Router) -> list[np.ndarray]:
    """Random prompts of token ids: all lengths, repeats (entropy ties), vote ties."""
    rng = np.random.default_rng(20240611)
    emb = router.embedder
    pool = np.setdiff1d(np.arange(emb.vocab_size), emb.special_ids)
    prompts = []
    for _ in range(120):  # random lengths, many shorter than the larger k
        prompts.append(rng.choice(pool, size=int(rng.integers(1, 80))))
    for _ in range(60):  # few distinct tokens repeated: equal entropies, ordered by position
        few = rng.choice(pool, size=int(rng.integers(1, 4)))
        prompts.append(rng.choice(few, size=int(rng.integers(2, 30))))
    by_vote = tokens_by_vote(router, rng)
    D = len(by_vote)
    for a in range(D):  # one token for each of two domains: 1-1 vote ties
        for b in range(D):
            if a != b:
                prompts.append(np.array([by_vote[a][0], by_vote[b][1]]))
                prompts.append(np.array([by_vote[a][2], by_vote[a][2], by_vote[b][3],
                                         by_vote[b][3]]))
    prompts.append(np.array([v[0] for v in by_vote]))  # one vote each: D-way tie
    prompts.append(np.array([v[i] for i in range(2) for v in by_vote]))  # 2-2-2-2
    prompts.append(np.repeat(pool[:1], 5))  # a single repeated token
    return [p.astype(np.int32) for p in prompts]


def test_vocab_scores_match_reference(router: Router, ref: Reference) -> None:
    table = vocab_scores(router.embedder, router.W)
    np.testing.assert_array_equal(table.probs, router._state.table.probs)  # what routes
    V, D = router.embedder.vocab_size, len(router.experts)
    assert table.probs.shape == (V, D) and table.entropy.shape == (V,)
    np.testing.assert_allclose(table.probs.sum(axis=1), 1.0, rtol=1e-13)
    assert np.all(table.entropy >= 0) and np.all(table.entropy <= math.log(D) + 1e-12)
    np.testing.assert_array_equal(table.vote, table.probs.argmax(axis=1))
    for t in np.random.default_rng(0).choice(V, size=300, replace=False):
        p, h = ref.token(t)
        np.testing.assert_allclose(table.probs[t], p, rtol=1e-11, atol=1e-15)
        assert table.entropy[t] == pytest.approx(h, rel=1e-10, abs=1e-14)
        assert table.vote[t] == ref.vote(t)


@pytest.mark.parametrize("k", K_VALUES)
def test_topk_matches_reference(router: Router, ref: Reference,
                                random_prompts: list[np.ndarray], k: int) -> None:
    table = router._state.table
    assert_matches(select(random_prompts, table, selector="topk", k=k), ref, random_prompts,
                   "topk", k)


@pytest.mark.parametrize("selector", ["all", "avg", "geo"])
def test_all_and_avg_match_reference(router: Router, ref: Reference,
                                     random_prompts: list[np.ndarray], selector: str) -> None:
    table = router._state.table
    for k in (1, 10):  # k is ignored by these selectors
        assert_matches(select(random_prompts, table, selector=selector, k=k), ref,
                       random_prompts, selector, k=10**9)


@pytest.mark.parametrize("selector", ["topk", "all", "avg", "geo"])
def test_single_prompt_path_equals_batch(router: Router, random_prompts: list[np.ndarray],
                                         selector: str) -> None:
    table = router._state.table
    for k in (1, 3, 10) if selector == "topk" else (10,):
        batch = select(random_prompts, table, selector=selector, k=k)
        for i, ids in enumerate(random_prompts):
            one = select([ids], table, selector=selector, k=k)
            assert one.choice[0] == batch.choice[i]
            assert one.voters[0].tolist() == batch.voters[i].tolist()
            # bit for bit: a prompt routed alone prints the digits it gets in a batch
            np.testing.assert_array_equal(one.scores[0], batch.scores[i])
            assert one.confidence[0] == batch.confidence[i]


@pytest.mark.parametrize("dense", [True, False])
def test_geo_with_pairs_matches_reference(router: Router, random_prompts: list[np.ndarray],
                                         monkeypatch, dense: bool) -> None:
    """geo with a pair table: each distinct token's and each distinct (previous id, id)
    pair's log-probabilities (unseen pairs: the last row), summed in float64, over the
    number of distinct tokens; batched (also sorted in several chunks) and one by one; with
    the table read dense (small tables) and sparse (large ones)."""
    import ir3de.selector as selector_module
    from ir3de.selector import PairScores

    if not dense:
        monkeypatch.setattr(selector_module, "_DENSE_ENTRIES", -1)

    base = router._state.table
    V, D = base.logp.shape
    rng = np.random.default_rng(7)
    seen = np.unique(np.concatenate([pair_keys(x, V) for x in random_prompts]))
    keys = np.sort(rng.choice(seen, size=seen.size // 2, replace=False))  # half are unseen
    pairs = PairScores.from_logits(keys, rng.normal(size=(keys.size + 1, D)))
    table = dataclasses.replace(base, pairs=pairs)
    row = {int(k): i for i, k in enumerate(keys)}

    def reference(ids: np.ndarray) -> list[float]:
        distinct = list(dict.fromkeys(ids.tolist()))
        grams = set(pair_keys(ids, V).tolist())
        total = [math.fsum([*(base.logp[t, d] for t in distinct),
                            *(pairs.logp(np.array([row.get(g, keys.size)]))[0, d]
                              for g in grams)])
                 / len(distinct) for d in range(D)]
        m = max(total)
        z = math.fsum(math.exp(v - m) for v in total)
        return [math.exp(v - m) / z for v in total]

    batch = select(random_prompts, table, selector="geo")
    monkeypatch.setattr(selector_module, "_TAG_LIMIT", 7 * (V + 1) ** 2)  # 6 prompts a sort
    chunked = select(random_prompts, table, selector="geo")
    np.testing.assert_array_equal(chunked.scores, batch.scores)
    changed = 0
    for i, ids in enumerate(random_prompts):
        want = reference(ids)
        np.testing.assert_allclose(batch.scores[i], want, rtol=1e-9, atol=1e-15)
        one = select([ids], table, selector="geo")
        np.testing.assert_array_equal(one.scores[0], batch.scores[i])
        assert batch.choice[i] == one.choice[0] == int(np.argmax(want))
        changed += int(np.argmax(want) != select([ids], base, selector="geo").choice[0])
        grams = set(pair_keys(ids, V).tolist())
        coverage = sum(g in row for g in grams) / len(grams)
        assert batch.coverage[i] == chunked.coverage[i] == one.coverage[0] == coverage
    assert changed > 0  # the pair table really took part in decisions
    assert ((batch.coverage > 0) & (batch.coverage < 1)).any()  # seen and unseen pairs
    assert select(random_prompts, base, selector="geo").coverage is None  # no pair table


def test_vote_ties_are_really_exercised(router: Router, ref: Reference,
                                        random_prompts: list[np.ndarray]) -> None:
    """The constructed prompts do tie on votes and on entropy (so the rules are tested)."""
    vote_ties = entropy_ties = 0
    for ids in random_prompts:
        votes = Counter(ref.vote(t) for t in ids)
        top = sorted(votes.values(), reverse=True)
        vote_ties += len(top) > 1 and top[0] == top[1]
        entropy_ties += len(set(ids.tolist())) < len(ids)
    assert vote_ties >= 20 and entropy_ties >= 50
    # A 1-1 tie goes to the domain with the larger summed probability, whichever comes first.
    by_vote = tokens_by_vote(router, np.random.default_rng(5), per_domain=1)
    table = router._state.table
    a, b = int(by_vote[0][0]), int(by_vote[1][0])
    psum = table.probs[a] + table.probs[b]
    expected = 0 if psum[0] > psum[1] else 1
    for ids in ([a, b], [b, a]):
        sel = select([np.array(ids)], table, selector="all")
        assert sel.choice[0] == expected and sel.confidence[0] == 0.5


# ------------------------------------------------------------ the rules on a made-up table


def made_up_table() -> VocabScores:
    probs = np.array([
        [0.5, 0.5, 0.0],   # 0: tie between experts 0 and 1 -> votes 0
        [0.6, 0.4, 0.0],   # 1: votes 0
        [0.4, 0.6, 0.0],   # 2: votes 1; same entropy as token 1
        [0.3, 0.7, 0.0],   # 3: votes 1
        [0.0, 0.0, 1.0],   # 4: votes 2, entropy 0
        [0.0, 0.5, 0.5],   # 5: tie between 1 and 2 -> votes 1
    ])
    entropy = np.array([0.69, 0.67, 0.67, 0.61, 0.0, 0.69])
    return VocabScores.build(probs, entropy)


def test_rule_1_equal_probabilities_vote_first_expert() -> None:
    table = made_up_table()
    assert table.vote[0] == 0 and table.vote[5] == 1
    sel = select([np.array([0]), np.array([5])], table, selector="topk", k=1)
    assert sel.choice.tolist() == [0, 1]


def test_rule_1_with_identical_columns(emb: Embedder, router: Router) -> None:
    """Two experts with identical weights: the first listed gets every tied vote."""
    W = router.W
    table = vocab_scores(emb, np.column_stack([W[:, 0], W[:, 0], W[:, 1]]))
    np.testing.assert_array_equal(table.probs[:, 0], table.probs[:, 1])
    assert not np.any(table.vote == 1) and np.any(table.vote == 0)
    ids = [emb.encode(t) for group in CORPORA.values() for t in group]
    for selector in ("topk", "all", "avg", "geo"):
        assert not np.any(select(ids, table, selector=selector, k=5).choice == 1)


def test_rule_2_equal_entropy_in_prompt_order() -> None:
    table = made_up_table()
    sel = select([np.array([2, 1]), np.array([1, 2]), np.array([4, 2, 1])], table,
                 selector="topk", k=1)
    assert sel.choice.tolist() == [1, 0, 2]
    assert [v.tolist() for v in sel.voters] == [[0], [0], [0]]
    sel = select([np.array([2, 1, 4])], table, selector="topk", k=2)
    assert sel.voters[0].tolist() == [2, 0]  # entropy 0 first, then the earlier of the tie


def test_rule_3_vote_ties_by_summed_probability_then_order() -> None:
    table = made_up_table()
    # 1-1 votes, equal summed probabilities (0.6 + 0.4 each): the first expert wins.
    assert select([np.array([2, 1])], table, selector="all").choice[0] == 0
    assert select([np.array([1, 2])], table, selector="all").choice[0] == 0
    # 1-1 votes, expert 1 has more probability (0.4 + 0.7 > 0.6 + 0.3).
    sel = select([np.array([1, 3]), np.array([3, 1])], table, selector="all")
    assert sel.choice.tolist() == [1, 1]
    np.testing.assert_allclose(sel.scores, [[0.5, 0.5, 0.0]] * 2)
    np.testing.assert_allclose(sel.confidence, [0.5, 0.5])
    # A majority beats probability mass: 2 votes for 0 against 1 for 2 (with p = 1).
    assert select([np.array([1, 0, 4])], table, selector="all").choice[0] == 0


def test_rule_4_avg_ties_go_to_first_expert() -> None:
    table = made_up_table()
    sel = select([np.array([0]), np.array([1, 2]), np.array([5]), np.array([4, 5, 5])], table,
                 selector="avg")
    assert sel.choice.tolist() == [0, 0, 1, 2]
    np.testing.assert_allclose(sel.scores[1], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(sel.confidence, [0.5, 0.5, 0.5, 2 / 3])


def test_select_errors_and_empty_batch() -> None:
    table = made_up_table()
    with pytest.raises(IR3DEError, match="unknown selector"):
        select([np.array([1])], table, selector="best")
    for k in (0, -1, 2.5, "3", 2**63):
        with pytest.raises(IR3DEError, match="k must be a positive integer"):
            select([np.array([1])], table, selector="topk", k=k)
    for batch in ([np.array([], dtype=np.int32)], [np.array([1]), np.array([], np.int32)]):
        with pytest.raises(EmptyInputError, match=f"prompt #{len(batch) - 1}"):
            select(batch, table, selector="avg")
    empty = select([], table)
    assert empty.choice.shape == (0,) and empty.scores.shape == (0, 3) and empty.voters == []


# ------------------------------------------------------------ through the Router


def route_prompts(data_dir: Path | None) -> list[str]:
    texts = [t for group in CORPORA.values() for t in group]
    texts += ["Explain why the sky is blue.", "x", "2 + 2 = ?", "</s> ok </s>",
              " ".join(["the court and the code"] * 20)]
    if data_dir is not None:
        for name in ("gsm8k/test", "m_arc/test", "humaneval/test", "ifeval/test"):
            texts += jsonl_texts(data_dir / "reasoning" / f"{name}.jsonl", 25)
    return texts


@pytest.mark.parametrize(("selector", "k"), [("topk", 1), ("topk", 3), ("topk", 10),
                                             ("topk", 50), ("all", 10), ("avg", 10),
                                             ("geo", 10)])
def test_route_batch_matches_reference(router: Router, ref: Reference, selector: str,
                                       k: int, request: pytest.FixtureRequest) -> None:
    try:
        data_dir = request.getfixturevalue("data_dir")
    except pytest.skip.Exception:
        data_dir = None
    texts = route_prompts(data_dir)
    router.set_params(selector=selector, k=k)
    W_before = router.W
    decisions = router.route_batch(texts, explain=True)
    assert router.W is W_before  # selector/k changes do not re-solve
    assert router.predict(texts).tolist() == [d.expert for d in decisions]
    experts = router.experts
    for text, dec in zip(texts, decisions, strict=True):
        ids = router.embedder.encode(text, router.config.max_tokens)
        choice, conf, scores, voters = ref.select(ids, selector, k)
        assert dec.expert == experts[choice], text[:60]
        assert dec.confidence == pytest.approx(conf, rel=1e-12)
        np.testing.assert_allclose([dec.scores[e] for e in experts], scores, rtol=1e-12,
                                   atol=1e-15)
        assert [tok.position for tok in dec.tokens] == voters
        for tok in dec.tokens:
            assert tok.expert == experts[ref.vote(ids[tok.position])]
            assert tok.entropy == pytest.approx(ref.token(ids[tok.position])[1], rel=1e-10,
                                                abs=1e-14)
        # One prompt at a time (the single-prompt path) gives the same decision.
        single = router.route(text, explain=True)
        assert single.expert == dec.expert
        assert [t.position for t in single.tokens] == voters
