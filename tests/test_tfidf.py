"""The prompt-level TF-IDF ridge: its statistics against the definition, exact additivity,
the solve against an explicit ridge, routing, files and refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPORA, assert_evidence_decides

from ir3de import DomainStats, Router, RouterConfig, compute_stats, merge
from ir3de.cli import main
from ir3de.errors import IR3DEError, StatsFormatError
from ir3de.selector import select
from ir3de.store import read_safetensors, write_safetensors
from ir3de.tfidf import (
    UNIT,
    TfidfCounts,
    TfidfScores,
    gram_entry,
    hashed,
    solve_tfidf,
    sum_counts,
    tfidf_counts,
)

B = 64  # few buckets: collisions (and cancellations) happen


def _random_prompts(rng: np.random.Generator, n: int, vocab: int = 300) -> list[np.ndarray]:
    return [rng.integers(0, vocab, rng.integers(1, 30)) for _ in range(n)]


def _features(prompts: list[np.ndarray], buckets: int) -> np.ndarray:
    """``g̃ = [s / ‖s‖, 1]`` per prompt, by the definition (dense, float)."""
    out = np.zeros((len(prompts), buckets + 1))
    out[:, -1] = 1
    for i, x in enumerate(prompts):
        bucket, sign = hashed(np.unique(x), buckets)
        s = np.bincount(bucket, weights=sign, minlength=buckets)
        if s.any():
            out[i, :-1] = s / np.linalg.norm(s)
    return out


def test_hash_is_knuths_multiplicative_hash() -> None:
    ids = np.array([0, 1, 7, 31999, 2**31 - 1])
    bucket, sign = hashed(ids, 4096)
    h = [(int(i) * 2654435761) % 2**32 for i in ids]
    assert bucket.tolist() == [v % 4096 for v in h]
    assert sign.tolist() == [-1 if v >> 31 else 1 for v in h]


def test_counts_are_the_gram_matrix_of_the_definition() -> None:
    prompts = _random_prompts(np.random.default_rng(0), 80)
    counts = tfidf_counts(prompts, B)
    F = _features(prompts, B)
    dense = np.zeros((B + 1) ** 2)
    dense[counts.keys] = counts.values / UNIT
    upper = np.triu(F.T @ F)
    # per prompt, g̃g̃ᵀ to a relative 2**-32·‖s‖² (the integer weights): far below 1e-6
    np.testing.assert_allclose(dense.reshape(B + 1, B + 1), upper, atol=1e-6)
    assert gram_entry(counts, B, B) == len(prompts) * UNIT
    touched = [np.unique(hashed(np.unique(x), B)[0]) for x in prompts]
    np.testing.assert_array_equal(counts.df, np.bincount(np.concatenate(touched),
                                                         minlength=B))


def test_a_prompt_whose_tokens_cancel_has_its_bias_only() -> None:
    bucket, sign = hashed(np.arange(2000), B)
    a = 0
    b = next(i for i in range(1, 2000) if bucket[i] == bucket[a] and sign[i] != sign[a])
    counts = tfidf_counts([np.array([a, b, a])], B)
    assert counts.keys.tolist() == [B * (B + 1) + B]  # the bias entry alone
    assert counts.df[bucket[a]] == 1  # the bucket was touched all the same
    table = TfidfScores.build(np.ones((B + 1, 2)), np.ones(B), 2000)
    u = np.array([a, b])
    np.testing.assert_array_equal(table.prompt_score(table.rows[u].sum(axis=0), u), 0)


def test_integer_sums_add_and_subtract_exactly() -> None:
    prompts = _random_prompts(np.random.default_rng(1), 120)
    whole = tfidf_counts(prompts, B)
    first, rest = tfidf_counts(prompts[:50], B), tfidf_counts(prompts[50:], B)
    for got in (sum_counts([first, rest]), sum_counts([rest, first])):
        for g, w in zip(got, whole, strict=True):
            np.testing.assert_array_equal(g, w)
    back = sum_counts([whole, rest], [1, -1])
    for g, w in zip(back, first, strict=True):
        np.testing.assert_array_equal(g, w)


# 1024 buckets for 300 token ids: most are untouched, and the solve leaves them out.
@pytest.mark.parametrize("B", [B, 1024])
def test_solve_is_the_balanced_ridge_on_tfidf_features(B: int) -> None:
    rng = np.random.default_rng(2)
    groups = [_random_prompts(rng, n) for n in (30, 70, 45)]
    W, idf = solve_tfidf([tfidf_counts(g, B) for g in groups], [len(g) for g in groups])
    prompts = [x for g in groups for x in g]
    N = len(prompts)
    df = np.zeros(B)
    for x in prompts:
        df[np.unique(hashed(np.unique(x), B)[0])] += 1
    np.testing.assert_allclose(idf, np.log((N + 1) / (df + 1)) + 1)
    F = _features(prompts, B) * np.append(idf, 1)
    y = np.repeat(np.arange(3), [len(g) for g in groups])
    w = 1 / np.array([len(g) for g in groups])[y]
    A = F.T @ (w[:, None] * F) + 1e-2 * np.eye(B + 1)
    want = np.linalg.solve(A, F.T @ (w[:, None] * np.eye(3)[y]))
    np.testing.assert_allclose(W, want, atol=1e-7)
    # and a prompt's score through the per-vocabulary tables is f W
    table = TfidfScores.build(W, idf, 300, weight=2.0)
    x = prompts[5]
    u = np.unique(x)
    np.testing.assert_allclose(table.prompt_score(table.rows[u].sum(axis=0), u) + table.bias,
                               2 * (F[5] @ W), atol=1e-12)


@pytest.fixture(scope="module")
def tfidf_stats(emb) -> dict[str, DomainStats]:
    return {d: compute_stats(emb, texts, domain=d, tfidf_buckets=B)
            for d, texts in CORPORA.items()}


def test_router_add_and_remove_equal_a_refit(emb, tfidf_stats) -> None:
    names = sorted(tfidf_stats)
    prompts = ["What is 3 + 4?", "def f(x): return x", "The court ruled.", "hello"]
    full = Router(emb, tfidf=4.0).fit_stats({n: tfidf_stats[n] for n in names})
    grown = Router(emb, tfidf=4.0).fit_stats({n: tfidf_stats[n] for n in names[:-1]})
    grown.add_expert(names[-1], tfidf_stats[names[-1]])
    np.testing.assert_array_equal(grown.predict_proba(prompts), full.predict_proba(prompts))
    full.remove_expert(names[-1])
    fewer = Router(emb, tfidf=4.0).fit_stats({n: tfidf_stats[n] for n in names[:-1]})
    np.testing.assert_array_equal(full.predict_proba(prompts), fewer.predict_proba(prompts))


def test_shards_merge_to_the_central_count(emb) -> None:
    texts = [t for group in CORPORA.values() for t in group]
    whole = compute_stats(emb, texts, domain="all", tfidf_buckets=B)
    parts = [compute_stats(emb, texts[i::3], domain="all", tfidf_buckets=B) for i in range(3)]
    merged = merge(parts)["all"]
    for g, w in zip(merged.tfidf, whole.tfidf, strict=True):
        np.testing.assert_array_equal(g, w)
    rest = merged - parts[0]
    for g, w in zip(rest.tfidf, (parts[1] + parts[2]).tfidf, strict=True):
        np.testing.assert_array_equal(g, w)


def test_the_ridge_is_summed_in_name_order(emb, tfidf_stats) -> None:
    """The Gram matrices were summed in the order the experts were given: an expert removed
    and added back, or the files given in another order, moved the scoring table by ~1e-13
    (the other tables are bit for bit the same either way)."""
    names = sorted(tfidf_stats)
    forward = Router(emb, tfidf=3.0).fit_stats([tfidf_stats[n] for n in names])
    backward = Router(emb, tfidf=3.0).fit_stats([tfidf_stats[n] for n in reversed(names)])
    again = Router(emb, tfidf=3.0).fit_stats([tfidf_stats[n] for n in names])
    again.add_expert(names[0], again.remove_expert(names[0]))
    for other in (backward, again):
        columns = [other.experts.index(n) for n in forward.experts]
        for table in ("rows", "bias"):
            np.testing.assert_array_equal(
                getattr(other._fitted.table.tfidf, table)[..., columns],
                getattr(forward._fitted.table.tfidf, table))


def test_the_blend_is_the_geo_mean_plus_the_weighted_ridge(emb, tfidf_stats) -> None:
    prompts = ["What is 3 + 4?", "def f(x): return x", "The court ruled on the appeal."]
    plain = Router(emb).fit_stats(tfidf_stats)
    blend = Router(emb, tfidf=3.0).fit_stats(tfidf_stats)
    parts = [tfidf_stats[n].tfidf for n in blend.experts]
    W, idf = solve_tfidf(parts, [tfidf_stats[n].n_prompts for n in blend.experts])
    for p in prompts:
        ids = blend.encode([p])[0]
        F = _features([ids], B)[0] * np.append(idf, 1)
        # the geo scores are a softmax: their log is the mean log-likelihood up to a shift
        z = np.log(select([ids], plain._fitted.table, selector="geo").scores[0]) \
            + 3.0 * (F @ W)
        want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        got = blend.route(p, explain=True).scores
        np.testing.assert_allclose([got[e] for e in blend.experts], want, atol=1e-9)


def test_the_blends_evidence_adds_the_ridges_share(emb, tfidf_stats) -> None:
    """With the TF-IDF ridge, each token's lead holds its ridge row too (over the prompt's
    norm), and the ridge's bias is a term of its own: still exactly what decided."""
    blend = Router(emb, tfidf=4.0).fit_stats(tfidf_stats)
    for p in ["What is 3 + 4?", "def f(x): return x", "The court ruled on the appeal.", "x"]:
        assert_evidence_decides(blend, p)


def test_one_prompt_and_a_batch_give_the_same_digits(emb, tfidf_stats) -> None:
    router = Router(emb, tfidf=4.0).fit_stats(tfidf_stats)
    prompts = ["What is 3 + 4?", "def f(x): return x", "The court ruled.", "x x x x", "a b"]
    batch = router.route_batch(prompts)
    for p, d in zip(prompts, batch, strict=True):
        assert router.route(p).confidence == d.confidence


def test_router_files_keep_the_statistics(emb, tfidf_stats, tmp_path: Path) -> None:
    router = Router(emb, tfidf=4.0).fit_stats(tfidf_stats)
    path = tmp_path / "r.safetensors"
    router.save(path)
    loaded = Router.load(path)
    assert loaded.config.tfidf == 4.0
    for name, s in router.stats.items():
        for g, w in zip(loaded.stats[name].tfidf, s.tfidf, strict=True):
            np.testing.assert_array_equal(g, w)
    prompts = ["What is 3 + 4?", "def f(x): return x"]
    np.testing.assert_array_equal(loaded.predict_proba(prompts), router.predict_proba(prompts))
    # an expert without them is saved without them, the others keep theirs
    plain = Router(emb).fit_stats({**tfidf_stats, "law": dataclasses.replace(
        tfidf_stats["law"], tfidf=None)})
    plain.save(path)
    again = Router.load(path)
    assert again.stats["law"].tfidf is None and again.stats["math"].tfidf is not None


def test_statistics_files_round_trip_and_refuse_damage(tfidf_stats, tmp_path: Path) -> None:
    s = tfidf_stats["math"]
    path = tmp_path / "m.stats"
    s.save(path)
    loaded = DomainStats.load(path)
    for g, w in zip(loaded.tfidf, s.tfidf, strict=True):
        np.testing.assert_array_equal(g, w)
    tensors, meta = read_safetensors(path)
    df, keys, values = (tensors[k] for k in ("tfidf_df", "tfidf_keys", "tfidf_values"))
    bias = int(np.flatnonzero(keys == B * (B + 1) + B)[0])
    diagonal = int(np.flatnonzero(keys // (B + 1) == keys % (B + 1))[0])
    damaged = {
        "bias": {"tfidf_values": _with(values, bias, values[bias] + 1)},
        "diagonal": {"tfidf_values": _with(values, diagonal, -values[diagonal])},
        "df": {"tfidf_df": _with(df, 0, s.n_prompts + 1)},
        "order": {"tfidf_keys": keys[::-1].copy(), "tfidf_values": values[::-1].copy()},
        "lower": {"tfidf_keys": _with(keys, 0, (keys[0] % (B + 1)) * (B + 1) + 0)
                  if keys[0] % (B + 1) else keys + 0},
    }
    for name, change in damaged.items():
        write_safetensors(tmp_path / f"{name}.stats", {**tensors, **change}, meta)
        if name == "lower" and not keys[0] % (B + 1):
            continue
        with pytest.raises(StatsFormatError, match="TF-IDF statistics are no sums"):
            DomainStats.load(tmp_path / f"{name}.stats")
    partial = {k: v for k, v in tensors.items() if k != "tfidf_keys"}
    write_safetensors(tmp_path / "partial.stats", partial, meta)
    with pytest.raises(StatsFormatError, match="only some of the tensors"):
        DomainStats.load(tmp_path / "partial.stats")


def _with(array: np.ndarray, index: int, value: int) -> np.ndarray:
    out = array.copy()
    out[index] = value
    return out


def test_refusals(emb, tfidf_stats, toy_stats) -> None:
    with pytest.raises(StatsFormatError, match=r"no TF-IDF statistics in .*--tfidf-buckets "
                                               r"4096.*--tfidf none"):
        Router(emb, "tfidf").fit_stats(toy_stats)
    more = compute_stats(emb, ["What is 1 + 1?"], domain="math")
    with pytest.raises(StatsFormatError, match=r"no TF-IDF statistics.*same --tfidf-buckets.*"
                                               r"merge --no-tfidf"):
        _ = tfidf_stats["math"] + more
    merged = merge([tfidf_stats["math"], more], drop_tfidf=True)["math"]
    assert merged.tfidf is None and merged.n_prompts == tfidf_stats["math"].n_prompts + 1
    other = compute_stats(emb, ["What is 1 + 1?"], domain="math", tfidf_buckets=32)
    with pytest.raises(StatsFormatError, match="different bucket counts"):
        _ = tfidf_stats["math"] + other
    with pytest.raises(StatsFormatError, match="different bucket counts"):
        Router(emb, tfidf=4.0).fit_stats({**tfidf_stats, "math": other})
    for bad in (0, -1.0, float("nan"), True, "4"):
        with pytest.raises(IR3DEError, match="TF-IDF weight"):
            RouterConfig(tfidf=bad)
    with pytest.raises(IR3DEError, match="tfidf_buckets"):
        compute_stats(emb, ["x"], domain="m", tfidf_buckets=0)
    assert RouterConfig(tfidf=4.0, selector="avg").ignored(["tfidf"]) == \
        ("tfidf", "selector", "geo")
    assert RouterConfig.preset("paper").ignored(["tfidf"]) == ("tfidf", "model", "nb")


def test_a_weight_overflowing_the_table_is_refused(emb, tfidf_stats) -> None:
    # every prompt went to the first expert with confidence NaN
    with pytest.raises(IR3DEError, match=r"the TF-IDF weight 1e\+308 is too large: the "
                                         r"TF-IDF table is not finite"):
        Router(emb, tfidf=1e308).fit_stats(tfidf_stats)


def test_fit_counts_them_when_the_setting_asks(emb) -> None:
    texts = [t for group in CORPORA.values() for t in group]
    labels = [d for d, group in CORPORA.items() for _ in group]
    router = Router(emb, "tfidf").fit(texts, labels)
    assert all(s.tfidf is not None and s.tfidf.buckets == 4096 for s in router.stats.values())
    for preset in ("default", "identity"):
        assert RouterConfig.preset(preset).tfidf_buckets is None
        assert all(s.tfidf is None for s in Router(emb, preset).fit(texts, labels).stats.values())


def test_signatures_cover_them(tfidf_stats, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from ir3de.signing import digest

    s = tfidf_stats["math"]
    changed = dataclasses.replace(s, tfidf=TfidfCounts(s.tfidf.df, s.tfidf.keys,
                                                       _with(s.tfidf.values, 0,
                                                             s.tfidf.values[0] + 2)))
    assert digest(changed) != digest(s)
    assert digest(dataclasses.replace(s, tfidf=None)) != digest(s)


def _cli(capsys, *argv: object) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_counts_builds_and_refuses(tmp_path: Path, capsys) -> None:
    files = []
    for domain, texts in CORPORA.items():
        corpus = tmp_path / f"{domain}.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        files.append(tmp_path / f"{domain}.stats")
        code, err = _cli(capsys, "stats", corpus, "--domain", domain, "-o", files[-1], "-q",
                         "--tfidf-buckets", B)
        assert code == 0, err
    router = tmp_path / "router.safetensors"
    code, err = _cli(capsys, "build", *files, "-o", router, "--preset", "tfidf")
    assert code == 0, err
    assert Router.load(router).config.tfidf == 4.0
    # inspect says what the router reads and what a file holds (it showed neither)
    assert main(["inspect", str(router)]) == 0
    assert "  TF-IDF ridge weight=4  " in capsys.readouterr().out
    assert main(["inspect", str(files[0])]) == 0
    assert f", TF-IDF statistics ({B} buckets)" in capsys.readouterr().out
    assert main(["inspect", str(files[0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tfidf_buckets"] == B
    code, err = _cli(capsys, "build", *files, "-o", router, "--force", "--tfidf", "2",
                     "--selector", "avg")
    assert code != 0 and "--tfidf" in err and "geo" in err
    with pytest.raises(SystemExit) as exit_:
        _cli(capsys, "stats", tmp_path / "math.jsonl", "--domain", "math", "-o",
             tmp_path / "x.stats", "--tfidf-buckets", "0")
    assert exit_.value.code == 2 and "expected 1 to" in capsys.readouterr().err
    plain = tmp_path / "plain.stats"
    code, err = _cli(capsys, "stats", tmp_path / "math.jsonl", "--domain", "math", "-o", plain,
                     "-q")
    assert code == 0, err
    assert DomainStats.load(plain).tfidf is None  # counted on request only
    code, err = _cli(capsys, "build", plain, files[1], "-o", tmp_path / "r2.safetensors",
                     "--preset", "tfidf")
    assert code != 0 and "no TF-IDF statistics" in err
    assert not (tmp_path / "r2.safetensors").exists()
    code, err = _cli(capsys, "build", plain, files[1], "-o", tmp_path / "r2.safetensors")
    assert code == 0, err
    # one shard without them is merged with one with them only by leaving them out
    both, more = tmp_path / "both.stats", tmp_path / "more.jsonl"
    more.write_text(json.dumps({"text": "What is 1 + 1?"}) + "\n")
    code, err = _cli(capsys, "stats", more, "--domain", "math", "-o", both, "-q",
                     "--tfidf-buckets", B)
    assert code == 0 and DomainStats.load(both).tfidf.buckets == B, err
    code, err = _cli(capsys, "merge", plain, both, "-o", tmp_path / "m.stats")
    assert code != 0 and "merge --no-tfidf" in err
    code, err = _cli(capsys, "merge", plain, both, "-o", tmp_path / "m.stats", "--no-tfidf")
    assert code == 0 and DomainStats.load(tmp_path / "m.stats").tfidf is None, err
