"""Per-domain statistics: the histogram shortcut equals the paper's streaming sums, and
statistics add, merge and subtract like the sums they are."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPORA, jsonl_texts

import ir3de.statistics as statistics
from ir3de import (
    DomainStats,
    Embedder,
    EmptyInputError,
    ExpertError,
    FingerprintMismatchError,
    IR3DEError,
    Router,
    StatsFormatError,
    compute_stats,
    merge,
)
from ir3de.errors import is_blank
from ir3de.statistics import (
    PairCounts,
    load_stats_files,
    split_pairs,
    stats_from_counts,
    streaming_stats,
    sum_pairs,
    token_counts,
)
from ir3de.store import read_safetensors, write_safetensors


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_stats_close(got: DomainStats, want: DomainStats, emb: Embedder,
                       rtol: float = 1e-9) -> None:
    assert rel_err(got.gram(emb), want.gram(emb)) <= rtol
    assert rel_err(got.b, want.b) <= rtol
    assert (got.n_tokens, got.n_prompts) == (want.n_tokens, want.n_prompts)
    assert (got.domain, got.fingerprint, got.max_tokens) == \
        (want.domain, want.fingerprint, want.max_tokens)
    for key in ("counts", "doc_counts"):  # integers: exact
        if getattr(want, key) is not None:
            np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
    if want.pairs is not None:
        for g, w in zip(got.pairs, want.pairs, strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.fixture(scope="module")
def real_prompts(data_dir: Path) -> list[str]:
    """A mixed subsample of real prompts (several scripts, code, long texts)."""
    r = data_dir / "reasoning"
    texts = (jsonl_texts(r / "gsm8k" / "train.jsonl", 150)
             + jsonl_texts(r / "m_arc" / "train.jsonl", 150)
             + jsonl_texts(r / "mbpp" / "train.jsonl", 60)
             + jsonl_texts(r / "ifeval" / "test.jsonl", 60)
             + jsonl_texts(data_dir / "domains" / "code_python" / "all.jsonl", 8))
    return [*texts, "   ", "", "</s>"]  # blank and special-only prompts too


def test_histogram_equals_streaming_on_real_prompts(emb: Embedder,
                                                    real_prompts: list[str]) -> None:
    fast = compute_stats(emb, real_prompts, domain="mixed")
    slow = streaming_stats(emb, real_prompts, domain="mixed")
    assert fast.n_tokens > 20_000  # long code files hit the 1024-token cap
    assert fast.A is None and slow.A is not None and slow.counts is None
    assert_stats_close(fast, slow, emb)
    # A few prompts, a small cap: still equal (the cap applies per prompt in both).
    few = real_prompts[400:430]
    assert_stats_close(compute_stats(emb, few, domain="d", max_tokens=16),
                       streaming_stats(emb, few, domain="d", max_tokens=16), emb)


def test_pair_folding_does_not_change_the_result(emb: Embedder, real_prompts: list[str],
                                                 monkeypatch) -> None:
    """Large corpora fold their pair keys into the table batch by batch: the same table."""
    whole = token_counts(emb, real_prompts)
    monkeypatch.setattr(statistics, "_BATCH", 7)
    monkeypatch.setattr(statistics, "_PAIR_FOLD", 1)
    folded = token_counts(emb, real_prompts)
    for got, want in zip(folded.pairs, whole.pairs, strict=True):
        np.testing.assert_array_equal(got, want)
    assert whole.pairs.counts.sum() > whole.pairs.keys.size  # shared pairs were summed


def test_sum_pairs_matches_a_dictionary() -> None:
    """Repeated keys in any order sum exactly; a pair subtracted to zero disappears."""
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 50, 400).astype(np.int64)
    counts = rng.integers(-3, 4, 400).astype(np.int64)
    want: Counter[int] = Counter()
    for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
        want[k] += c
    got = sum_pairs(keys, counts)
    assert dict(zip(got.keys.tolist(), got.counts.tolist(), strict=True)) == {
        k: c for k, c in want.items() if c != 0}
    assert np.all(np.diff(got.keys) > 0) and any(c == 0 for c in want.values())
    empty = sum_pairs(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert empty.keys.size == 0 and empty.counts.size == 0


def test_histogram_blocks_do_not_change_the_result(emb: Embedder, real_prompts: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    whole = compute_stats(emb, real_prompts, domain="mixed")
    counts = token_counts(emb, real_prompts).counts
    assert np.count_nonzero(counts) > 1000
    monkeypatch.setattr(statistics, "_ROW_BLOCK", 257)  # many row blocks
    assert_stats_close(compute_stats(emb, real_prompts, domain="mixed"), whole, emb,
                       rtol=1e-12)


def test_stats_structure(toy_stats: dict[str, DomainStats], emb: Embedder) -> None:
    s = toy_stats["math"]
    h1 = emb.dim + 1
    assert s.A is None and s.counts is not None  # A is formed from the counts, not kept
    A = s.gram(emb)
    assert A.shape == (h1, h1) and s.b.shape == (h1,) and s.dim == emb.dim
    assert A.dtype == np.float64 and s.b.dtype == np.float64
    np.testing.assert_array_equal(A, A.T)
    assert A[-1, -1] == s.n_tokens == s.b[-1]
    np.testing.assert_allclose(A[-1, :-1], s.b[:-1], rtol=1e-12)
    assert s.n_prompts == len(CORPORA["math"])
    assert s.n_tokens == sum(emb.encode(t).size for t in CORPORA["math"])
    assert s.fingerprint == emb.fingerprint and s.embedder == emb.spec
    assert np.all(np.linalg.eigvalsh(A) > -1e-9 * np.abs(A).max())  # PSD


def test_stats_from_counts_is_the_formula(emb: Embedder) -> None:
    rng = np.random.default_rng(3)
    counts = np.zeros(emb.vocab_size, dtype=np.int64)
    ids = rng.choice(np.arange(3, emb.vocab_size), size=40, replace=False)
    counts[ids] = rng.integers(1, 50, size=40)
    s = stats_from_counts(emb, counts, domain="d", n_prompts=7)
    A = np.zeros((emb.dim + 1, emb.dim + 1))
    b = np.zeros(emb.dim + 1)
    for i in range(emb.vocab_size):  # Σ_t c_t x̃_t x̃_tᵀ over the whole vocabulary
        if counts[i]:
            x = np.append(emb.rows(np.array([i]))[0], 1.0)
            A += counts[i] * np.outer(x, x)
            b += counts[i] * x
    np.testing.assert_allclose(s.gram(emb), A, rtol=1e-12, atol=1e-12 * np.abs(A).max())
    np.testing.assert_allclose(s.b, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    assert (s.n_tokens, s.n_prompts) == (int(counts.sum()), 7)
    with pytest.raises(StatsFormatError, match="shape"):
        stats_from_counts(emb, counts[:-1], domain="d", n_prompts=1)
    bad = counts.copy()
    bad[ids[0]] = -1
    with pytest.raises(StatsFormatError, match="non-negative"):
        stats_from_counts(emb, bad, domain="d", n_prompts=1)


def test_a_cap_smaller_than_the_counts_allow_is_refused(toy_stats) -> None:
    """13,427 tokens of 200 prompts with max_tokens 1 loaded, and build routed with a cap
    of 1 token (it takes the statistics' cap)."""
    stats = toy_stats["math"]
    per_prompt = -(-stats.n_tokens // stats.n_prompts)  # (the fewest a cap can be)
    assert dataclasses.replace(stats, max_tokens=per_prompt).max_tokens == per_prompt
    with pytest.raises(StatsFormatError, match=rf"{stats.n_tokens} tokens cannot come from "
                                               rf"{stats.n_prompts} prompts of at most "
                                               rf"{per_prompt - 1} tokens each"):
        dataclasses.replace(stats, max_tokens=per_prompt - 1)


def test_a_corpus_without_a_countable_token_says_what_was_skipped(emb: Embedder) -> None:
    """Three records of special tokens were "0 prompt(s) read; blank ones are skipped"."""
    with pytest.raises(EmptyInputError, match=r"^domain 'd': the corpus holds no countable "
                                              r"token \(blank prompts, and prompts of only "
                                              r"special tokens and white space, are skipped\)$"):
        compute_stats(emb, ["<s>", "</s>\n", "  "], domain="d")


def test_token_counts_cap_blanks_and_specials(emb: Embedder) -> None:
    texts = ["alpha beta gamma delta epsilon zeta eta theta", "</s> one </s> two <s>", "  ",
             "", "\n", "x", "<s>", "</s><s>", "\u200b", "<s>\n </s>"]
    counts, doc_counts, n_prompts, pairs, tfidf = token_counts(emb, texts, max_tokens=5,
                                                               skip_pairs=True)
    # without skip_pairs (the default) the table is the adjacent pairs alone
    plain = token_counts(emb, texts, max_tokens=5).pairs
    for got, want in zip(plain, split_pairs(pairs, emb.vocab_size)[0], strict=True):
        np.testing.assert_array_equal(got, want)
    # Blank prompts and prompts of special tokens only are skipped: they count as no
    # prompt (routing refuses them), which would lower every expert's pair bounds.
    assert n_prompts == 3 and tfidf is None  # (counted on request only)
    # the TF-IDF statistics count the same prompts: a bias entry of 3 units
    counted = token_counts(emb, texts, max_tokens=5, tfidf_buckets=64).tfidf
    assert counted is not None and counted.values[-1] == 3 * 2**32
    for count in (compute_stats, streaming_stats):
        assert count(emb, texts, domain="d").n_prompts == 3
    # Per id, the prompts it occurs in (after the cap): "</s> one </s> two <s>" counts
    # "one" and "two" once each; tokens repeated within a prompt count once.
    kept = [emb.encode(t)[:5] for t in texts if not is_blank(t)]
    expected = np.bincount(np.concatenate([np.unique(x) for x in kept]),
                           minlength=emb.vocab_size)
    np.testing.assert_array_equal(doc_counts, expected)
    assert doc_counts.max() <= n_prompts and np.all(doc_counts <= counts)
    assert counts[emb.special_ids].sum() == 0
    assert counts.sum() == sum(min(emb.encode(t).size, 5) for t in texts if not is_blank(t))
    assert counts.dtype == np.int64 and counts.shape == (emb.vocab_size,)
    # Pairs: (previous id or the start V, id) within the cap, and skip pairs (the id two
    # places back or V, id), each prompt's distinct pairs of each kind once.
    V = emb.vocab_size
    adjacent, skips = split_pairs(pairs, V)
    for gap, table in ((1, adjacent), (2, skips)):
        brute: Counter[tuple[int, int]] = Counter()
        for x in kept:
            if x.size:  # (a prompt of special tokens only has no pair)
                brute.update(set(zip([V] * gap + x[:-gap].tolist(), x.tolist(), strict=False)))
        got = {(int(k) // (V + 1), int(k) % (V + 1)): int(c) for k, c in zip(*table, strict=True)}
        assert got == dict(brute)


def test_empty_corpus_and_bad_domain(emb: Embedder) -> None:
    with pytest.raises(EmptyInputError, match="math"):
        compute_stats(emb, [], domain="math")
    with pytest.raises(EmptyInputError):
        compute_stats(emb, ["  ", "\n"], domain="math")
    with pytest.raises(EmptyInputError):
        compute_stats(emb, ["</s>", "<s></s>"], domain="math")
    for bad in ("", " math", "math ", "  "):
        with pytest.raises(ExpertError, match=r"invalid domain name .*: it must be non-empty"):
            compute_stats(emb, ["1 + 1"], domain=bad)
    # A newline or tab would break the tab-separated expert listings and HTTP headers.
    for bad in ("a\nb", "a\tb", "a\x1bb", "a\u2028b", "a\u2029b"):
        with pytest.raises(ExpertError, match=r"invalid domain name .*: it holds a (control "
                                              r"character|line separator|paragraph separator)"):
            compute_stats(emb, ["1 + 1"], domain=bad)
    with pytest.raises(ExpertError, match="invalid domain name 2: it must be a string, not int"):
        compute_stats(emb, ["1 + 1"], domain=2)  # type: ignore[arg-type]
    # Names that would look like another name in every listing, or that no JSON, header or
    # file can carry (a lone surrogate: what a non-UTF-8 argv byte becomes), are refused.
    for bad, problem in (("a\u200bb", r"an invisible format character \(U\+200B\)"),
                         ("\u202emath", r"an invisible format character \(U\+202E\)"),
                         ("py\ud800", r"a lone surrogate \(not UTF-8\) \(U\+D800\)"),
                         ("m\udcffx", r"a lone surrogate")):
        with pytest.raises(ExpertError, match=rf"invalid domain name .*: it holds {problem}"):
            compute_stats(emb, ["1 + 1"], domain=bad)
    with pytest.raises(ExpertError, match=r"not in Unicode's composed form \(NFC\): write it "
                                          "as 'café'"):
        compute_stats(emb, ["1 + 1"], domain="cafe\u0301")
    assert compute_stats(emb, ["1 + 1"], domain="café").domain == "café"  # NFC: accepted
    # Names that pass for another though NFC: full-width letters and ligatures (NFKC), and
    # Latin mixed with Cyrillic or Greek look-alikes (they were accepted as new experts).
    for bad, problem in (("\uff4d\uff41\uff54\uff48", r"holds compatibility characters .*write "
                                                        r"it as 'math'"),
                         ("\ufb01nance", r"holds compatibility characters .*'finance'"),
                         ("m\u0430th", r"mixes Cyrillic and Latin letters \(U\+0430 is "
                                       r"Cyrillic\): such a name can pass for another"),
                         ("l\u03bfgic", r"mixes Greek and Latin letters \(U\+03BF is Greek\)")):
        with pytest.raises(ExpertError, match=rf"invalid domain name .*: it {problem}"):
            compute_stats(emb, ["1 + 1"], domain=bad)
    # one alphabet, or Latin beside Han: how names are written
    for name in ("\u0444\u0438\u0437\u0438\u043a\u0430", "\u03bb\u03cc\u03b3\u03bf\u03c2",
                 "math-数学", "GPT-4o"):
        assert compute_stats(emb, ["1 + 1"], domain=name).domain == name
    # Joiners spell Persian and Indic words and emoji sequences; after ASCII they only hide.
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # (escaped: RUF001)
    for name in (persian, "क्\u200dष", "👩\u200d💻", "数学", "हिन्दी"):
        assert compute_stats(emb, ["1 + 1"], domain=name).domain == name
    with pytest.raises(ExpertError, match=r"an invisible format character \(U\+200D\)"):
        compute_stats(emb, ["1 + 1"], domain="ma\u200dth")


@pytest.mark.parametrize("count", [compute_stats, streaming_stats])
def test_texts_must_be_an_iterable_of_strings(emb: Embedder, count) -> None:
    """A lone string would be counted one character per prompt; a non-string item is named
    by its index and type, when the stream reaches it (never read twice, never listed)."""
    with pytest.raises(IR3DEError, match=r"texts must be a list .*not a single str"):
        count(emb, "import os", domain="x")
    with pytest.raises(IR3DEError, match=r"texts must be a list .*not int"):
        count(emb, 7, domain="x")
    for bad, name in ((None, "NoneType"), (1, "int"), (b"import os", "bytes")):
        pulled = []

        def stream(bad=bad, pulled=pulled):
            for text in ["1 + 1", "  ", bad, "2 + 2"]:
                pulled.append(text)
                yield text

        with pytest.raises(IR3DEError, match=rf"text #2 is of type {name}, not a string"):
            count(emb, stream(), domain="x")
        assert pulled == ["1 + 1", "  ", bad]  # stopped at the culprit


# 2**53 + 1: the file saved would not load (its loader's limit), yet stats exited 0
@pytest.mark.parametrize("bad", ["5", 2.5, True, 0, -3, None, np.float64(4.0), 2**53 + 1])
def test_max_tokens_must_be_a_positive_integer(emb: Embedder, bad) -> None:
    for count in (compute_stats, streaming_stats):
        with pytest.raises(IR3DEError, match=r"max_tokens must be a positive integer of at "
                                             r"most 2\*\*53, got "):
            count(emb, ["1 + 1"], domain="x", max_tokens=bad)
    with pytest.raises(IR3DEError, match=r"max_tokens must be a positive integer"):
        token_counts(emb, ["1 + 1"], max_tokens=bad)


def test_numpy_integer_max_tokens_is_a_plain_int(emb: Embedder, tmp_path: Path) -> None:
    """A numpy integer is a fine cap, but the saved file's JSON metadata needs an int."""
    texts = ["alpha beta gamma delta epsilon zeta"]
    for count in (compute_stats, streaming_stats):
        s = count(emb, texts, domain="x", max_tokens=np.int64(3))
        assert type(s.max_tokens) is int and s.max_tokens == 3 and s.n_tokens == 3
        s.save(tmp_path / "x.stats")
        assert DomainStats.load(tmp_path / "x.stats").max_tokens == 3


def test_the_embedder_may_be_named_as_for_a_router(emb: Embedder) -> None:
    """Router(\"wordllama\") loads the embedder by name; so do the statistics functions."""
    texts = ["What is 7 * 6?", "Solve 2x = 10."]
    by_name = compute_stats("wordllama", texts, domain="math")
    np.testing.assert_array_equal(by_name.counts, compute_stats(emb, texts,
                                                                domain="math").counts)
    assert streaming_stats("wordllama", texts, domain="math").n_tokens == by_name.n_tokens
    assert compute_stats(by_name.embedder, texts, domain="math").fingerprint == emb.fingerprint
    for count in (compute_stats, streaming_stats):
        for bad in (None, 3, emb.vocab_size):
            with pytest.raises(IR3DEError, match=r"embedder must be an Embedder "
                                                 r"\(load_embedder\(\.\.\.\)\) or its name"):
                count(bad, texts, domain="math")


# ------------------------------------------------------------------ additivity


def test_merge_of_shards_equals_one_fit(emb: Embedder, real_prompts: list[str]) -> None:
    texts = real_prompts[:300]
    whole = compute_stats(emb, texts, domain="mixed")
    shards = [compute_stats(emb, texts[i::3], domain="mixed") for i in range(3)]
    merged = merge(shards)
    assert list(merged) == ["mixed"]
    assert_stats_close(merged["mixed"], whole, emb)
    # A is formed from the merged counts, exact integers: the central fit's to the bit.
    np.testing.assert_array_equal(merged["mixed"].gram(emb), whole.gram(emb))
    # The canonical summation order makes the result independent of the input order.
    again = merge(shards[::-1])["mixed"]
    np.testing.assert_array_equal(again.b, merged["mixed"].b)
    # Statistics without counts (the reference accumulation) keep A, summed as floats in
    # the same canonical order.
    slow = [streaming_stats(emb, texts[i::3], domain="mixed") for i in range(3)]
    np.testing.assert_array_equal(merge(slow)["mixed"].A, merge(slow[::-1])["mixed"].A)
    assert_stats_close(whole, merge(slow)["mixed"], emb)
    # Several domains at once, kept apart and in order of first appearance.
    other = compute_stats(emb, CORPORA["law"], domain="law")
    multi = merge([shards[0], other, shards[1], shards[2]])
    assert list(multi) == ["mixed", "law"]
    assert multi["law"] is other
    assert_stats_close(multi["mixed"], whole, emb)


def test_two_nodes_merged_equal_central_fit(emb: Embedder, data_dir: Path,
                                            tmp_path: Path) -> None:
    """Two machines each fit half of a domain corpus, ship files, and the merge equals one
    central fit."""
    corpus = jsonl_texts(data_dir / "domains" / "legalbench" / "train.jsonl", 300)
    half = len(corpus) // 2
    central = compute_stats(emb, corpus, domain="legal")
    for node, part in enumerate((corpus[:half], corpus[half:])):
        compute_stats(emb, part, domain="legal").save(tmp_path / f"node{node}.safetensors")
    loaded = load_stats_files([tmp_path / "node0.safetensors", tmp_path / "node1.safetensors"])
    merged = merge(loaded)["legal"]
    assert_stats_close(merged, central, emb)
    np.testing.assert_array_equal(merged.gram(emb), central.gram(emb))
    assert merged.n_prompts == len(corpus)


def test_add_subtract_round_trip(toy_stats: dict[str, DomainStats], emb: Embedder) -> None:
    a = toy_stats["math"]
    b = compute_stats(emb, ["How many apples are left if I eat 3 of 10?"] * 3, domain="math")
    total = a + b
    assert (total.n_tokens, total.n_prompts) == (a.n_tokens + b.n_tokens,
                                                 a.n_prompts + b.n_prompts)
    assert total.A is None
    back = total - b
    assert (back.n_tokens, back.n_prompts) == (a.n_tokens, a.n_prompts)
    # A is formed from the counts: what is left is a's own, to the bit.
    np.testing.assert_array_equal(back.gram(emb), a.gram(emb))
    np.testing.assert_allclose(back.b, a.b, rtol=1e-12, atol=1e-12 * np.abs(a.b).max())
    assert back.source == "<combined>" and a.source == "<memory>"  # operands untouched
    for got, want in zip(back.pairs, a.pairs, strict=True):  # b's own pairs are gone again
        np.testing.assert_array_equal(got, want)
    # Sum of the texts' stats equals the stats of the concatenated corpus.
    joint = compute_stats(emb, CORPORA["math"] + ["How many apples are left if I eat 3 of 10?"]
                          * 3, domain="math")
    assert_stats_close(total, joint, emb)
    np.testing.assert_array_equal(total.gram(emb), joint.gram(emb))
    # Without counts, A is summed and subtracted as floats.
    a, b = (streaming_stats(emb, x.split("|"), domain="math")
            for x in ("What is 7 * 6?|Solve 2x = 10.", "How many apples are left?"))
    np.testing.assert_array_equal((a + b).A, a.A + b.A)
    back = (a + b) - b
    np.testing.assert_allclose(back.A, a.A, rtol=1e-12, atol=1e-12 * np.abs(a.A).max())


def test_subtracting_what_was_never_added(toy_stats: dict[str, DomainStats],
                                          emb: Embedder) -> None:
    a = toy_stats["math"]
    bigger = a + compute_stats(emb, ["Solve 2x = 8."], domain="math")
    with pytest.raises(StatsFormatError, match="never part of them"):
        a - bigger
    with pytest.raises(StatsFormatError, match="never part"):
        compute_stats(emb, ["x"], domain="math") - a


def test_subtracting_a_stranger_names_it_before_any_consistency_check(
        toy_stats: dict[str, DomainStats], emb: Embedder) -> None:
    """Negative token, document or pair counts, or document frequencies that no longer fit
    the token counts, prove the subtracted statistics were never part of the others: said
    so, rather than a consistency complaint about "<combined>"."""
    a = dataclasses.replace(toy_stats["math"], source="math.st")
    stranger = dataclasses.replace(compute_stats(emb, ["zebra giraffe"], domain="math"),
                                   source="zoo.st")
    assert stranger.n_tokens < a.n_tokens and stranger.n_prompts < a.n_prompts
    with pytest.raises(StatsFormatError, match=r"subtracting zoo\.st from math\.st leaves "
                                               r"negative counts: it was never part of them"):
        a - stranger
    for drop in ({"doc_counts": None, "pairs": None}, {"pairs": None}):
        with pytest.raises(StatsFormatError, match=r"zoo\.st from math\.st leaves negative"):
            dataclasses.replace(a, **drop) - dataclasses.replace(stranger, **drop)
    # Token counts that stay non-negative, but a token left in more prompts than remain.
    with pytest.raises(StatsFormatError, match=r"leaves counts that disagree \(.*document "
                                               r"frequencies.*\): it was never part of them"):
        compute_stats(emb, ["cat dog cat dog", "x"], domain="math") - \
            compute_stats(emb, ["cat dog"], domain="math")


def test_a_sum_past_two_to_the_53_tokens_is_refused_not_saved(
        toy_stats: dict[str, DomainStats]) -> None:
    """The loader refuses more than 2**53 tokens; two files just under half of it each
    used to sum (merge) to statistics that saved fine and then could not be loaded."""
    half = 2**52 + 1  # exact in float64, as A's and b's bias entries must be
    h1 = toy_stats["math"].b.size
    A = np.zeros((h1, h1))
    A[-1, -1] = half
    b = np.zeros_like(toy_stats["math"].b)
    b[-1] = half
    big = dataclasses.replace(toy_stats["math"], A=A, b=b, n_tokens=half, n_prompts=2**42 + 1,
                              counts=None, doc_counts=None, pairs=None, source="big.st")
    A2 = A.copy()
    A2[0, 0] = 1.0  # other data, not a copy (merge refuses a shard given twice)
    other = dataclasses.replace(big, A=A2, source="other.st")
    with pytest.raises(StatsFormatError, match=r"adding other\.st to big\.st: .*more than "
                                               r"2\*\*53 tokens or prompts"):
        big + other
    with pytest.raises(StatsFormatError, match=r"more than 2\*\*53"):
        merge([big, other])
    with pytest.raises(StatsFormatError, match=r"more than 2\*\*53"):
        dataclasses.replace(big, n_prompts=2**53 + 1)


def test_subtracting_without_counts_checks_the_diagonal(emb: Embedder) -> None:
    """Without token counts only A's diagonal (sums of squares) can expose a stranger: it
    must not go negative. What was added comes back off, up to the rounding of the sums."""
    math, law = CORPORA["math"], CORPORA["law"][:3]
    whole, part = streaming_stats(emb, math, domain="d"), streaming_stats(emb, law, domain="d")
    assert part.n_tokens < whole.n_tokens and part.counts is None
    with pytest.raises(StatsFormatError, match=r"leaves a negative diagonal in A: it was "
                                               r"never part of them"):
        whole - part
    joint = streaming_stats(emb, math + law, domain="d")  # summed in another order
    back = joint - part
    assert back.n_tokens == whole.n_tokens
    np.testing.assert_allclose(back.A, whole.A, rtol=1e-9, atol=1e-9 * np.abs(whole.A).max())
    assert (joint - joint).n_tokens == 0


def test_sum_of_shards(toy_stats: dict[str, DomainStats], emb: Embedder) -> None:
    """sum() starts at 0: 0 + stats is the stats themselves."""
    shards = [compute_stats(emb, CORPORA["math"][i::3], domain="math") for i in range(3)]
    total = sum(shards)
    assert isinstance(total, DomainStats)
    np.testing.assert_array_equal(total.counts, (shards[0] + shards[1] + shards[2]).counts)
    assert total.n_prompts == toy_stats["math"].n_prompts
    assert sum(shards[:1]) is shards[0]
    with pytest.raises(TypeError):
        1 + shards[0]
    for twice in (lambda: shards[0] + shards[0], lambda: sum([shards[0], shards[0]])):
        with pytest.raises(IR3DEError, match="added to itself; it would be counted twice"):
            twice()


def test_merge_refuses_what_is_not_a_list_of_shards(toy_stats: dict[str, DomainStats]) -> None:
    a = toy_stats["math"]
    with pytest.raises(IR3DEError, match=r"not a single DomainStats \(pass \[stats\]\)"):
        merge(a)
    with pytest.raises(IR3DEError, match=r"merge takes an iterable of DomainStats, not int"):
        merge(3)
    with pytest.raises(IR3DEError, match=r"merge: item 1 is str, not DomainStats"):
        merge([a, "x"])


def test_merge_refuses_a_shard_given_twice(toy_stats: dict[str, DomainStats],
                                          tmp_path: Path, monkeypatch) -> None:
    """The same shard twice would be counted twice (the CLI refuses a file given twice):
    the same object, or one file loaded twice, under any spelling of its path."""
    a, law = toy_stats["math"], toy_stats["law"]
    with pytest.raises(IR3DEError, match=r"merge: items #1 and #3 are the same statistics "
                                         r"\(<memory>\).*counted twice"):
        merge([a, law, a])
    with pytest.raises(IR3DEError, match="counted twice"):
        merge([a, a], drop_pairs=True)
    a.save(tmp_path / "a.stats")
    monkeypatch.chdir(tmp_path)
    twice = [DomainStats.load("a.stats"), DomainStats.load(tmp_path / "." / "a.stats")]
    with pytest.raises(IR3DEError, match=r"items #1 and #2 are the same statistics "
                                         r"\(.*a\.stats\)"):
        merge(twice)
    # One file under two domain names is two domains; a sum holds the shards it was summed
    # from.
    assert list(merge([twice[0], twice[1].renamed("arithmetic")])) == ["math", "arithmetic"]
    with pytest.raises(IR3DEError, match=r"items #1 and #2 of domain 'math' both hold one "
                                         r"shard's statistics .*counted twice"):
        merge([a, a + twice[0]])


def test_merge_refuses_identical_statistics(toy_stats: dict[str, DomainStats], emb: Embedder,
                                            tmp_path: Path) -> None:
    """A copy of a shard's file (another path, another object) holds the same counts: the
    same corpus twice, refused like the same file twice; so is a shard counted again."""
    math = toy_stats["math"]
    math.save(tmp_path / "a.stats")
    (tmp_path / "a_copy.stats").write_bytes((tmp_path / "a.stats").read_bytes())
    shards = load_stats_files([tmp_path / "a.stats", tmp_path / "a_copy.stats"])
    with pytest.raises(IR3DEError, match=r"^merge: items #1 and #2 \(.*a\.stats and .*a_copy\."
                                         r"stats\) of domain 'math' hold identical statistics "
                                         r"\(the same corpus twice\?\): it would be counted "
                                         r"twice$"):
        merge(shards)
    again = compute_stats(emb, CORPORA["math"], domain="math")  # counted again, no pairs kept
    with pytest.raises(IR3DEError, match=r"items #2 and #3 .* hold identical statistics"):
        merge([toy_stats["law"], math, dataclasses.replace(again, pairs=None)],
              drop_pairs=True)
    # Other domains, and shards that differ, merge as before.
    assert list(merge([shards[0], shards[1].renamed("arithmetic")])) == ["math", "arithmetic"]
    halves = [compute_stats(emb, part, domain="math")
              for part in (CORPORA["math"][:3], CORPORA["math"][3:])]
    assert merge(halves)["math"].n_prompts == math.n_prompts


def test_find_identical_compares_counts_not_names_or_files(toy_stats: dict[str, DomainStats],
                                                          emb: Embedder) -> None:
    math, law = toy_stats["math"], toy_stats["law"]
    assert statistics.find_identical([math, law]) is None
    assert statistics.find_identical([law, math, math.renamed("x")]) == (1, 2)
    # Statistics without a histogram are compared by A and b.
    streamed = streaming_stats(emb, CORPORA["law"], domain="law")
    assert statistics.find_identical([math, streamed, streamed.renamed("y")]) == (1, 2)
    assert statistics.find_identical([law, streamed]) is None  # only one has a histogram
    # One corpus merged from its shards is that corpus.
    halves = [compute_stats(emb, part, domain="math")
              for part in (CORPORA["math"][:3], CORPORA["math"][3:])]
    assert statistics.find_identical([math, merge(halves)["math"]]) == (0, 1)


def test_combining_incompatible_stats(toy_stats: dict[str, DomainStats], emb: Embedder) -> None:
    math, law = toy_stats["math"], toy_stats["law"]
    with pytest.raises(ExpertError, match=r"'math'.*'law'"):
        math + law
    capped = compute_stats(emb, CORPORA["math"], domain="math", max_tokens=8)
    with pytest.raises(StatsFormatError, match="caps prompts"):
        math + capped
    capped = dataclasses.replace(capped, source="capped.st")
    with pytest.raises(StatsFormatError, match=r"token caps differ: capped\.st \(math\) caps "
                                               r"prompts at 8 tokens but <memory> \(math\) "
                                               r"at 1024; count them again"):
        merge([math, capped])  # summed smallest first: the capped shard is named first
    foreign = dataclasses.replace(math, fingerprint="0" * 64, source="other.safetensors")
    with pytest.raises(FingerprintMismatchError, match=r"other\.safetensors"):
        math + foreign
    with pytest.raises(FingerprintMismatchError):
        merge([math, foreign])
    # A fingerprint that shares a long prefix (a hand-edited file) is shown until it
    # differs: the first 12 characters alone would print the same text twice.
    near = math.fingerprint[:20] + ("0" if math.fingerprint[20] != "0" else "1")
    near = dataclasses.replace(math, fingerprint=near + math.fingerprint[21:])
    with pytest.raises(FingerprintMismatchError,
                       match=rf"with {math.fingerprint[:21]} but .* with {near.fingerprint[:21]};"):
        math + near


def test_shards_with_and_without_pairs_are_not_summed(toy_stats: dict[str, DomainStats],
                                                      emb: Embedder) -> None:
    """A shard without pair counts would silently strip the pairs from the whole sum: merge
    and + refuse it, naming every such shard; drop_pairs=True is the explicit way out."""
    math = dataclasses.replace(toy_stats["math"], source="with.st")
    extras = [compute_stats(emb, texts, domain="math") for texts in
              (["Solve 2x = 8.", "What is 9 * 9?"], ["Is 91 prime?", "Compute 3 + 4."])]
    bare = [dataclasses.replace(extra, pairs=None, source=f"bare{i}.st")
            for i, extra in enumerate(extras, 1)]
    with pytest.raises(StatsFormatError, match=r"bare1\.st, bare2\.st: no token-pair counts"
                                               r".*--no-pairs.*drop_pairs=True"):
        merge([math, *bare])
    with pytest.raises(StatsFormatError, match=r"bare1\.st: no token-pair counts"):
        math + bare[0]
    with pytest.raises(StatsFormatError, match=r"bare1\.st: no token-pair counts"):
        bare[0] - math
    signed = dataclasses.replace(math, signature={"key": "k", "signature": "s"})
    dropped = merge([signed, *bare], drop_pairs=True)["math"]
    assert dropped.pairs is None and dropped.signature is None
    assert dropped.n_prompts == math.n_prompts + sum(e.n_prompts for e in extras)
    np.testing.assert_array_equal(dropped.doc_counts,
                                  math.doc_counts + sum(e.doc_counts for e in extras))
    # A lone shard is dropped too: the file merge writes never holds pairs then.
    assert merge([math], drop_pairs=True)["math"].pairs is None
    # Shards that agree (all with, or all without, pairs) merge as before.
    assert merge(bare)["math"].n_prompts == sum(e.n_prompts for e in extras)


def test_renamed_keeps_the_numbers(toy_stats: dict[str, DomainStats]) -> None:
    s = toy_stats["math"].renamed("arithmetic")
    assert s.domain == "arithmetic" and s.counts is toy_stats["math"].counts
    with pytest.raises(ExpertError):
        toy_stats["math"].renamed(" bad")


def test_domainstats_validates_its_arrays(toy_stats: dict[str, DomainStats],
                                          skip_stats: dict[str, DomainStats],
                                          emb: Embedder) -> None:
    # With A as well as the counts it is formed from, as in files of version 1.
    s = dataclasses.replace(toy_stats["math"], A=toy_stats["math"].gram(emb))
    with pytest.raises(StatsFormatError, match="shape"):
        dataclasses.replace(s, A=s.A[:-1])
    with pytest.raises(StatsFormatError, match="shape"):
        dataclasses.replace(s, b=s.b[:-1])
    bad = s.A.copy()
    bad[3, 4] = np.nan
    with pytest.raises(StatsFormatError, match="NaN/Inf"):
        dataclasses.replace(s, A=bad)
    with pytest.raises(StatsFormatError, match="negative"):
        dataclasses.replace(s, n_tokens=-1)
    # a bool or a float would be saved into a file that cannot be loaded back
    for field, value in (("max_tokens", True), ("max_tokens", 0), ("n_prompts", 2.0),
                         ("n_tokens", "9")):
        with pytest.raises(StatsFormatError, match=rf"<memory>: {field} must be"):
            dataclasses.replace(s, **{field: value})
    same = dataclasses.replace(s, max_tokens=np.int64(s.max_tokens))
    assert type(same.max_tokens) is int and same.max_tokens == s.max_tokens
    for field, value in (("A", s.A.tolist()), ("b", s.b.tolist()), ("b", None),
                         ("A", s.A.astype(object)), ("b", s.b.astype(str))):
        with pytest.raises(StatsFormatError, match=rf"<memory>: {field} must be a numpy "
                                                   r"array of numbers, got "):
            dataclasses.replace(s, **{field: value})
    # Counts are integers: float ones would be truncated when saved.
    for field, value, got in (("counts", s.counts.tolist(), "list"),
                              ("doc_counts", s.doc_counts.tolist(), "list"),
                              ("counts", s.counts.astype(np.float64), "array of float64"),
                              ("doc_counts", s.doc_counts.astype(np.float32),
                               "array of float32")):
        with pytest.raises(StatsFormatError, match=rf"<memory>: {field} must be a numpy "
                                                   rf"array of integers, got {got}$"):
            dataclasses.replace(s, **{field: value})
    # A may be left out only where the counts it is formed from are given.
    assert dataclasses.replace(s, A=None).A is None
    with pytest.raises(StatsFormatError, match=r"<memory>: statistics without A need the "
                                               r"token counts it is formed from"):
        dataclasses.replace(s, A=None, counts=None, doc_counts=None, pairs=None)
    with pytest.raises(StatsFormatError, match=r"pair_keys must be a numpy array"):
        dataclasses.replace(s, pairs=PairCounts(s.pairs.keys.tolist(), s.pairs.counts))
    with pytest.raises(StatsFormatError, match=r"pair_counts must be a numpy array of "
                                               r"integers, got array of float64"):
        dataclasses.replace(s, pairs=PairCounts(s.pairs.keys, s.pairs.counts * 1.0))
    with pytest.raises(StatsFormatError, match=r"pairs must be a PairCounts"):
        dataclasses.replace(s, pairs=s.pairs.keys)
    keys, counts = s.pairs
    V = s.doc_counts.size
    for bad_pairs in (PairCounts(keys[::-1], counts[::-1]),  # not sorted
                      PairCounts(keys, counts * 0),  # not positive
                      PairCounts(keys, counts + s.n_prompts),  # more prompts than hold a token
                      PairCounts(keys[1:], counts[1:]),  # a token occurrence without its pair
                      PairCounts(keys.astype(np.int32), counts),
                      # out of order or repeated: not a key of another vocabulary (it was
                      # named as one, of a vocabulary sized from the largest key)
                      PairCounts(np.array([5, 3]), np.array([1, 1])),
                      PairCounts(np.append(keys, keys[-1]), np.append(counts, 1))):
        with pytest.raises(StatsFormatError, match="token-pair frequencies disagree"):
            dataclasses.replace(s, pairs=bad_pairs)
    # A key past the vocabulary is named as what it is: a key of another vocabulary size.
    with pytest.raises(StatsFormatError, match=rf"largest token-pair key, {(V + 1) ** 2}, is "
                                               rf"one of a vocabulary of {V + 1} ids, but "
                                               rf"doc_counts has {V} entries"):
        dataclasses.replace(s, pairs=PairCounts(np.append(keys, (V + 1) ** 2),
                                                np.append(counts, 1)))
    # With skip pairs the largest keys are theirs, (the start V, id): (V + 1)**2 + V (V + 1)
    # + id; they are checked as the adjacent ones are (one missing is refused).
    s = skip_stats["math"]
    keys, counts = s.pairs
    wider = (V + 2) ** 2 + (V + 1) * (V + 2)  # (V + 1, 0) of a vocabulary of V + 1 ids
    with pytest.raises(StatsFormatError, match=rf"largest token-pair key, {wider}, is one of "
                                               rf"a vocabulary of {V + 1} ids, but "
                                               rf"doc_counts has {V} entries"):
        dataclasses.replace(s, pairs=PairCounts(np.append(keys, wider), np.append(counts, 1)))
    with pytest.raises(StatsFormatError, match="token-pair frequencies disagree"):
        dataclasses.replace(s, pairs=PairCounts(keys[:-1], counts[:-1]))


def test_three_parties_federation_is_exact(emb: Embedder, data_dir: Path, tmp_path: Path,
                                           capsys) -> None:
    """Three parties fit privately; the router built from their files equals a central fit,
    removing a party equals a fit without it, and a truncated file in the set fails the
    build with the file named and nothing written."""
    from ir3de import Router
    from ir3de.cli import main

    parties = {"math": jsonl_texts(data_dir / "reasoning" / "gsm8k" / "train.jsonl", 200),
               "coding": jsonl_texts(data_dir / "reasoning" / "mbpp" / "train.jsonl", 200),
               "law": jsonl_texts(data_dir / "domains" / "legalbench" / "train.jsonl", 200)}
    files = []
    for domain, texts in sorted(parties.items()):  # as fit orders its experts
        files.append(tmp_path / f"{domain}.stats")
        compute_stats(emb, texts, domain=domain).save(files[-1])
    texts = [t for group in parties.values() for t in group]
    labels = [d for d, group in parties.items() for _ in group]
    central = Router(emb).fit(texts, labels)
    federated = Router(emb).fit_stats(load_stats_files(files))
    np.testing.assert_array_equal(federated.W, central.W)
    federated.remove_expert("law")
    without = Router(emb).fit(texts[:400], labels[:400])
    np.testing.assert_array_equal(federated.W, without.W)

    truncated = tmp_path / "truncated.stats"
    truncated.write_bytes(files[2].read_bytes()[:-100])
    out = tmp_path / "router.safetensors"
    code = main(["build", str(files[0]), str(files[1]), str(truncated), "-o", str(out)])
    assert code == 1 and "truncated.stats" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------ refusals that name the cause


def _padded(array: np.ndarray, extra: int = 5) -> np.ndarray:
    return np.concatenate([array, np.zeros(extra, dtype=array.dtype)])


def test_combining_arrays_of_different_lengths_names_both(toy_stats: dict[str, DomainStats],
                                                         emb: Embedder) -> None:
    """Hand-made statistics whose count vectors do not fit the vocabulary (under one
    fingerprint) used to fail inside numpy's broadcasting, naming neither side."""
    math = dataclasses.replace(toy_stats["math"], pairs=None, source="padded.st")
    padded = dataclasses.replace(math, counts=_padded(math.counts),
                                 doc_counts=_padded(math.doc_counts))
    other = dataclasses.replace(compute_stats(emb, ["What is 2 + 2?"], domain="math"),
                                pairs=None, source="other.st")
    V = emb.vocab_size
    want = (rf"cannot combine padded\.st \(math\) with other\.st: their arrays differ in "
            rf"length \(counts {V + 5} entries vs {V} entries; doc_counts {V + 5} entries vs "
            rf"{V} entries\)")
    for combine in (lambda: padded + other, lambda: padded - other):
        with pytest.raises(StatsFormatError, match=want):
            combine()
    # merge sums the smaller shard first
    for combine in (lambda: other + padded, lambda: merge([padded, other])):
        with pytest.raises(StatsFormatError, match=r"other\.st \(math\) with padded\.st: .*"
                                                   rf"counts {V} entries vs {V + 5} entries"):
            combine()
    # A/b of another width under the same fingerprint are named with their shapes.
    wide = dataclasses.replace(other, counts=None, doc_counts=None,
                               A=np.pad(other.gram(emb), ((1, 0), (1, 0))),
                               b=np.pad(other.b, (1, 0)))
    with pytest.raises(StatsFormatError, match=rf"A \({emb.dim + 1}, {emb.dim + 1}\) vs "
                                               rf"\({emb.dim + 2}, {emb.dim + 2}\); b "
                                               rf"{emb.dim + 1} entries vs {emb.dim + 2}"):
        dataclasses.replace(math, counts=None, doc_counts=None, A=math.gram(emb)) + wide


def test_pairs_of_another_vocabulary_are_named_as_a_length_problem(
        toy_stats: dict[str, DomainStats]) -> None:
    """Counts padded but pairs kept: the pair keys encode the true vocabulary size, which is
    what the error names (not "token-pair frequencies disagree")."""
    s = toy_stats["math"]
    V = s.counts.size
    with pytest.raises(StatsFormatError, match=rf"<memory>: the largest token-pair key, "
                                               rf"\d+, is one of a vocabulary of {V} ids, "
                                               rf"but doc_counts has {V + 5} entries"):
        dataclasses.replace(s, counts=_padded(s.counts), doc_counts=_padded(s.doc_counts))
    with pytest.raises(StatsFormatError, match=rf"doc_counts has shape \({V + 5},\) but "
                                               rf"counts \({V},\)"):
        dataclasses.replace(s, doc_counts=_padded(s.doc_counts))


@pytest.mark.parametrize("count", [compute_stats, streaming_stats])
def test_a_bad_text_is_named_by_its_place_in_the_callers_sequence(emb: Embedder,
                                                                  count) -> None:
    """Texts are encoded in batches of 1024 non-blank ones: a surrogate in a later batch,
    or after blank texts, used to be named by its index within its batch."""
    texts = ["ok", "  "] * 1030 + ["a\ud800"]
    with pytest.raises(IR3DEError, match=r"^text #2060 holds an unpaired surrogate"):
        count(emb, texts, domain="x")
    with pytest.raises(IR3DEError, match=r"^text #1030 holds an unpaired surrogate"):
        count(emb, ["ok"] * 1030 + ["a\ud800"], domain="x")


def test_positions_name_texts_of_a_longer_sequence(emb: Embedder) -> None:
    """One label's texts of a labelled sequence (as Router.fit counts them) are named by
    their place in that sequence."""
    texts, positions = ["ok", " ", 7, "a\ud800"], [1, 4, 6, 9]
    with pytest.raises(IR3DEError, match=r"^text #6 is of type int, not a string"):
        compute_stats(emb, texts, domain="x", positions=positions)
    with pytest.raises(IR3DEError, match=r"^text #9 holds an unpaired surrogate"):
        compute_stats(emb, ["ok", " ", "ok", "a\ud800"], domain="x", positions=positions)
    with pytest.raises(IR3DEError, match=r"^positions covers the first 2 text\(s\) only"):
        token_counts(emb, ["a", "b", "c"], positions=[0, 1])
    assert compute_stats(emb, ["ok", "fine"], domain="x", positions=[3, 8]).n_prompts == 2


def test_stats_from_counts_refuses_fractional_counts(emb: Embedder) -> None:
    """A float histogram used to be truncated to int64 (2.5 counted as 2)."""
    counts = np.zeros(emb.vocab_size)
    counts[100] = 2.5
    with pytest.raises(StatsFormatError, match=r"^counts must be whole numbers, got 2\.5 at "
                                               r"index 100$"):
        stats_from_counts(emb, counts, domain="d", n_prompts=1)
    with pytest.raises(StatsFormatError, match=r"^counts must be integers, got an array of "):
        stats_from_counts(emb, counts.astype(str), domain="d", n_prompts=1)
    counts[100] = 3.0  # whole numbers in a float array are counts
    s = stats_from_counts(emb, counts, domain="d", n_prompts=1)
    assert s.n_tokens == 3 and s.counts.dtype == np.int64


def test_derived_statistics_remember_their_signature_was_dropped(
        toy_stats: dict[str, DomainStats], emb: Embedder) -> None:
    signed = dataclasses.replace(toy_stats["math"], signature={"alg": "ed25519"})
    assert "renamed from 'math' to 'x'" in signed.renamed("x").signature_dropped
    other = compute_stats(emb, ["What is 2 + 2?"], domain="math")
    assert "combined" in (signed + other).signature_dropped
    assert "drop_pairs=True" in merge([signed], drop_pairs=True)["math"].signature_dropped
    # Unsigned statistics lose nothing; any other replace() forgets the note.
    assert toy_stats["math"].renamed("x").signature_dropped is None
    assert (toy_stats["math"] + other).signature_dropped is None
    assert dataclasses.replace(signed.renamed("x"), domain="y").signature_dropped is None


def test_merge_order_changes_only_ties_of_in_memory_float_sums(emb: Embedder,
                                                               tmp_path: Path) -> None:
    """What merge's docstring promises: counts exact in every order, so A (formed from them)
    too; b canonical for files; in-memory shards of equal token and prompt counts are
    summed as given."""
    import itertools

    texts = ["What is 7 * 6?", "What is 8 * 6?", "What is 9 * 6?"]
    shards = [compute_stats(emb, [t], domain="m") for t in texts]
    assert len({(s.n_tokens, s.n_prompts) for s in shards}) == 1  # all tie
    for i, s in enumerate(shards):
        s.save(tmp_path / f"s{i}.st")
    files = [DomainStats.load(tmp_path / f"s{i}.st") for i in range(3)]
    orders = list(itertools.permutations(range(3)))
    for group in (shards, files):
        merged = [merge([group[i] for i in order])["m"] for order in orders]
        for m in merged[1:]:
            np.testing.assert_array_equal(m.counts, merged[0].counts)
            np.testing.assert_array_equal(m.doc_counts, merged[0].doc_counts)
            np.testing.assert_array_equal(m.gram(emb), merged[0].gram(emb))
            np.testing.assert_allclose(m.b, merged[0].b, rtol=1e-14, atol=1e-14)
            if group is files:  # distinct sources: one canonical order, to the bit
                np.testing.assert_array_equal(m.b, merged[0].b)


# ----------------------------------------------------------------------------- probe fixes
def test_save_and_load_name_a_path_that_is_none(toy_stats: dict[str, DomainStats]) -> None:
    """As Router.save and Router.load do, instead of open()'s TypeError."""
    with pytest.raises(IR3DEError, match=r"^DomainStats\.save takes a file path \(str or "
                                         r"os\.PathLike\), got NoneType$"):
        toy_stats["math"].save(None)  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match=r"^DomainStats\.load takes a file path \(str or "
                                         r"os\.PathLike\), got int$"):
        DomainStats.load(3)  # type: ignore[arg-type]


def test_a_shard_summed_in_twice_is_refused(emb: Embedder) -> None:
    """sum([a, b, a]) counted a twice where merge([a, b, a]) refuses: a sum remembers the
    shard objects it was summed from. Subtracting a shard takes it out again."""
    a, b, c = (compute_stats(emb, [text], domain="math")
               for text in ("What is 2 + 2?", "Solve x + 1 = 3.", "Is 7 prime?"))
    twice = r"both hold one shard's statistics \(summed into them with \+ or sum\); it would " \
            r"be counted twice"
    for repeat in (lambda: sum([a, b, a]), lambda: (a + b) + (c + a), lambda: b + (a + b),
                   lambda: (a + b).renamed("m").renamed("math") + a):
        with pytest.raises(IR3DEError, match=twice):
            repeat()
    back = a + b - b + b  # b was taken out before it was added again
    assert back.n_prompts == 2 and np.array_equal(back.counts, (a + b).counts)
    total = sum([a, b, c])
    assert (total - (a + c)).n_prompts == 1
    with pytest.raises(IR3DEError, match=twice):
        total - b + a
    # A difference from other statistics than a sum of the same objects starts afresh.
    central = compute_stats(emb, ["What is 2 + 2?", "Solve x + 1 = 3."], domain="math")
    assert (central - b + b).n_prompts == 2
    # merge refuses the same, naming the items.
    with pytest.raises(IR3DEError, match=r"merge: items #1 and #2 of domain 'math' both hold "
                                         r"one shard's statistics"):
        merge([a + b, a + c])


def test_find_identical_compares_pairs_where_both_have_them(emb: Embedder) -> None:
    """The same tokens in another order: equal token counts, different pairs."""
    news, gossip = (compute_stats(emb, [text], domain="d")
                    for text in ("dog bites man", "man bites dog"))
    assert np.array_equal(news.counts, gossip.counts)
    assert statistics.find_identical([news, gossip]) is None
    assert statistics.find_identical([news, gossip], pairs=False) == (0, 1)
    assert statistics.find_identical([news, dataclasses.replace(gossip, pairs=None)]) == (0, 1)
    assert statistics.find_identical([news, gossip, news.renamed("x")]) == (0, 2)
    # merge tells them apart by their pairs, unless it drops them.
    assert merge([news, gossip])["d"].n_prompts == 2
    with pytest.raises(IR3DEError, match="hold identical statistics"):
        merge([news, gossip], drop_pairs=True)


def test_statistics_arrays_cannot_be_changed_in_place(toy_stats: dict[str, DomainStats],
                                                       emb: Embedder) -> None:
    """A router keeps statistics by reference: writing into them afterwards would break the
    checks they passed and the exactness of add/remove, so their arrays are read-only."""
    s = dataclasses.replace(toy_stats["math"], A=toy_stats["math"].gram(emb))
    arrays = [s.A, s.b, s.counts, s.doc_counts, *(s.pairs or ())]
    assert all(a is not None for a in arrays)
    for a in arrays:
        with pytest.raises(ValueError, match="read-only"):
            a[...] = 0
    # The caller's own arrays are not frozen: the statistics hold read-only views of them.
    mine = s.doc_counts.copy()
    made = dataclasses.replace(s, doc_counts=mine)
    assert not made.doc_counts.flags.writeable and mine.flags.writeable
    assert np.shares_memory(made.doc_counts, mine)


def test_repr_summarises_instead_of_printing_arrays(toy_stats: dict[str, DomainStats]) -> None:
    s = toy_stats["math"]
    text = repr(s)
    assert len(text) < 300 and "array" not in text
    assert text.startswith(f"DomainStats(domain='math', n_prompts={s.n_prompts}, "
                           f"n_tokens={s.n_tokens}, h=256, pairs={s.pairs.keys.size}, ")


def test_a_damaged_A_is_refused(toy_stats: dict[str, DomainStats], emb: Embedder) -> None:
    """One changed entry of A (a flipped bit in a file) used to load and move W."""
    s = dataclasses.replace(toy_stats["math"], A=toy_stats["math"].gram(emb))
    A = s.A.copy()
    A[3, 5] += 1e-3 * np.diagonal(A).max()
    with pytest.raises(StatsFormatError, match=r"math\.stats: A is not symmetric"):
        dataclasses.replace(s, A=A, source="math.stats")
    # Rounding is not damage: sums formed in another order differ in the last bits.
    A = s.A.copy()
    A[3, 5] = np.nextafter(A[3, 5], np.inf)
    assert dataclasses.replace(s, A=A).A[3, 5] != s.A[5, 3]
    # Symmetric damage: a negated diagonal entry, A scaled (its bias column then is not b)
    for damaged in (s.A * np.where(np.eye(s.A.shape[0], dtype=bool) & (np.arange(
            s.A.shape[0]) == 7), -1.0, 1.0), s.A * 1e300):
        with pytest.raises(StatsFormatError, match=r"math\.stats: A and b are no sums"):
            dataclasses.replace(s, A=damaged, source="math.stats")


@pytest.mark.parametrize(("change", "message"), [
    # a TypeError in repr, +, merge and fit_stats
    ({"fingerprint": None}, "fingerprint must be a non-empty string, got None"),
    ({"fingerprint": ""}, "fingerprint must be a non-empty string, got ''"),
    # saved, then refused by the loader
    ({"embedder": None}, r"embedder must be an embedder recipe .*, got None"),
    ({"embedder": {"name": "x"}}, r"embedder must be an embedder recipe"),
])
def test_statistics_name_their_embedder(toy_stats: dict[str, DomainStats], change: dict,
                                        message: str) -> None:
    with pytest.raises(StatsFormatError, match=message):
        dataclasses.replace(toy_stats["math"], **change)


def test_token_counts_that_wrap_around_int64_are_refused(
        toy_stats: dict[str, DomainStats]) -> None:
    """2**62 added to four counts wraps their sum back to n_tokens: the file loaded and
    moved the identity router's decisions."""
    s = toy_stats["math"]
    counts = s.counts.copy()
    counts[np.argsort(counts)[-4:]] += 2**62
    assert int(counts.sum()) == s.n_tokens  # (wrapped)
    with pytest.raises(StatsFormatError, match="token counts disagree with n_tokens"):
        dataclasses.replace(s, counts=counts, doc_counts=None, pairs=None)
    # their sum agrees, their shape does not (was "disagree with n_tokens")
    with pytest.raises(StatsFormatError, match=rf"token counts have shape \(1, "
                                               rf"{s.counts.size}\); expected one count per "
                                               rf"token id"):
        dataclasses.replace(s, counts=s.counts[None], doc_counts=None, pairs=None)


@pytest.mark.parametrize("signature", [["ed25519"], "alice", 5, False, [{"alg": "ed25519"}]])
def test_a_signature_that_is_not_an_object_is_refused_on_load(
        emb: Embedder, toy_stats: dict[str, DomainStats], tmp_path: Path,
        signature: object) -> None:
    """A list loaded, and a router saved with it could not be loaded again (Router.load
    refuses it): ``ir3de experts add`` broke a router in place, a gateway upload its state."""
    path = tmp_path / "math.stats"
    toy_stats["math"].save(path)
    tensors, meta = read_safetensors(path)
    write_safetensors(path, tensors, {**meta, "signature": signature})
    with pytest.raises(StatsFormatError, match=rf"^{re.escape(str(path))}: metadata field "
                                               r"'signature' must be an object \(with alg, "
                                               r"public_key and signature, as ir3de signs "
                                               rf"files\), got {re.escape(repr(signature))}$"):
        DomainStats.load(path)
    # An object loads whatever it holds (verify says what is wrong with it), and a router
    # saved with it loads back.
    odd = {"alg": "ed25519", "public_key": 5}
    write_safetensors(path, tensors, {**meta, "signature": odd})
    stats = DomainStats.load(path)
    assert stats.signature == odd
    Router(emb).fit_stats([stats, toy_stats["coding"]]).save(tmp_path / "r.safetensors")
    assert Router.load(tmp_path / "r.safetensors").stats["math"].signature == odd


def test_A_is_formed_from_the_counts_once_and_files_keep_it_only_without_them(
        toy_stats: dict[str, DomainStats], emb: Embedder, tmp_path: Path) -> None:
    """A is (h+1)² float64 (537 MB at h = 8192) and a function of the counts: statistics with
    counts keep none, form it on demand, once per object, and save as version 2 without it;
    statistics without counts keep and save theirs (version 1, as an older ir3de wrote)."""
    s = toy_stats["math"]
    fresh = dataclasses.replace(s)  # no A formed yet
    A, b = fresh.moments(emb)
    assert fresh.moments(emb)[0] is A and fresh.gram(emb) is A  # kept with the object
    assert not A.flags.writeable and not b.flags.writeable
    np.testing.assert_array_equal(b, s.b)  # b formed from the counts is the b made with them
    with pytest.raises(IR3DEError, match=r"<memory> \(math\) keeps token counts: forming A "
                                         r"and b from them needs the embedder"):
        dataclasses.replace(s).moments()
    # A pickle (a router sent to worker processes) leaves the formed A out.
    import pickle

    assert len(pickle.dumps(fresh)) < A.nbytes
    assert pickle.loads(pickle.dumps(fresh)).moments(emb)[0] is not A
    alien = dataclasses.replace(s, fingerprint="f" * 64)
    with pytest.raises(FingerprintMismatchError, match=r"<memory> \(math\) was made with "
                                                       r"embedding f+, not wordllama"):
        alien.gram(emb)
    s.save(tmp_path / "v2.st")
    with_A = dataclasses.replace(s, A=s.gram(emb))
    with_A.save(tmp_path / "v1.st")
    meta = {name: read_safetensors(tmp_path / name) for name in ("v1.st", "v2.st")}
    assert meta["v2.st"][1]["version"] == 2 and "A" not in meta["v2.st"][0]
    assert meta["v1.st"][1]["version"] == 1 and "A" in meta["v1.st"][0]
    assert (tmp_path / "v1.st").stat().st_size - (tmp_path / "v2.st").stat().st_size \
        >= A.nbytes
    loaded = DomainStats.load(tmp_path / "v1.st")
    np.testing.assert_array_equal(loaded.A, A)
    np.testing.assert_array_equal(loaded.moments(emb)[0], A)  # formed: the stored one
    # A stored b (or a stored A) that disagrees with the counts is refused where A is
    # formed; counts moved between ids (sums and document frequencies kept) show in b.
    inner = np.ones_like(A)  # off-diagonal entries scaled, bias row and column kept
    inner[:-1, :-1] = 1.5
    np.fill_diagonal(inner, 1.0)
    moved = s.counts.copy()
    i, j = np.flatnonzero((s.counts > 1) & (s.doc_counts < s.counts))[0], 0
    moved[i] -= 1
    moved[j] += 1
    for damaged, what in ((dataclasses.replace(s, b=s.b * np.r_[np.full(s.dim, 2.0), 1.0]), "b"),
                          (dataclasses.replace(with_A, A=A * inner), "A")):
        with pytest.raises(StatsFormatError, match=rf"<memory> \(math\): {what} disagrees "
                                                   r"with the token counts it is a sum over"):
            damaged.moments(emb)
    with pytest.raises(StatsFormatError, match=r"b disagrees with the token counts"):
        dataclasses.replace(s, counts=moved, doc_counts=None, pairs=None).moments(emb)
    # Counts on one side only: the sum has no counts, so it needs both A; said before the
    # lesser difference (a pair table on one side only).
    old = streaming_stats(emb, CORPORA["math"][:2], domain="math")
    for combine in (lambda: s + old, lambda: merge([s, old]), lambda: s - old):
        with pytest.raises(StatsFormatError, match=r"cannot combine <memory> \(math\), which "
                                                   r"keeps token counts and no A, with "
                                                   r"<memory>, which keeps A and no token "
                                                   r"counts \(made by streaming_stats"):
            combine()
    assert (dataclasses.replace(with_A, pairs=None, doc_counts=None) + old).A is not None
