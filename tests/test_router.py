"""The router: exact expert add/remove, persistence, settings, errors, and accuracy on the
Reasoning data."""

from __future__ import annotations

import dataclasses
import pickle
import re
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPORA, assert_evidence_decides, jsonl_texts, write_raw_safetensors

from ir3de import (
    DomainStats,
    Embedder,
    EmptyInputError,
    ExpertError,
    FingerprintMismatchError,
    IR3DEError,
    NotFittedError,
    Router,
    RouterConfig,
    StatsFormatError,
    compute_stats,
    load_embedder,
)
from ir3de.data import reasoning_split
from ir3de.embedding import DEFAULT_MAX_TOKENS
from ir3de.router import read_router_meta
from ir3de.solver import (
    DEFAULT_ALPHA,
    DEFAULT_PAIRS,
    DEFAULT_SKIPS,
    DEFAULT_SPELLING,
    DEFAULT_SPELLING_PRIOR,
    FEW_ALPHA,
    FEW_PAIRS,
    FEW_SPELLING_FLOOR,
    FEW_SPELLING_PRIOR,
    MU_GRID,
    SPELLING_BETA,
    Spelling,
    choose_identity_mu,
)
from ir3de.statistics import pair_keys, split_pairs, streaming_stats
from ir3de.store import read_safetensors, write_safetensors

PROMPTS = ["What is 15 divided by 3?", "def square(x):\n    return x * x",
           "The appellate court reversed the judgment.", "¿Qué planeta es el más grande?",
           "Compute 3 + 4 and explain.", "import os\nprint(os.getcwd())"]


def fit(emb: Embedder, stats: dict[str, DomainStats], names: list[str], **settings) -> Router:
    """A router on ``names``; the ridge model unless ``settings`` name another."""
    return Router(emb, **{"model": "ridge", **settings}).fit_stats({n: stats[n] for n in names})


def assert_same_state(a: Router, b: Router) -> None:
    assert a.experts == b.experts
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a._state.table.probs, b._state.table.probs)
    for kind in ("pairs", "skips"):
        pa, pb = getattr(a._state.table, kind), getattr(b._state.table, kind)
        assert (pa is None) == (pb is None)
        if pa is not None:
            np.testing.assert_array_equal(pa.keys, pb.keys)
            for name in ("base", "offset", "indptr", "cols", "delta"):
                np.testing.assert_array_equal(getattr(pa, name), getattr(pb, name))
    ua, ub = a._state.table.unseen, b._state.table.unseen
    assert (ua is None) == (ub is None)
    if ua is not None:
        np.testing.assert_array_equal(ua, ub)


# ------------------------------------------------------------------ experts


@pytest.mark.parametrize("preset", ["dense", "paper", "default"])
def test_routers_from_merged_shards_are_a_central_fits_to_the_bit(emb: Embedder,
                                                                  preset: str) -> None:
    """Every preset reads only the exact integer counts (the ridge presets form A and b
    from them), so shards counted apart and merged give the very router of one count; A
    summed from the shards' own float A used to match it to rounding only."""
    from ir3de import merge

    whole, shards = {}, []
    for domain, texts in CORPORA.items():
        whole[domain] = compute_stats(emb, texts, domain=domain)
        shards += [compute_stats(emb, texts[i::3], domain=domain) for i in range(3)]
    config = RouterConfig.preset(preset)
    central = Router(emb, config).fit_stats(whole)
    merged = Router(emb, config).fit_stats(merge(shards))
    np.testing.assert_array_equal(merged.W, central.W)
    # (b of the shards is a float sum, not the central b to the bit: the router does not
    # read it.)
    assert all(s.A is None for s in merged.stats.values())


@pytest.mark.parametrize("balance", [False, True])
def test_add_then_remove_restores_w_exactly(emb: Embedder, toy_stats, balance: bool) -> None:
    router = fit(emb, toy_stats, ["math", "coding", "law"], balance=balance)
    before = router.W.copy()
    router.add_expert("multilingual", toy_stats["multilingual"])
    assert router.experts == ["math", "coding", "law", "multilingual"]
    assert router.W.shape == (emb.dim + 1, 4)
    assert not np.array_equal(router.W[:, :3], before)  # the others' columns did move
    removed = router.remove_expert("multilingual")
    assert removed is toy_stats["multilingual"]
    assert router.experts == ["math", "coding", "law"]
    assert np.array_equal(router.W, before)


@pytest.mark.parametrize("balance", [False, True])
def test_add_expert_equals_full_refit(emb: Embedder, toy_stats, balance: bool) -> None:
    router = fit(emb, toy_stats, ["math", "coding", "law"], balance=balance)
    router.add_expert("multilingual", toy_stats["multilingual"])
    same_order = fit(emb, toy_stats, ["math", "coding", "law", "multilingual"], balance=balance)
    assert_same_state(router, same_order)  # bitwise
    other_order = fit(emb, toy_stats, ["multilingual", "law", "math", "coding"],
                      balance=balance)
    perm = [other_order.experts.index(e) for e in router.experts]
    np.testing.assert_allclose(other_order.W[:, perm], router.W, rtol=1e-12, atol=1e-14)
    assert router.predict(PROMPTS).tolist() == other_order.predict(PROMPTS).tolist()


@pytest.mark.parametrize("balance", [False, True])
def test_remove_expert_equals_refit_without_it(emb: Embedder, toy_stats,
                                               balance: bool) -> None:
    router = fit(emb, toy_stats, list(toy_stats), balance=balance)
    router.remove_expert("coding")
    assert_same_state(router, fit(emb, toy_stats, ["math", "law", "multilingual"],
                                  balance=balance))
    router.remove_expert("math")
    assert_same_state(router, fit(emb, toy_stats, ["law", "multilingual"], balance=balance))


def test_add_expert_under_a_new_name(emb: Embedder, toy_stats) -> None:
    router = fit(emb, toy_stats, ["math", "coding"])
    router.add_expert("legal", toy_stats["law"])
    assert router.experts == ["math", "coding", "legal"]
    assert router.stats["legal"].domain == "legal"
    renamed = {"math": toy_stats["math"], "coding": toy_stats["coding"],
               "legal": toy_stats["law"]}
    assert_same_state(router, Router(emb, model="ridge").fit_stats(renamed))


def test_expert_errors(emb: Embedder, toy_stats) -> None:
    router = fit(emb, toy_stats, ["math", "coding"])
    W = router.W
    with pytest.raises(ExpertError, match=r"unknown expert 'law'.*math, coding"):
        router.remove_expert("law")
    with pytest.raises(ExpertError, match="already exists"):
        router.add_expert("math", toy_stats["math"])
    with pytest.raises(ExpertError, match="invalid domain name"):
        router.add_expert(" law", toy_stats["law"])
    foreign = dataclasses.replace(toy_stats["law"], fingerprint="f" * 64, source="foreign.st")
    with pytest.raises(FingerprintMismatchError, match=r"foreign\.st"):
        router.add_expert("law", foreign)
    assert router.W is W and router.experts == ["math", "coding"]  # failed calls change nothing
    with pytest.raises(ValueError, match="read-only"):  # (a write stuck, moving no decision)
        W[0, 0] = 0.0
    router.remove_expert("coding")
    with pytest.raises(ExpertError, match="only expert"):
        router.remove_expert("math")
    assert router.experts == ["math"]
    with pytest.raises(ExpertError, match="duplicate expert 'math'"):
        Router(emb).fit_stats([toy_stats["math"], toy_stats["math"]])
    with pytest.raises(IR3DEError, match="at least one expert"):
        Router(emb).fit_stats([])


def test_identical_statistics_under_two_names_are_refused(emb: Embedder, toy_stats,
                                                          tmp_path: Path) -> None:
    """One corpus as two experts would tie on every prompt: refused by content (a copy of
    the file, the same statistics renamed), by fit_stats and add_expert alike."""
    math = toy_stats["math"]
    math.save(tmp_path / "math.st")
    copy = DomainStats.load(tmp_path / "math.st").renamed("arithmetic")  # another object
    with pytest.raises(ExpertError, match=r"^identical statistics: experts 'math' \(<memory>\) "
                                          r"and 'arithmetic' \(.*math\.st\) hold exactly the "
                                          r"same counts \(the same corpus twice\?\)"):
        Router(emb).fit_stats([math, toy_stats["law"], copy])
    with pytest.raises(ExpertError, match="identical statistics"):
        Router(emb, "paper").fit_stats({"math": math, "again": math})
    with pytest.raises(ExpertError, match="identical statistics"):  # the texts of two labels
        Router(emb).fit(["What is 2 + 2?", "import os"] * 2, ["a", "b", "c", "d"])
    router = fit(emb, toy_stats, ["math", "coding"])
    W = router.W
    with pytest.raises(ExpertError, match=r"^identical statistics: the new expert 'arithmetic' "
                                          r"holds exactly the counts of expert 'math' \(the "
                                          r"same corpus twice\?\); to rename 'math', remove it "
                                          r"first$"):
        router.add_expert("arithmetic", copy)
    assert router.W is W and router.experts == ["math", "coding"]
    # Different corpora of one domain are different experts, whatever their names.
    halves = [compute_stats(emb, part, domain="math")
              for part in (CORPORA["math"][:3], CORPORA["math"][3:])]
    assert Router(emb).fit_stats({"m1": halves[0], "m2": halves[1]}).experts == ["m1", "m2"]


def test_routers_saved_with_identical_experts_still_load(emb: Embedder, toy_stats,
                                                         tmp_path: Path, monkeypatch) -> None:
    """A router file built before identical experts were refused loads (and serves) as
    before; only building or changing one refuses them."""
    with monkeypatch.context() as patch:
        patch.setattr("ir3de.router.find_identical", lambda stats, **_: None)
        old = Router(emb).fit_stats({"law": toy_stats["law"], "legal": toy_stats["law"]})
    old.save(tmp_path / "old.st")
    loaded = Router.load(tmp_path / "old.st")
    assert loaded.experts == ["law", "legal"]
    loaded.add_expert("math", toy_stats["math"])  # a new expert is compared with the others
    with pytest.raises(ExpertError, match="the new expert 'again' holds exactly the counts "
                                          "of expert 'law'"):
        loaded.add_expert("again", toy_stats["law"])
    loaded.remove_expert("legal")
    assert loaded.experts == ["law", "math"]


def test_nb_reads_no_balance_setting() -> None:
    """The nb model always weighs every domain the same: balance is a ridge setting, so a
    front end refuses it for nb like λ (balance=False is refused by the config itself)."""
    assert RouterConfig().ignored(["balance"]) == ("balance", "model", "ridge")
    assert RouterConfig.preset("identity").ignored(["balance"]) is None
    with pytest.raises(IR3DEError, match="balance=False applies to model='ridge' only"):
        RouterConfig(balance=False)
    # a preset's own balance=False gives way to the nb model; one named is kept, so refused
    assert RouterConfig.preset("paper", model="nb").balance is True
    with pytest.raises(IR3DEError, match="balance=False applies to model='ridge' only"):
        RouterConfig.preset("paper", model="nb", balance=False)


def test_pairs_are_read_by_the_geo_selector_only() -> None:
    """Only geo pools pair log-likelihoods: a pair mass given with a voting selector
    would change nothing, so front ends refuse it; turning pairs off is always read."""
    assert RouterConfig().ignored(["pairs"]) is None
    for selector in ("avg", "topk", "all"):
        config = RouterConfig(selector=selector)
        assert config.ignored(["pairs"]) == ("pairs", "selector", "geo")
        assert config.with_settings(pairs=None).ignored(["pairs"]) is None
    assert RouterConfig.preset("dense").ignored(["pairs"]) == ("pairs", "model", "nb")


def test_statistics_with_different_token_caps_are_refused(emb: Embedder, toy_stats) -> None:
    """Experts counted with different caps saw different parts of long prompts: neither a
    fit nor an added expert may mix them (the same check as merge)."""
    capped = compute_stats(emb, CORPORA["law"], domain="law", max_tokens=8)
    capped = dataclasses.replace(capped, source="capped.st")
    with pytest.raises(StatsFormatError, match=r"token caps differ: <memory> \(math\) caps "
                                               r"prompts at 1024 tokens but capped\.st \(law\) "
                                               r"at 8"):
        Router(emb).fit_stats([toy_stats["math"], capped])
    router = Router(emb).fit_stats([toy_stats["math"], toy_stats["coding"]])
    W = router.W
    with pytest.raises(StatsFormatError, match=r"capped\.st \(law\) at 8"):
        router.add_expert("law", capped)
    assert router.W is W and router.experts == ["math", "coding"]
    # The routing cap is a setting, not a property of the statistics: any value goes.
    assert Router(emb, max_tokens=8).fit_stats([toy_stats["math"], toy_stats["law"]])


def test_the_routing_cap_is_the_counted_cap_unless_set(emb: Embedder, tmp_path: Path) -> None:
    """fit_stats routed 1,024 tokens whatever the statistics counted, where ir3de build took
    their cap: the same files gave two routers (42 of 164 decisions apart at a cap of 64)."""
    long = {"math": ["What is 2 + 2? " * 40, "Solve x + 1 = 3."],
            "code": ["def f(x):\n    return x\n" * 30, "import os"]}
    stats = [compute_stats(emb, texts, domain=d, max_tokens=12) for d, texts in long.items()]
    router = Router(emb).fit_stats(stats)
    assert Router(emb).config.max_tokens is None and Router(emb).max_tokens == 1024
    assert router.config.max_tokens == router.max_tokens == 12
    prompt = "What is 7 + 5? " * 3 + "def g(y):\n    return y\n" * 5
    assert router.encode([prompt])[0].size == 12
    assert router.route(prompt) == Router(emb, max_tokens=12).fit_stats(stats).route(prompt)
    assert repr(router) == "Router(embedder='wordllama-l2_supercat-256', experts=['math', " \
                           "'code'])"
    # a cap of its own stays; None again is the counted cap
    assert router.set_params(max_tokens=30).max_tokens == 30
    assert "max_tokens=30" in repr(router)
    assert router.set_params(max_tokens=None).max_tokens == 12
    # saved as the number it routes with
    router.save(tmp_path / "r.safetensors")
    assert Router.load(tmp_path / "r.safetensors").max_tokens == 12
    # fit counts 1024 tokens, and the router reads as many
    assert Router(emb).fit(["a b", "c d"], ["x", "y"]).config.max_tokens == 1024
    # the parameters stay the user's: None, which the next fit counts anew (the first
    # fit's number was kept as if set: a refit on statistics of another cap read 12, and
    # a clone, or fit(texts), counted 12 tokens of each text)
    assert router.get_params()["max_tokens"] is None
    stats30 = [compute_stats(emb, texts, domain=d, max_tokens=30) for d, texts in long.items()]
    assert router.fit_stats(stats30).max_tokens == 30
    assert router.fit(long["math"] + long["code"], ["math", "math", "code", "code"]
                      ).stats["math"].max_tokens == 1024
    from sklearn.base import clone

    assert clone(router).fit_stats(stats).max_tokens == 12
    # and so do a loaded router's (its file said 12 as if the user had set it: a clone of
    # it, or fit(texts), counted 12 tokens of each text); a cap of the user's stays one
    router.fit_stats(stats).save(tmp_path / "counted.safetensors")
    loaded = Router.load(tmp_path / "counted.safetensors")
    assert loaded.get_params()["max_tokens"] is None and loaded.max_tokens == 12
    assert clone(loaded).fit(long["math"] + long["code"], ["math", "math", "code", "code"]
                             ).max_tokens == 1024
    # an expert added or removed keeps it so (they re-solved from the solved config, whose
    # cap is a number)
    extra = compute_stats(emb, ["What is 9 - 4?"], domain="more", max_tokens=12)
    for change in (lambda: loaded.add_expert("more", extra),
                   lambda: loaded.remove_expert("more")):
        change()
        loaded.save(tmp_path / "changed.safetensors")
        again = Router.load(tmp_path / "changed.safetensors")
        assert again.get_params()["max_tokens"] is None and again.max_tokens == 12
    router.set_params(max_tokens=12).save(tmp_path / "set.safetensors")
    assert Router.load(tmp_path / "set.safetensors").get_params()["max_tokens"] == 12


def test_unfitted_router(emb: Embedder) -> None:
    router = Router(emb)
    for call in (lambda: router.W, lambda: router.experts, lambda: router.route("hi"),
                 lambda: router.remove_expert("x"), lambda: router.describe(),
                 lambda: router.predict(["hi"]), lambda: router.classes_):
        # one error for all, an IR3DEError (the CLI's one-line message) and an
        # AttributeError (scikit-learn's NotFittedError is one too)
        with pytest.raises(NotFittedError, match="no experts yet") as info:
            call()
        assert isinstance(info.value, IR3DEError) and isinstance(info.value, AttributeError)
    assert not hasattr(router, "classes_")  # scikit-learn's test for a fitted classifier
    router.set_params(lam=0.5)  # allowed before fitting
    assert router.config.lam == 0.5


def test_fit_from_texts_equals_fit_from_stats(emb: Embedder, toy_stats) -> None:
    texts = [t for group in CORPORA.values() for t in group]
    labels = [d for d, group in CORPORA.items() for _ in group]
    # fit orders the experts by name; fit_stats keeps the given order
    by_name = {name: toy_stats[name] for name in sorted(toy_stats)}
    assert_same_state(Router(emb).fit(texts, labels), Router(emb).fit_stats(by_name))
    with pytest.raises(IR3DEError, match="labels"):
        Router(emb).fit(texts, labels[:-1])


def test_stats_from_another_embedder_are_rejected(emb: Embedder, toy_stats,
                                                  make_model_folder) -> None:
    folder, _ = make_model_folder()
    tiny = load_embedder(folder)
    with pytest.raises(FingerprintMismatchError, match=tiny.name):
        Router(tiny).fit_stats(toy_stats)
    mixed = [toy_stats["math"], compute_stats(tiny, ["hello world"], domain="greeting")]
    with pytest.raises(FingerprintMismatchError):
        Router(emb).fit_stats(mixed)


def test_statistics_of_another_size_are_refused(emb: Embedder, toy_stats) -> None:
    """The fingerprint names the embedder, not the arrays: statistics whose arrays do not
    fit its vocabulary or width are refused by every model, not left to numpy."""
    math = toy_stats["math"]
    pad = lambda a: np.concatenate([a, np.zeros(5, a.dtype)])  # noqa: E731
    long = dataclasses.replace(math, counts=pad(math.counts), doc_counts=pad(math.doc_counts),
                               pairs=None, source="long.st")
    coding = dataclasses.replace(toy_stats["coding"], pairs=None)
    for preset in ("default", "unigram", "identity", "dense", "paper"):
        with pytest.raises(StatsFormatError, match=r"long\.st \(math\): token counts cover "
                                                   r"32005 token ids, the embedder's "
                                                   r"vocabulary 32000"):
            Router(emb, preset, **({"pairs": None} if preset == "default" else {})
                   ).fit_stats([long, coding])
    h = emb.dim + 2
    A = np.eye(h)
    A[-1, -1] = math.n_tokens
    wide = dataclasses.replace(math, A=A, b=np.r_[np.zeros(h - 1), math.n_tokens],
                               source="wide.st")
    with pytest.raises(StatsFormatError, match=r"wide\.st \(math\): A \(258, 258\) and b "
                                               r"\(258,\) do not fit embedding width 256"):
        Router(emb, "dense").fit_stats([wide, toy_stats["coding"]])


def test_numpy_labels_make_plain_string_experts(emb: Embedder) -> None:
    texts = [t for group in CORPORA.values() for t in group]
    labels = np.array([d for d, group in CORPORA.items() for _ in group])
    router = Router(emb).fit(texts, labels)
    assert all(type(e) is str for e in router.experts)
    assert type(router.route("What is 2 + 2?").expert) is str


def test_wrong_types_for_paths_and_names(toy_router: Router) -> None:
    for call, message in ((lambda: toy_router.save(None), "Router.save takes a file path"),
                          (lambda: Router.load(5), "Router.load takes a file path")):
        with pytest.raises(IR3DEError, match=rf"{message} \(str or os.PathLike\), got"):
            call()
    with pytest.raises(ExpertError, match=r"unknown expert \['math'\]; experts are"):
        toy_router.remove_expert(["math"])


def test_a_refused_new_expert_is_named_by_its_new_name(emb: Embedder, toy_stats) -> None:
    capped = compute_stats(emb, CORPORA["law"], domain="law", max_tokens=5)
    router = Router(emb).fit_stats([toy_stats["math"], toy_stats["coding"]])
    with pytest.raises(StatsFormatError, match=r"<memory> \(m5\) at 5"):
        router.add_expert("m5", capped)


# ------------------------------------------------------------------ persistence


def test_save_load_round_trip(emb: Embedder, toy_stats, tmp_path: Path) -> None:
    router = Router(emb, RouterConfig.preset("paper", k=7)).fit_stats(toy_stats)
    router.add_expert("legal2", compute_stats(emb, CORPORA["law"][:3], domain="law"))
    router.remove_expert("coding")
    path = tmp_path / "router.safetensors"
    router.save(path)
    loaded = Router.load(path)
    assert loaded.embedder.fingerprint == emb.fingerprint  # reloaded from the recipe
    assert loaded.config == router.config
    assert_same_state(loaded, router)
    for name, s in router.stats.items():
        t = loaded.stats[name]
        np.testing.assert_array_equal(t.A, s.A)
        assert (t.n_tokens, t.n_prompts, t.max_tokens) == (s.n_tokens, s.n_prompts,
                                                           s.max_tokens)
    assert loaded.route_batch(PROMPTS, explain=True) == router.route_batch(PROMPTS, explain=True)
    assert loaded.describe() == router.describe()
    meta = read_router_meta(path)
    assert [e["name"] for e in meta["experts"]] == router.experts
    assert meta["fingerprint"] == emb.fingerprint and meta["config"]["k"] == 7
    # Loaded routers keep working as routers: remove gives the refit.
    loaded.remove_expert("legal2")
    assert_same_state(loaded, Router(emb, router.config).fit_stats(
        {n: toy_stats[n] for n in ("math", "law", "multilingual")}))


def test_load_with_a_different_embedder(toy_router: Router, tmp_path: Path,
                                        make_model_folder) -> None:
    path = tmp_path / "router.safetensors"
    toy_router.save(path)
    folder, _ = make_model_folder()
    with pytest.raises(FingerprintMismatchError, match=str(path)):
        Router.load(path, embedder=load_embedder(folder))
    with pytest.raises(FingerprintMismatchError):
        Router.load(path, embedder=folder)


def test_load_with_minilm_mismatch(toy_router: Router, tmp_path: Path,
                                   minilm: Embedder) -> None:
    path = tmp_path / "router.safetensors"
    toy_router.save(path)
    with pytest.raises(FingerprintMismatchError, match="all-MiniLM-L6-v2"):
        Router.load(path, embedder=minilm)


def test_load_rejects_bad_router_files(toy_router: Router, toy_stats, emb: Embedder,
                                       tmp_path: Path) -> None:
    path = tmp_path / "router.safetensors"
    # A version 1 file: every expert's A stored (beside the counts it is formed from).
    Router(emb, toy_router.config).fit_stats(
        [dataclasses.replace(s, A=s.gram(emb)) for s in toy_router.stats.values()]).save(path)
    tensors, meta = read_safetensors(path)
    assert meta["version"] == 1 and tensors["A"].shape[0] == len(toy_router.experts)

    def rewrite(name: str, new_tensors=None, **meta_changes) -> Path:
        out = tmp_path / name
        write_safetensors(out, new_tensors if new_tensors is not None else tensors,
                          {**meta, **meta_changes})
        return out

    nan_A = tensors["A"].copy()
    nan_A[1, 5, 5] = np.nan
    with pytest.raises(StatsFormatError, match="NaN/Inf"):
        Router.load(rewrite("nan.st", {"A": nan_A, "b": tensors["b"]}))
    with pytest.raises(StatsFormatError, match="tensor b does not match 4 experts of width 256"):
        Router.load(rewrite("shape.st", {"A": tensors["A"][:3], "b": tensors["b"][:3]}))
    with pytest.raises(StatsFormatError, match="tensor b does not match"):
        Router.load(rewrite("missing.st", {"A": tensors["A"]}))
    for version in (99, "2", 2.0, True):  # ("2" was said to be unsupported, 2.0 read as 2)
        with pytest.raises(StatsFormatError, match=rf"router format version "
                                                   rf"{re.escape(repr(version))} is not "
                                                   r"supported \(this ir3de reads 1 and 2\)"):
            Router.load(rewrite("version.st", version=version))
    with pytest.raises(StatsFormatError, match="lacks 'experts'"):
        Router.load(_without(tmp_path / "lacks.st", tensors, meta, "experts"))
    with pytest.raises(IR3DEError, match="unknown router setting"):
        Router.load(rewrite("config.st", config={**meta["config"], "temperature": 2.0}))
    # Tampered token counts would silently change the balanced weights.
    experts = [dict(e) for e in meta["experts"]]
    experts[0]["n_tokens"] += 1
    with pytest.raises(StatsFormatError, match="n_tokens"):
        Router.load(rewrite("tampered.st", experts=experts))
    # A statistics file is not a router, and a router is not a statistics file.
    toy_stats["math"].save(tmp_path / "math.st")
    with pytest.raises(StatsFormatError, match="not an ir3de router file"):
        Router.load(tmp_path / "math.st")
    with pytest.raises(StatsFormatError, match="not an ir3de router file"):
        read_router_meta(tmp_path / "math.st")
    with pytest.raises(StatsFormatError, match="not an ir3de statistics file"):
        DomainStats.load(path)
    with pytest.raises(StatsFormatError, match="no such file"):
        Router.load(tmp_path / "absent.st")


def test_version_2_files_keep_A_only_for_experts_without_counts(
        toy_router: Router, toy_stats, emb: Embedder, tmp_path: Path) -> None:
    """A is formed from the token counts, so a router whose experts carry them stores none
    (at h = 8192 it is 537 MB per expert); experts of statistics without counts keep theirs,
    listed in A_experts."""
    path = tmp_path / "router.safetensors"
    toy_router.save(path)
    tensors, meta = read_safetensors(path)
    assert meta["version"] == 2 and "A" not in tensors and "A_experts" not in tensors
    loaded = Router.load(path)
    assert all(s.A is None for s in loaded.stats.values())
    # One expert from statistics without counts (the reference accumulation): its A alone
    # is stored; a ridge router solves from both kinds.
    names = list(toy_stats)
    old = streaming_stats(emb, CORPORA[names[1]], domain=names[1])
    mixed = {**toy_stats, names[1]: old}
    for preset in ("dense", "default"):
        if preset == "default":  # nb reads document frequencies, which old ones lack
            mixed = {**mixed, names[1]: dataclasses.replace(
                toy_stats[names[1]], A=toy_stats[names[1]].gram(emb))}
        router = Router(emb, RouterConfig.preset(preset)).fit_stats(mixed)
        router.save(path)
        tensors, meta = read_safetensors(path)
        assert meta["version"] == 2
        np.testing.assert_array_equal(tensors["A_experts"], [names.index(names[1])])
        assert tensors["A"].shape == (1, emb.dim + 1, emb.dim + 1)
        again = Router.load(path)
        np.testing.assert_array_equal(again.W, router.W)
        assert [s.A is None for s in again.stats.values()] == [n != names[1] for n in names]

    def rewrite(name: str, new_tensors, **meta_changes) -> Path:
        out = tmp_path / name
        write_safetensors(out, new_tensors, {**meta, **meta_changes})
        return out

    with pytest.raises(StatsFormatError, match=r"a\.st: holds no tensor 'A'; a version 2 "
                                               r"router file holds A for the experts that "
                                               r"'A_experts' lists, or for none"):
        Router.load(rewrite("a.st", {k: v for k, v in tensors.items() if k != "A"}))
    with pytest.raises(StatsFormatError, match=r"holds no tensor 'A'; a version 1 router file "
                                               r"holds every expert's A"):
        Router.load(rewrite("v1.st", {k: v for k, v in tensors.items() if k != "A"},
                            version=1))
    with pytest.raises(StatsFormatError, match=r"tensor A does not match 4 experts of width "
                                               r"256; a version 1 router file holds every"):
        Router.load(rewrite("v1b.st", tensors, version=1))
    with pytest.raises(StatsFormatError, match=r"'A_experts' must list distinct expert "
                                               r"indices"):
        Router.load(rewrite("rows.st", {**tensors, "A_experts": np.array([7])}))
    # An A beside token counts (an expert from a version 1 file) is checked against them
    # and never read instead of the A they form: one injected into a dense router moved 50
    # of 464 decisions (QA).
    Router(emb, RouterConfig.preset("dense")).fit_stats(toy_stats).save(path)
    tensors, meta = read_safetensors(path)
    assert "A" not in tensors
    bogus = toy_stats[names[0]].gram(emb).copy()
    bogus[:-1, :-1] *= 100
    injected = {**tensors, "A": bogus[None], "A_experts": np.array([0])}
    with pytest.raises(StatsFormatError, match=rf"inj\.st:{names[0]} \({names[0]}\): A "
                                               r"disagrees with the token counts"):
        Router.load(rewrite("inj.st", injected))


def _expert(meta, **changes) -> list:
    """The metadata's experts with the first one changed (a key set to None is removed)."""
    first = {k: v for k, v in {**meta["experts"][0], **changes}.items() if v is not None}
    return [first, *meta["experts"][1:]]


# Hand-edited or corrupt metadata: each is refused naming the file and the field, not by a
# KeyError/TypeError from inside loading, nor loaded wrongly (duplicates merged silently).
BAD_METADATA = {
    "duplicate": (lambda m: {"experts": [m["experts"][0], m["experts"][0]]},
                  StatsFormatError, r"duplicate expert 'math'"),
    "no name": (lambda m: {"experts": _expert(m, name=None)},
                StatsFormatError, r"field 'experts\[0\]' lacks 'name'"),
    "bad name": (lambda m: {"experts": _expert(m, name=" math")},
                 ExpertError, r"experts\[0\]: invalid domain name"),
    "n_tokens": (lambda m: {"experts": _expert(m, n_tokens="abc")},
                 StatsFormatError,
                 r"'experts\[0\]\.n_tokens' must be an integer from 0 to 2\*\*53, got 'abc'"),
    "n_prompts": (lambda m: {"experts": _expert(m, n_prompts=1.5)},
                  StatsFormatError, r"'experts\[0\]\.n_prompts' must be an integer"),
    "max_tokens": (lambda m: {"experts": _expert(m, max_tokens=False)},
                   StatsFormatError,
                   r"'experts\[0\]\.max_tokens' must be an integer from 1 to 2\*\*53"),
    "expert strings": (lambda m: {"experts": ["math", "coding"]},
                       StatsFormatError, r"'experts\[0\]' must be an object, got 'math'"),
    "no experts": (lambda m: {"experts": []},
                   StatsFormatError, r"'experts' must be a non-empty list"),
    "config null": (lambda m: {"config": None},
                    StatsFormatError, r"'config' must be an object of router settings, got None"),
    "config name": (lambda m: {"config": "default"},
                    StatsFormatError, r"'config' must be an object .* got 'default'"),
    "config bool": (lambda m: {"config": {**m["config"], "balance": "no"}},
                    StatsFormatError, r"'config': balance must be True or False, got 'no'"),
    "embedder": (lambda m: {"embedder": {}},
                 StatsFormatError, r"'embedder' must be an embedder recipe .*got \{\}"),
    "embedder kind": (lambda m: {"embedder": {"kind": 3}},
                      StatsFormatError, r"'embedder' must be an embedder recipe"),
    "fingerprint": (lambda m: {"fingerprint": None},
                    StatsFormatError, r"'fingerprint' must be a non-empty string, got None"),
    "dim": (lambda m: {"dim": "256"},
            StatsFormatError, r"'dim' must be an integer from 1 to 2\*\*53, got '256'"),
    "identity_mu": (lambda m: {"identity_mu": "auto"},
                    StatsFormatError, r"'identity_mu' must be a number > 0 or null"),
    "max_tokens_counted": (lambda m: {"max_tokens_counted": "yes"},
                           StatsFormatError, r"'max_tokens_counted' must be true or false, "
                                             r"got 'yes'"),
    "identity_mu without identity": (
        lambda m: {"identity_mu": 3.0},
        StatsFormatError, r"'identity_mu' is 3.0, but the router has no identity features"),
}


@pytest.mark.parametrize(("identity", "mu", "message"), [
    ("auto", 2.5, r"is 2.5, but leave-one-out picks from 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000"),
    (10.0, 3.0, r"is 3.0, but its config sets μ = 10"),
])
def test_load_refuses_an_identity_mu_it_could_not_have_chosen(
        emb: Embedder, toy_stats, tmp_path: Path, identity: object, mu: float,
        message: str) -> None:
    """The saved μ is solved at unsearched: a hand-edited one loaded and moved decisions."""
    path = tmp_path / "router.safetensors"
    Router(emb, "identity", identity=identity).fit_stats(
        [toy_stats["math"], toy_stats["coding"]]).save(path)
    tensors, meta = read_safetensors(path)
    write_safetensors(path, tensors, {**meta, "identity_mu": mu})
    with pytest.raises(StatsFormatError, match=rf"identity_mu' {message}"):
        Router.load(path)


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_load_rejects_malformed_metadata(toy_router: Router, tmp_path: Path, case: str) -> None:
    path = tmp_path / "router.safetensors"
    toy_router.save(path)
    tensors, meta = read_safetensors(path)
    change, error, message = BAD_METADATA[case]
    bad = tmp_path / "bad.safetensors"
    write_safetensors(bad, tensors, {**meta, **change(meta)})
    for read in (Router.load, read_router_meta):  # `inspect` reads the header alone
        with pytest.raises(error, match=rf"^{re.escape(str(bad))}: .*{message}"):
            read(bad)


def test_load_refuses_a_dim_other_than_the_embedders(toy_router: Router,
                                                    tmp_path: Path) -> None:
    """inspect reports the recorded dim: it must be the width the router routes with."""
    toy_router.save(tmp_path / "r.safetensors")
    tensors, meta = read_safetensors(tmp_path / "r.safetensors")
    write_safetensors(tmp_path / "bad.safetensors", tensors, {**meta, "dim": 100})
    with pytest.raises(StatsFormatError, match=r"bad\.safetensors: metadata says dim 100 but "
                                               r"its embedder wordllama\S* has width 256"):
        Router.load(tmp_path / "bad.safetensors")


def test_load_refuses_count_tensors_stored_as_floats(toy_router: Router,
                                                     tmp_path: Path) -> None:
    """A cast would truncate them: refused as statistics files refuse them."""
    toy_router.save(tmp_path / "r.safetensors")
    tensors, meta = read_safetensors(tmp_path / "r.safetensors")
    for name in ("counts", "doc_counts", "pair_counts"):
        bad = tmp_path / f"{name}.safetensors"
        write_safetensors(bad, {**tensors, name: tensors[name] + 0.5}, meta)
        with pytest.raises(StatsFormatError, match=rf"{name}\.safetensors: tensor '{name}' "
                                                   r"holds float64 values; counts must be "
                                                   r"stored as integers"):
            Router.load(bad)


def test_fit_names_a_bad_text_by_its_place_in_texts(emb: Embedder) -> None:
    with pytest.raises(IR3DEError, match=r"text #3 "):
        Router(emb).fit(["a", "b", "c", "\ud800x"], ["m", "m", "c", "c"])


def test_legacy_config_is_completed_in_the_header(toy_stats, emb: Embedder,
                                                  tmp_path: Path) -> None:
    """read_router_meta gives the settings a router loads with, every one of them (inspect
    prints them all), also for a file saved before some settings existed."""
    Router(emb, "paper").fit_stats(toy_stats).save(tmp_path / "r.safetensors")
    tensors, meta = read_safetensors(tmp_path / "r.safetensors")
    del meta["config"]["identity"], meta["config"]["model"]
    write_safetensors(tmp_path / "old.safetensors", tensors, meta)
    header = read_router_meta(tmp_path / "old.safetensors")["config"]
    assert header == dataclasses.asdict(Router.load(tmp_path / "old.safetensors").config)
    assert header["model"] == "ridge" and header["identity"] == "auto"


def test_a_router_saved_before_the_spelling_back_off_loads_without_it(
        toy_stats, emb: Embedder, tmp_path: Path) -> None:
    """The back-off became the default later: a file whose settings do not name it was
    solved without it and must load (and re-solve on add/remove) as it was, not with
    today's default, which would change its decisions without a word."""
    full = {n: dataclasses.replace(s, n_prompts=1000) for n, s in toy_stats.items()}
    pairs = Router(emb, "pairs").fit_stats(full)
    assert Router(emb).fit_stats(full).smoothing.spelling == DEFAULT_SPELLING  # (today's)
    pairs.save(tmp_path / "r.safetensors")
    tensors, meta = read_safetensors(tmp_path / "r.safetensors")
    del meta["config"]["spelling"], meta["smoothing"]["spelling"]
    write_safetensors(tmp_path / "old.safetensors", tensors, meta)
    assert read_router_meta(tmp_path / "old.safetensors")["config"]["spelling"] is None
    old = Router.load(tmp_path / "old.safetensors")
    assert old.config.spelling is None and old.smoothing.spelling is None
    assert_same_state(old, pairs)
    old.remove_expert("law")
    assert_same_state(old, Router(emb, "pairs").fit_stats(
        {n: s for n, s in full.items() if n != "law"}))


def test_a_router_saved_before_the_spelling_prior_loads_as_it_was(
        toy_stats, emb: Embedder, tmp_path: Path) -> None:
    """A file of the ir3de before the spelling prior names the added back-off but not the
    prior: it loads, and re-solves on add/remove, as the default it was saved as."""
    full = {n: dataclasses.replace(s, n_prompts=1000) for n, s in toy_stats.items()}
    default = Router(emb).fit_stats(full)
    default.save(tmp_path / "r.safetensors")
    tensors, meta = read_safetensors(tmp_path / "r.safetensors")
    del meta["config"]["spelling_prior"], meta["smoothing"]["spelling_prior"]
    write_safetensors(tmp_path / "old.safetensors", tensors, meta)
    old = Router.load(tmp_path / "old.safetensors")
    assert old.config == RouterConfig(max_tokens=DEFAULT_MAX_TOKENS) and \
        old.smoothing == default.smoothing
    assert_same_state(old, default)
    old.remove_expert("law")
    assert_same_state(old, Router(emb).fit_stats({n: s for n, s in full.items()
                                                  if n != "law"}))


def _without(path: Path, tensors, meta, key: str) -> Path:
    write_safetensors(path, tensors, {k: v for k, v in meta.items() if k != key})
    return path


# ------------------------------------------------------------------ routing and settings


def test_empty_and_special_only_prompts(toy_router: Router) -> None:
    for bad in ("", "   ", "\n\t"):
        with pytest.raises(EmptyInputError, match=r"prompt #0 is empty$"):
            toy_router.route(bad)
    # Invisible characters only: the tokenizer makes tokens of them, but there is nothing
    # to route on (a zero-width space went to an expert with confidence 0.9).
    for bad in ("\u200b\u200b", "\ufeff", "\u115f", "\u00ad", "\ufe0f", "\x00", " \u2060 "):
        with pytest.raises(EmptyInputError, match=r"prompt #0 is empty \(it holds only "
                                                   r"invisible characters\)"):
            toy_router.route(bad)
    assert toy_router.route("\u200bWhat is 2 + 2?").expert  # visible text around them routes
    # special tokens and white space: blank once the specials are dropped ("<s>\n" was
    # routed on its "\n" token, with confidence 0.98 in the gateway)
    for special in ("</s>", "<s></s>", "<s>", "<s>\n", "</s> <s>", "<s>\t\x07</s>  "):
        with pytest.raises(EmptyInputError, match="no token"):
            toy_router.route(special)
    assert toy_router.route("<s>\nWhat is 2 + 2?").expert
    with pytest.raises(EmptyInputError, match="prompt #1"):
        toy_router.route_batch(["What is 2 + 2?", "</s>"])
    with pytest.raises(EmptyInputError, match="prompt #2"):
        toy_router.predict(["a", "b", ""])
    with pytest.raises(IR3DEError, match="not a string"):
        toy_router.route_batch(["ok", 42])  # type: ignore[list-item]
    assert toy_router.route_batch([]) == []


def test_a_lone_text_is_refused_where_texts_are_expected(emb: Embedder,
                                                         toy_router: Router) -> None:
    """A str is itself an iterable of strings: it used to be routed or fitted character by
    character (three decisions for "abc", experts 'm', 'a', 't', 'h')."""
    with pytest.raises(IR3DEError, match=r"prompts must be a list .* not a single str"):
        toy_router.predict("abc")
    with pytest.raises(IR3DEError, match=r"prompts must be a list .* not a single str"):
        toy_router.route_batch("import os")
    with pytest.raises(IR3DEError, match=r"domain labels must be a list .* not a single str"):
        Router(emb).fit(["1+1", "2*3"], "math")
    with pytest.raises(IR3DEError, match=r"texts must be a list .* not a single str"):
        Router(emb).fit("ab", ["math", "coding"])
    with pytest.raises(IR3DEError, match=r"prompts must be a list .* not int"):
        toy_router.predict(3)  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match="text #1 is of type int, not a string"):
        Router(emb).fit(["1+1", 3], ["math", "math"])  # type: ignore[list-item]
    with pytest.raises(ExpertError, match=r"domain label #0: invalid domain name \['m'\]"):
        Router(emb).fit(["1+1", "2*3"], [["m"], "math"])  # type: ignore[list-item]
    # scikit-learn label-encodes y for cross_val_predict(method="predict_proba")
    with pytest.raises(ExpertError, match=r"domain label #1 is the number 0: .*method='predict'"):
        Router(emb).fit(["1+1", "2*3"], ["math", np.int64(0)])  # type: ignore[list-item]
    # ... and in its meta-estimators, which the message blamed on cross_val_predict
    ensemble = pytest.importorskip("sklearn.ensemble")
    voting = ensemble.VotingClassifier([("router", Router(emb))])
    with pytest.raises(ExpertError, match=r"is the number 1: .* VotingClassifier, Stacking"):
        voting.fit(["1+1", "import os"], ["math", "coding"])
    # Iterables whose items are not their texts: a mapping routes its keys; a 0-d array
    # raised a bare TypeError.
    with pytest.raises(IR3DEError, match="prompts must be one-dimensional, not a 0-d array"):
        toy_router.predict(np.array("import os"))
    with pytest.raises(IR3DEError, match="texts must be one-dimensional, not a 2-d array"):
        compute_stats(emb, np.array([["1+1", "2*3"]]), domain="math")
    with pytest.raises(IR3DEError, match=r"not a mapping \(dict\), whose keys would be read"):
        toy_router.predict({"q1": "import os"})
    assert toy_router.predict(np.array(PROMPTS)).tolist() == toy_router.predict(PROMPTS).tolist()


def test_a_dataframe_is_refused_for_its_column(toy_router: Router) -> None:
    """Iterating a DataFrame gives its column names: predict(df) routed the word "text"."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"text": PROMPTS})
    with pytest.raises(IR3DEError, match=r"prompts must be one-dimensional, not a table "
                                         r"\(DataFrame\): pass one column of texts"):
        toy_router.predict(df)
    assert toy_router.predict(df["text"]).tolist() == toy_router.predict(PROMPTS).tolist()


def test_generators_are_read_once(emb: Embedder, toy_router: Router, toy_stats) -> None:
    """Validating a generator used to consume it: predict routed nothing."""
    assert toy_router.predict(p for p in PROMPTS).tolist() == toy_router.predict(PROMPTS).tolist()
    assert toy_router.route_batch(p for p in PROMPTS) == toy_router.route_batch(PROMPTS)
    texts = [t for group in CORPORA.values() for t in group]
    labels = [d for d, group in CORPORA.items() for _ in group]
    assert_same_state(Router(emb).fit(iter(texts), (d for d in labels)),
                      Router(emb).fit_stats({n: toy_stats[n] for n in sorted(toy_stats)}))
    assert_same_state(Router(emb).fit_stats(s for s in toy_stats.values()), toy_router)


def test_wrong_argument_types_are_named(emb: Embedder, toy_router: Router, toy_stats) -> None:
    router = Router(emb).fit_stats(toy_stats)
    for bad in (["The court held"], None):
        with pytest.raises(IR3DEError, match=rf"add_expert\('legal', stats\): stats is a "
                                             rf"{type(bad).__name__}, not a DomainStats"):
            router.add_expert("legal", bad)  # type: ignore[arg-type]
    math = toy_stats["math"]
    with pytest.raises(IR3DEError, match="item #1 is a str, not a DomainStats"):
        Router(emb).fit_stats([math, "x"])  # type: ignore[list-item]
    with pytest.raises(IR3DEError, match="'a' is a str, not a DomainStats"):
        Router(emb).fit_stats({"a": "x"})  # type: ignore[dict-item]
    with pytest.raises(IR3DEError, match=r"not a single DomainStats \(pass \[stats\]"):
        Router(emb).fit_stats(math)  # type: ignore[arg-type]
    for bad in (3, "math"):
        with pytest.raises(IR3DEError, match=rf"fit_stats takes a list of DomainStats .*, "
                                             rf"got {type(bad).__name__}"):
            Router(emb).fit_stats(bad)  # type: ignore[arg-type]


def test_config_and_embedder_arguments(emb: Embedder) -> None:
    """A preset name is short for RouterConfig.preset(name); anything else that is not a
    RouterConfig or an embedder source is refused when the router is made (it used to fail
    on first use with an AttributeError, or inside pathlib)."""
    assert Router(emb, "paper").config == RouterConfig.preset("paper")
    assert Router(emb, "paper", k=3).config == RouterConfig.preset("paper", k=3)
    with pytest.raises(IR3DEError, match="unknown preset 'fastest'"):
        Router(emb, "fastest")
    with pytest.raises(IR3DEError, match=r"config must be a RouterConfig or a preset name "
                                         r"\(default, .*got dict \(RouterConfig\.from_dict"):
        Router(emb, {"k": 5})  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match=r"embedder must be an Embedder.*got RouterConfig "
                                         r"\(a RouterConfig is the second argument"):
        Router(RouterConfig.preset("paper"))  # type: ignore[arg-type]
    for bad, shown in ((3, "int"), ({}, r"\{\}"), ({"kind": None}, r"\{'kind': None\}")):
        with pytest.raises(IR3DEError, match=rf"embedder must be an Embedder.*got {shown}$"):
            Router(bad)  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match=r"unknown preset \['default'\]"):
        RouterConfig.preset(["default"])  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match=r"router settings must be a mapping .* got NoneType"):
        RouterConfig.from_dict(None)  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match=r"unknown router setting\(s\): 1, beam; known"):
        RouterConfig.from_dict({1: 2, "beam": 3})  # type: ignore[dict-item]


def test_settings_are_real_booleans_and_numbers(emb: Embedder, toy_stats,
                                                tmp_path: Path) -> None:
    """bool("False") is True: a string (or 2) given for a switch is refused, and a bool given
    for a number; numpy scalars are stored as the Python numbers they hold (JSON knows no
    others, so a router with k = np.int64(3) could not be saved)."""
    for name in ("balance", "normalize", "regularize_bias"):
        for bad in ("False", "no", 2, None):
            with pytest.raises(IR3DEError, match=rf"{name} must be True or False, got "):
                RouterConfig(model="ridge", **{name: bad})
    router = Router(emb).fit_stats(toy_stats)
    with pytest.raises(IR3DEError, match="normalize must be True or False, got 'no'"):
        router.set_params(normalize="no")
    with pytest.raises(IR3DEError, match="λ must be a finite number ≥ 0, got True"):
        router.set_params(lam=True)
    with pytest.raises(IR3DEError, match="max_tokens must be a positive integer or None, got True"):
        router.set_params(max_tokens=True)
    with pytest.raises(IR3DEError, match=r"pair Dirichlet mass must be .* got True"):
        router.set_params(pairs=True)
    with pytest.raises(IR3DEError, match=r"identity μ must be .* got False"):
        RouterConfig(model="ridge", identity=False)
    config = RouterConfig(model="ridge", k=np.int64(3), max_tokens=np.int32(512),
                          alpha=np.float32(0.25), lam=np.float64(0.5), identity=np.int64(2),
                          balance=np.bool_(False))
    assert [type(getattr(config, f)) for f in ("k", "max_tokens", "alpha", "lam", "identity",
                                               "balance")] == [int, int, float, float, int, bool]
    assert (config.k, config.max_tokens, config.alpha, config.identity) == (3, 512, 0.25, 2)
    with pytest.raises(IR3DEError, match="k must be a positive integer"):
        RouterConfig(k=np.bool_(True))
    # numpy compares k with token counts as int64: a larger one failed in routing, with a
    # traceback (OverflowError) from the CLI
    with pytest.raises(IR3DEError, match=r"k must be a positive integer of at most 2\*\*63 - 1, "
                                         r"got 9223372036854775808"):
        RouterConfig(selector="topk", k=2**63)
    biggest = Router(emb, selector="topk", k=2**63 - 1).fit_stats(toy_stats)
    assert list(biggest.predict(["What is 2 + 2?", "def f(x):"])) == list(
        Router(emb, selector="all").fit_stats(toy_stats).predict(["What is 2 + 2?", "def f(x):"]))
    path = tmp_path / "r.safetensors"
    Router(emb, k=np.int64(3)).fit_stats(toy_stats).save(path)
    assert Router.load(path).config.k == 3


def test_extreme_settings_are_refused_not_routed_with_nan(emb: Embedder, toy_stats) -> None:
    """An accepted but extreme setting used to give a table of NaN: every prompt went to
    the first expert with confidence NaN. It is refused, naming the setting."""
    with pytest.raises(IR3DEError, match=r"α=1e\+305 is too large: the token table is not "
                                         r"finite"):
        Router(emb, alpha=1e305).fit_stats(toy_stats)
    with pytest.raises(IR3DEError, match=r"pair Dirichlet mass 4\.94066e-324 is too small: "
                                         r"the pair table is not finite"):
        Router(emb, pairs=5e-324).fit_stats(toy_stats)
    # A weight a float holds, giving scores a prompt's sum would overflow (the gateway's
    # PATCH took spelling=1e308 and routed every prompt to the first expert, confidence NaN)
    with pytest.raises(IR3DEError, match=r"the spelling back-off's weight 1e\+308 is too "
                                         r"large: the token table is not finite"):
        Router(emb, spelling=1e308).fit_stats(toy_stats)
    with pytest.raises(IR3DEError, match=r"weight 1e\+301 is too large: the token table "
                                         r"holds scores beyond ±1e\+300"):
        Router(emb, spelling=1e301).fit_stats(toy_stats)
    big = Router(emb, spelling=1e290).fit_stats(toy_stats)
    assert all(np.isfinite(d.confidence) for d in big.route_batch([*PROMPTS, "x " * 5000]))
    # A huge λ leaves tiny weights whose squares underflow: the column norm is still taken
    # exactly (no "that domain has no data"), and the router routes by the class means.
    huge = Router(emb, model="ridge", identity=None, lam=1e300).fit_stats(toy_stats)
    np.testing.assert_allclose(np.linalg.norm(huge.W, axis=0), 1.0, rtol=1e-12)
    decisions = huge.route_batch(PROMPTS, explain=True)
    assert all(np.isfinite(d.confidence) for d in decisions)
    assert {d.expert for d in decisions} != {huge.experts[0]}


def test_a_preset_name_with_settings_is_the_preset_with_them(emb: Embedder) -> None:
    """Router(config="paper", model="nb") was refused (balance=False applies to ridge only),
    though RouterConfig.preset("paper", model="nb"), which it is short for, is balanced."""
    expected = RouterConfig.preset("paper", model="nb")
    assert expected.balance is True
    assert Router(emb, "paper", model="nb").config == expected
    assert Router(emb).set_params(config="paper", model="nb").config == expected
    assert Router(emb, "paper", model="nb", balance=True).config == expected
    with pytest.raises(IR3DEError, match="balance=False applies to model='ridge' only"):
        Router(emb, "paper", model="nb", balance=False)  # named: kept as given, refused
    # and so does a change of model alone, as a grid search makes it (set_params(model=))
    # on a paper router or through a config object: both were refused
    assert Router(emb, "paper").set_params(model="nb").config == expected
    assert Router(emb, RouterConfig.preset("paper"), model="nb").config == expected
    assert RouterConfig.preset("paper").with_settings(model="nb") == expected
    from sklearn.model_selection import GridSearchCV

    texts = ["What is 2 + 2?", "Solve x + 1 = 3.", "Compute 7 * 6.", "def f(x): return x",
             "import os", "for i in range(3): print(i)"]
    search = GridSearchCV(Router(emb, "paper"), {"model": ["nb", "ridge"]}, cv=2,
                          error_score="raise").fit(texts, ["math"] * 3 + ["code"] * 3)
    assert search.best_params_["model"] in ("nb", "ridge")


def test_bad_settings(emb: Embedder, toy_stats) -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(IR3DEError, match="k must be a positive integer"):
            RouterConfig(k=bad)
        with pytest.raises(IR3DEError, match="k must be"):
            Router(emb, k=bad)
    router = Router(emb).fit_stats(toy_stats)
    config = router.config
    with pytest.raises(IR3DEError, match="k must be"):
        router.set_params(k=0)
    with pytest.raises(IR3DEError, match="unknown selector 'best'"):
        router.set_params(selector="best")
    with pytest.raises(IR3DEError, match="λ"):
        router.set_params(lam=-1.0)
    with pytest.raises(IR3DEError, match="max_tokens"):
        RouterConfig(max_tokens=0)
    # an int no float holds: was numpy's "ufunc 'isfinite' not supported" (a TypeError)
    with pytest.raises(IR3DEError, match=r"the smoothing α must be a finite number > 0"):
        router.set_params(alpha=10**400)
    with pytest.raises(IR3DEError, match=r"the pair Dirichlet mass must be a finite number"):
        RouterConfig(pairs=-10**30)
    assert RouterConfig(spelling=10**29).spelling == 1e29  # large, but a float holds it
    # past int64 (numpy's own ints), an int was an object to numpy: a TypeError in the
    # solver's checks, from a router file's "alpha": 2**70 too; now the float it equals
    for name in ("alpha", "pairs", "skips", "spelling", "lam", "identity", "tfidf"):
        big = RouterConfig(model="ridge" if name in ("lam", "identity") else "nb",
                           **{name: 2**70})
        assert getattr(big, name) == 2**70 and type(getattr(big, name)) is float
        assert Router(config=big).fit(["What is 2 + 2?", "def f(): pass"],
                                      ["math", "code"]).route("x = 2").expert
    assert type(RouterConfig(alpha=2**60).alpha) is int  # (numpy takes those as they are)
    assert router.config is config  # failed changes leave the router as it was
    with pytest.raises(IR3DEError, match="unknown preset"):
        RouterConfig.preset("fastest")
    with pytest.raises(IR3DEError, match="unknown router setting"):
        RouterConfig.from_dict({"k": 3, "beam": 2})
    with pytest.raises(IR3DEError, match=r"unknown router setting.*temperature; known: model"):
        router.set_params(temperature=1.0)
    with pytest.raises(IR3DEError, match=r"preset.*RouterConfig\.preset\(name\)"):
        Router(router.embedder, preset="paper")
    with pytest.raises(IR3DEError, match=r"unknown router setting.*beam"):
        RouterConfig.preset("paper", beam=2)
    for bad in (0, -0.5, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(IR3DEError, match="smoothing α must be a finite number > 0"):
            RouterConfig(alpha=bad)
    with pytest.raises(IR3DEError, match="unknown model 'svm'; choose one of nb, ridge"):
        RouterConfig(model="svm")
    with pytest.raises(IR3DEError, match="'nb' model weighs every domain the same"):
        router.set_params(balance=False)
    assert router.config is config


def test_presets() -> None:
    assert RouterConfig.preset("default") == RouterConfig()
    default = RouterConfig()
    assert (default.model, default.alpha, default.pairs, default.selector) == \
        ("nb", "auto", "auto", "geo")
    few = RouterConfig.preset("few")
    assert (few.model, few.alpha, few.pairs, few.selector) == ("nb", 0.01, 3e4, "geo")
    unigram = RouterConfig.preset("unigram")
    assert (unigram.model, unigram.alpha, unigram.pairs, unigram.selector) == \
        ("nb", 0.1, None, "geo")
    identity = RouterConfig.preset("identity")
    assert (identity.model, identity.identity, identity.selector) == ("ridge", "auto", "avg")
    assert RouterConfig.preset("dense").identity is None
    paper = RouterConfig.preset("paper")
    assert paper.model == "ridge"
    assert (paper.selector, paper.k, paper.balance, paper.lam) == ("topk", 10, False, 1e-2)
    assert RouterConfig.preset("paper", k=3).k == 3
    assert RouterConfig.from_dict(dataclasses.asdict(paper)) == paper


def test_set_params_resolves_only_when_needed(emb: Embedder, toy_stats) -> None:
    router = Router(emb, model="ridge").fit_stats(toy_stats)
    state = router._state
    router.set_params(k=3, selector="topk", max_tokens=64)
    assert router._state.table is state.table  # routing-time settings: no re-solve
    assert router.config.k == 3 and router.config.max_tokens == 64
    assert router._state.config is router.config  # (what routing reads)
    router.set_params(lam=router.config.lam, balance=router.config.balance)
    assert router._state.table is state.table  # unchanged values: no re-solve
    for change in ({"lam": 0.5}, {"balance": False}, {"normalize": False},
                   {"regularize_bias": False}):
        router.set_params(**change)
        assert router._state.table is not state.table, change
        state = router._state
        # The re-solved router is exactly a fresh fit with the same settings.
        assert_same_state(router, Router(emb, router.config).fit_stats(toy_stats))


def test_max_tokens_setting_caps_routing(emb: Embedder, toy_stats) -> None:
    router = Router(emb, selector="all").fit_stats(toy_stats)
    text = "Solve 3x + 2 = 11. " + "def f(x): return x " * 40
    full = router.route(text, explain=True)
    router.set_params(max_tokens=6)
    capped = router.route(text, explain=True)
    assert len(capped.tokens) == 6 < len(full.tokens)
    assert max(t.position for t in capped.tokens) == 5


@pytest.mark.parametrize("selector", ["topk", "all", "avg", "geo"])
def test_explain(toy_router: Router, emb: Embedder, toy_stats, selector: str) -> None:
    router = Router(emb, selector=selector, k=5).fit_stats(toy_stats)
    table = router._state.table
    for prompt in [*PROMPTS, "x"]:
        dec = router.route(prompt, explain=True)
        assert set(dec.scores) == set(router.experts)
        assert sum(dec.scores.values()) == pytest.approx(1.0, abs=1e-12)
        assert dec.scores[dec.expert] == pytest.approx(dec.confidence, rel=1e-15)
        assert dec.scores[dec.expert] == max(dec.scores.values())
        assert 0 < dec.confidence <= 1
        ids = emb.encode(prompt)
        n_voters = {"topk": min(5, ids.size), "geo": np.unique(ids).size}.get(selector,
                                                                              ids.size)
        assert len(dec.tokens) == n_voters
        for tok in dec.tokens:
            assert 0 <= tok.position < ids.size
            assert tok.token == emb.tokens([ids[tok.position]])[0]
            assert tok.expert == router.experts[table.vote[ids[tok.position]]]
            assert tok.entropy == table.entropy[ids[tok.position]]
        if selector not in ("avg", "geo"):
            entropies = [t.entropy for t in dec.tokens]
            assert entropies == sorted(entropies)
        plain = router.route(prompt)
        assert (plain.expert, plain.confidence) == (dec.expert, dec.confidence)
        assert plain.scores is None and plain.tokens is None and plain.evidence is None
        # coverage: geo on the default's pair table only
        extra = {"coverage"} if selector == "geo" else set()
        assert set(plain.to_dict()) == {"expert", "confidence"} | extra
        assert set(dec.to_dict()) == {"expert", "confidence", "scores", "tokens",
                                      "evidence"} | extra
        assert plain.coverage == dec.coverage
        for against in (None, *router.experts):
            assert_evidence_decides(router, prompt, against)


def test_vote_evidence_is_what_decided(emb: Embedder, toy_stats) -> None:
    """The evidence of a vote: a token that votes twice leads twice, and a tied vote (broken
    by the voters' summed probabilities) is all the leads summing to 0."""
    prompt = "Solve the integral dx. Solve the integral dx."
    for k, tied in ((3, False), (4, True)):
        router = Router(emb, "paper", k=k).fit_stats(toy_stats)
        dec = router.route(prompt, explain=True)
        counts = sorted(Counter(t.expert for t in dec.tokens).values())
        # the case this k is here for: ▁integral votes twice (2-1), at k = 4 a 2-2 tie
        assert counts == ([2, 2] if tied else [1, 2])
        assert len(dec.evidence) == len({t.token for t in dec.tokens})
        total = sum(e.lead for e in dec.evidence)
        assert total == 0 if tied else total == pytest.approx(1 / 3)
        assert max(e.lead for e in dec.evidence) == pytest.approx(2 / k)
        assert_evidence_decides(router, prompt)
    # three experts tie on one vote each: the runner-up is the one the voters' summed
    # probabilities put first after the winner, as routing breaks the tie, not the first listed
    router = Router(emb, "paper", k=3).fit_stats(toy_stats)
    dec = router.route("Solve court import", explain=True)
    assert sorted(Counter(t.expert for t in dec.tokens).values()) == [1, 1, 1]
    ids = router.encode(["Solve court import"])[0][[t.position for t in dec.tokens]]
    sums = dict(zip(router.experts, router._state.table.probs[ids].sum(axis=0), strict=True))
    voted = [t.expert for t in dec.tokens if t.expert != dec.expert]
    runner_up = max(voted, key=sums.__getitem__)
    assert runner_up != next(e for e in router.experts if e in voted)  # the case it is here for
    assert sorted(e.lead for e in dec.evidence) == pytest.approx([-1 / 3, 0, 1 / 3])
    assert next(e for e in dec.evidence if e.lead < 0).tokens == [
        t.token for t in dec.tokens if t.expert == runner_up]
    assert_evidence_decides(router, "Solve court import")


def test_scores_alone(toy_router: Router) -> None:
    """scores=True fills what explain=True gives as scores, and nothing else."""
    for prompt in PROMPTS:
        alone, told = (toy_router.route(prompt, **{k: True}) for k in ("scores", "explain"))
        assert alone.scores == told.scores and alone.tokens is None and alone.evidence is None
        assert (alone.expert, alone.confidence, alone.coverage) == (
            told.expert, told.confidence, told.coverage)
    with pytest.raises(IR3DEError, match="against applies to explanations only"):
        toy_router.route("x", scores=True, against="math")


@pytest.mark.parametrize("config", ["default", "skips", "unigram", "ignore"])
def test_geo_evidence_is_what_decided(emb: Embedder, toy_stats, skip_stats,
                                      config: str) -> None:
    """--explain's evidence for geo: every token, pair and skip pair it summed (unseen ids,
    which it leaves out, with no lead), adding up to the winner's log-lead exactly."""
    if config == "ignore":
        router = Router(emb, FULL_SIZE).fit_stats(skip_stats)  # unseen ids left out
        assert router._state.table.unseen.size
    else:
        router = Router(emb, config).fit_stats(skip_stats if config == "skips" else toy_stats)
    for prompt in [*PROMPTS, "x", "Zyxwv qqq 3 + 4 = ?"]:
        for against in (None, *router.experts):  # the winner itself: the runner-up
            assert_evidence_decides(router, prompt, against)
    # a batch explains each prompt as routing it alone does
    assert [d.evidence for d in router.route_batch(PROMPTS, explain=True, against="math")] \
        == [router.route(p, explain=True, against="math").evidence for p in PROMPTS]
    if config == "ignore":  # a token no fit prompt holds adds nothing, as routing leaves it
        dec = router.route("Zyxwv qqq", explain=True)
        unseen = set(router._state.table.unseen.tolist())
        ids = router.encode(["Zyxwv qqq"])[0]
        assert any(int(ids[e.position]) in unseen for e in dec.evidence if e.kind == "token")
        assert all(e.lead == 0 for e in dec.evidence
                   if e.kind == "token" and int(ids[e.position]) in unseen)
    # one expert: nothing to lead against, an empty list (not None: it was asked for)
    alone = Router(emb, config if config != "ignore" else "default").fit_stats(
        {"math": toy_stats["math"]})
    assert alone.route("What is 3 + 4?", explain=True).evidence == []
    with pytest.raises(ExpertError, match=r"unknown expert 'cooking'; experts are: "):
        router.route("x", explain=True, against="cooking")
    with pytest.raises(IR3DEError, match=r"against applies to explanations only"):
        router.route_batch(["x"], against="math")


def test_describe(toy_router: Router, emb: Embedder, toy_stats) -> None:
    info = toy_router.describe()
    assert info["experts"] == [{"name": n, "n_tokens": s.n_tokens, "n_prompts": s.n_prompts,
                                "max_tokens": s.max_tokens} for n, s in toy_stats.items()]
    assert info["fingerprint"] == emb.fingerprint and info["dim"] == emb.dim
    assert info["config"] == dataclasses.asdict(toy_router.config)


# ------------------------------------------------------------------ accuracy on real data


def balanced_accuracy(router: Router, test: dict[str, list[str]]) -> float:
    per_domain = []
    for domain, prompts in test.items():
        predicted = router.predict(prompts)
        per_domain.append(np.mean([p == domain for p in predicted]))
    return float(np.mean(per_domain))


@pytest.fixture(scope="module", params=[("xdata", 0), ("2fold", 0), ("2fold", 1)],
                ids=["xdata", "2fold-0", "2fold-1"])
def reasoning(request: pytest.FixtureRequest, data_dir: Path, emb: Embedder):
    protocol, fold = request.param
    fit_texts, test = reasoning_split(data_dir, protocol=protocol, fold=fold)
    stats = [compute_stats(emb, texts, domain=d) for d, texts in fit_texts.items()]
    return protocol, stats, test


THRESHOLDS = {"xdata": 0.70, "2fold": 0.88}


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_reasoning_accuracy(reasoning, preset: str) -> None:
    protocol, stats, test = reasoning
    router = Router() if preset == "default" else Router(config=RouterConfig.preset("paper"))
    router.fit_stats(stats)
    assert router.experts == ["math", "multilingual", "coding", "instruction_following"]
    acc = balanced_accuracy(router, test)
    assert acc >= THRESHOLDS[protocol], f"{preset} {protocol}: balanced accuracy {acc:.3f}"


# ------------------------------------------------------------ identity features
def test_identity_add_remove_save_load_are_exact(emb: Embedder, toy_stats,
                                                 tmp_path: Path) -> None:
    router = fit(emb, toy_stats, ["math", "coding", "law"], identity=2.0)
    before = Router(emb, model="ridge", identity=2.0).fit_stats({n: toy_stats[n]
                                                  for n in ["math", "coding", "law"]})
    router.add_expert("multilingual", toy_stats["multilingual"])
    assert_same_state(router, fit(emb, toy_stats, ["math", "coding", "law", "multilingual"],
                                  identity=2.0))
    router.remove_expert("multilingual")
    assert_same_state(router, before)
    router.save(tmp_path / "r.safetensors")
    loaded = Router.load(tmp_path / "r.safetensors")
    assert loaded.config.identity == 2.0
    assert_same_state(loaded, router)
    assert loaded.predict(PROMPTS).tolist() == router.predict(PROMPTS).tolist()


def test_loading_an_auto_identity_router_reuses_its_chosen_mu(emb: Embedder, toy_stats,
                                                              tmp_path: Path,
                                                              monkeypatch) -> None:
    """Loading solves once at the saved μ (the search costs one solve per grid value),
    and gives the searched router bit for bit; a change of experts searches again."""
    router = Router(emb, "identity").fit_stats(toy_stats)
    router.save(tmp_path / "r.safetensors")

    def no_search(*args, **kwargs):
        raise AssertionError("the μ search ran again on load")

    monkeypatch.setattr("ir3de.router.solve_identity_auto", no_search)
    loaded = Router.load(tmp_path / "r.safetensors")
    assert loaded.config.identity == "auto" and loaded.identity_mu == router.identity_mu
    assert_same_state(loaded, router)
    with pytest.raises(AssertionError, match="search ran again"):
        loaded.remove_expert("law")


def test_identity_setting_is_validated_and_re_solves(emb: Embedder, toy_stats) -> None:
    with pytest.raises(IR3DEError, match="identity μ must be a finite number > 0"):
        Router(emb, identity=-1.0)
    with pytest.raises(IR3DEError, match="identity μ must be a finite number > 0, 'auto'"):
        Router(emb, identity="best")
    router = fit(emb, toy_stats, list(toy_stats), identity=None)
    assert router.identity_mu is None
    dense = router.W.copy()
    router.set_params(identity=1.0)
    assert router.identity_mu == 1.0
    assert not np.array_equal(router.W, dense)
    router.set_params(identity=None)
    np.testing.assert_array_equal(router.W, dense)


def test_identity_features_generalise_across_datasets(emb: Embedder, data_dir: Path) -> None:
    """reasoning-xdata (coding fitted on MBPP, instructions on Alpaca): the identity preset
    (identity features, μ by leave-one-out on the statistics) routes the unseen HumanEval /
    IFEval prompts better than the same router without identity features."""
    fit_texts, test = reasoning_split(data_dir, protocol="xdata")
    stats = [compute_stats(emb, texts, domain=d) for d, texts in fit_texts.items()]

    def balanced(router: Router) -> float:
        return float(np.mean([np.mean([p == d for p in router.predict(t)])
                              for d, t in test.items()]))

    dense = balanced(Router(emb, RouterConfig.preset("dense")).fit_stats(stats))
    router = Router(emb, RouterConfig.preset("identity")).fit_stats(stats)
    ident = balanced(router)
    assert ident >= 0.95 and ident > dense + 0.03, (ident, dense)
    assert router.identity_mu in MU_GRID and router.describe()["identity_mu"] == router.identity_mu


def test_automatic_mu_is_exact_under_add_remove(emb: Embedder, toy_stats, tmp_path: Path) -> None:
    """μ is a function of the summed statistics: an expert joining and leaving gives the
    μ and weights of a full refit, and a saved router re-chooses the same μ on load."""
    router = fit(emb, toy_stats, ["math", "coding", "law"])
    before = fit(emb, toy_stats, ["math", "coding", "law"])
    mu, _ = choose_identity_mu(before.stats, before.experts, emb, balance=True)
    assert router.identity_mu == mu
    router.add_expert("multilingual", toy_stats["multilingual"])
    full = fit(emb, toy_stats, ["math", "coding", "law", "multilingual"])
    assert router.identity_mu == full.identity_mu
    assert_same_state(router, full)
    router.remove_expert("multilingual")
    assert_same_state(router, before)
    router.save(tmp_path / "r.safetensors")
    loaded = Router.load(tmp_path / "r.safetensors")
    assert loaded.config.identity == "auto" and loaded.identity_mu == mu
    assert_same_state(loaded, router)


# ------------------------------------------------------------ the nb model (default)


def _pairs_of(ids: np.ndarray, V: int, gap: int = 1) -> set[tuple[int, int]]:
    """A prompt's distinct pairs of ids ``gap`` places apart, V standing before its start."""
    return set(zip([V] * gap + ids[:-gap].tolist(), ids.tolist(), strict=False))


# The skips preset at full fit size ("auto" takes the small-fit values for the toy corpora).
FULL_SIZE = RouterConfig(alpha=DEFAULT_ALPHA, pairs=DEFAULT_PAIRS, skips=DEFAULT_SKIPS,
                         unseen="ignore", spelling=None)
FULL_SIZE_USED = (DEFAULT_ALPHA, DEFAULT_PAIRS, None, "score", DEFAULT_SPELLING,
                  None)  # the default's
# ... and with every expert small (the mean at most FEW_PROMPTS): the prior's form
SMALL_USED = (FEW_ALPHA, FEW_PAIRS, None, "score", None, FEW_SPELLING_PRIOR)
# The spelling back-off at full fit size.
SPELLED = RouterConfig(alpha=DEFAULT_ALPHA, pairs=DEFAULT_PAIRS, spelling=DEFAULT_SPELLING)
# The spelling back-off as a prior of the token table at full fit size (a small mass: the
# test corpora hold a few hundred token occurrences, so 1e5 would drown their counts).
PRIORED = RouterConfig(alpha=DEFAULT_ALPHA, pairs=DEFAULT_PAIRS, spelling=None,
                       spelling_prior=50.0)


def _spelling_rows(emb: Embedder, df: dict[str, np.ndarray], experts: list[str]
                   ) -> np.ndarray:
    """The spelling back-off R (V, D) from Python sets of the token strings' character
    trigrams (lower-cased, ``▁`` as a space, between ``<`` and ``>``; none for special
    tokens), a Naive-Bayes table over them with β = SPELLING_BETA."""
    grams = []
    for token in emb.tokens(range(emb.vocab_size)):
        text = "<" + token.replace("▁", " ").lower() + ">"
        special = token[:1] + token[-1:] in ("<>", "[]")
        grams.append(set() if special else
                     {text[i:i + 3] for i in range(max(1, len(text) - 2))})
    vocab = sorted(set().union(*grams))
    R = np.zeros((emb.vocab_size, len(experts)))
    for j, d in enumerate(experts):
        C = dict.fromkeys(vocab, 0.0)
        for t, g in enumerate(grams):
            for f in g:
                C[f] += df[d][t] / len(g)
        total = sum(C.values()) + SPELLING_BETA * len(vocab)
        for t, g in enumerate(grams):
            R[t, j] = sum(np.log(C[f] + SPELLING_BETA) - np.log(total) for f in g) / max(len(g), 1)
    return R


@pytest.mark.parametrize("preset", ["default", "unigram", "skips", FULL_SIZE, SPELLED,
                                    PRIORED])
def test_nb_equals_naive_bayes_computed_from_the_texts(emb: Embedder, skip_stats,
                                                       preset: str | RouterConfig) -> None:
    """The default router is multinomial Naive Bayes over binary token and adjacent token-pair
    features with a uniform prior (``unigram``: tokens only; the ``skips`` preset at full
    fit size also skip pairs, tokens no fit prompt holds left out, and on so few prompts
    as the default; with the spelling back-off, every token's row plus w times a table
    over the character trigrams of its string; with the spelling prior, every domain's
    counts smoothed towards the normalised exp of that table), computed here directly from
    the corpora with Python sets (no statistics files)."""
    router = Router(emb, preset).fit_stats(skip_stats)
    (alpha, m, m_skip, unseen, w, prior), V = router.smoothing, emb.vocab_size
    assert w == (DEFAULT_SPELLING if preset is SPELLED else None)
    assert prior == (50.0 if preset is PRIORED else None)
    assert (m_skip, unseen) == ((DEFAULT_SKIPS, "ignore") if preset is FULL_SIZE
                                else (None, "score"))
    df = {d: np.zeros(V) for d in CORPORA}
    kinds = {gap: {d: Counter[tuple[int, int]]() for d in CORPORA} for gap in (1, 2)}
    for d, texts in CORPORA.items():
        for text in texts:
            ids = emb.encode(text)
            df[d][np.unique(ids)] += 1
            for gap, counted in kinds.items():
                counted[d].update(_pairs_of(ids, V, gap))
    seen_ids = sum(df[d] for d in router.experts) > 0
    spelled = np.zeros((V, len(router.experts))) if w is None \
        else w * _spelling_rows(emb, df, list(router.experts))
    # log p(t | d) of the token table: Laplace, or the spelling prior of mass `prior` over
    # the tokens that have trigrams, ∝ exp(R)
    token_ll = {d: np.log((df[d] + alpha) / (df[d].sum() + alpha * V)) for d in CORPORA}
    if prior is not None:
        R = _spelling_rows(emb, df, list(router.experts))
        spelt = np.array([t[:1] + t[-1:] not in ("<>", "[]")
                          for t in emb.tokens(range(V))])
        for j, d in enumerate(router.experts):
            share = np.where(spelt, np.exp(R[:, j]), 0.0)
            token_ll[d] = np.log((df[d] + alpha + prior * share / share.sum())
                                 / (df[d].sum() + alpha * V + prior))

    def pair_loglik(d: str, p: tuple[int, int], gap: int, mass: float) -> float:
        counted = kinds[gap]
        pooled = {p: sum(counted[e][p] for e in router.experts) + 0.01
                  for p in set().union(*counted.values())}
        norm = sum(pooled.values()) + 0.01  # + the slot every unseen pair shares
        q = pooled.get(p, 0.01) / norm
        return float(np.log((counted[d][p] + mass * q) / (sum(counted[d].values()) + mass)))

    for text in [*PROMPTS, "zxqv glorp vex"]:
        ids = emb.encode(text)
        distinct = np.unique(ids)
        scored = distinct[seen_ids[distinct]] if unseen == "ignore" else distinct
        loglik = [token_ll[d][scored].sum() + spelled[scored, j].sum()
                  + sum(sum(pair_loglik(d, p, gap, mass) for p in _pairs_of(ids, V, gap))
                        for gap, mass in ((1, m), (2, m_skip)) if mass is not None)
                  for j, d in enumerate(router.experts)]
        dec = router.route(text, explain=True)
        assert dec.expert == router.experts[int(np.argmax(loglik))], text
        # Confidence: the softmax of the mean log-likelihood over the distinct tokens.
        mean = np.array(loglik) / distinct.size
        geo = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
        np.testing.assert_allclose([dec.scores[e] for e in router.experts], geo, rtol=1e-9)
    np.testing.assert_allclose(router.W[:, 0], token_ll["math"]
                               + spelled[:, router.experts.index("math")], rtol=1e-12)


def _byte_level_folder(folder: Path) -> Path:
    """A model folder with a GPT-2 / Llama-3-style tokenizer, byte-level BPE (every byte a
    token, written as a printable character; a word's first token starts with "Ġ"), trained
    here on CORPORA, and a random embedding table."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [t for texts in CORPORA.values() for t in texts] * 3,
        trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    table = np.random.default_rng(0).normal(size=(tok.get_vocab_size(), 8)).astype("<f4")
    write_raw_safetensors(folder / "model.safetensors",
                          {"model.embed_tokens.weight": ("F32", table.shape, table.tobytes())})
    return folder


def test_a_byte_level_tokenizer_takes_the_spelling_back_off(tmp_path: Path) -> None:
    """The spelling back-off was measured on SentencePiece (WordLlama) and WordPiece (MiniLM)
    vocabularies; a byte-level BPE one (the kind most recent models use) is read as its
    strings are, "Ġ" a character like any other: the table equals Naive Bayes plus the Python-sets
    back-off, special tokens have no n-grams, and prompts of bytes no fit prompt holds
    (emoji, another script) route like any other, alone as in a batch and after a reload."""
    emb = load_embedder(_byte_level_folder(tmp_path / "byte-level"))
    tokens = emb.tokens(range(emb.vocab_size))
    assert "<|endoftext|>" in tokens and sum(t.startswith("Ġ") for t in tokens) > 20
    texts = [t for texts in CORPORA.values() for t in texts]
    labels = [d for d, texts in CORPORA.items() for _ in texts]
    router = Router(emb, SPELLED).fit(texts, labels)
    assert router.smoothing.spelling == DEFAULT_SPELLING
    V = emb.vocab_size
    df = {d: np.zeros(V) for d in CORPORA}
    for text, d in zip(texts, labels, strict=True):
        df[d][np.unique(emb.encode(text))] += 1
    spelled = DEFAULT_SPELLING * _spelling_rows(emb, df, list(router.experts))
    assert np.all(spelled[tokens.index("<|endoftext|>")] == 0)
    for j, d in enumerate(router.experts):
        np.testing.assert_allclose(router.W[:, j], np.log((df[d] + DEFAULT_ALPHA)
                                                          / (df[d].sum() + DEFAULT_ALPHA * V))
                                   + spelled[:, j], rtol=1e-12)
    prompts = [*PROMPTS, "🤖 ᚠᚢᚦ", "Сколько будет два плюс два?"]
    decisions = router.route_batch(prompts)
    assert [router.route(p) for p in prompts] == decisions
    assert [d.expert for d in decisions[:3]] == ["math", "coding", "law"]
    router.save(tmp_path / "r.safetensors")
    assert Router.load(tmp_path / "r.safetensors").route_batch(prompts) == decisions


def _changes_are_exact(emb: Embedder, stats: dict[str, DomainStats], config: RouterConfig,
                       tmp_path: Path) -> list[str]:
    """With ``config``: adding and removing an expert equals a refit, a saved router loads
    into the same tables, and a prompt routed alone gets its decision in a batch (the
    prompts checked are returned)."""
    three, settings = ["math", "coding", "law"], dataclasses.asdict(config)
    router = fit(emb, stats, three, **settings)
    router.add_expert("multilingual", stats["multilingual"])
    assert_same_state(router, fit(emb, stats, [*three, "multilingual"], **settings))
    router.remove_expert("multilingual")
    assert_same_state(router, fit(emb, stats, three, **settings))
    router.save(tmp_path / "r.safetensors")
    loaded = Router.load(tmp_path / "r.safetensors")
    assert loaded.config == router.config and loaded.smoothing == router.smoothing
    assert_same_state(loaded, router)
    prompts = [*PROMPTS, "zxqv glorp", "x"]
    assert [router.route(p) for p in prompts] == router.route_batch(prompts)
    return prompts


def test_spelling_back_off_is_exact_and_checked(emb: Embedder, toy_stats,
                                                tmp_path: Path) -> None:
    """The spelling back-off is a function of the summed statistics: adding and removing an
    expert equals a refit, a saved router loads into the same tables, a prompt alone gets
    its decision in a batch, and it changes the scores (every selector reads the table).
    Bad weights are refused by name, and the ridge model, which does not read it, says so."""
    three = ["math", "coding", "law"]
    prompts = _changes_are_exact(emb, toy_stats, SPELLED, tmp_path)
    for selector in ("geo", "avg"):
        spelled, plain = (fit(emb, toy_stats, three, **dataclasses.asdict(
            SPELLED.with_settings(selector=selector, spelling=w))) for w in (0.25, None))
        assert not np.allclose(spelled.predict_proba(prompts), plain.predict_proba(prompts))
    for bad in (0, -1.0, float("nan"), float("inf"), "0.25", True):
        with pytest.raises(IR3DEError, match=r"the spelling back-off's weight must be a "
                                             r"finite number > 0, 'auto' or None, got "):
            RouterConfig(spelling=bad)
    assert RouterConfig.preset("identity").ignored(["spelling"]) == ("spelling", "model", "nb")


def test_spelling_prior_is_exact_and_checked(emb: Embedder, toy_stats, tmp_path: Path) -> None:
    """The spelling prior is a function of the summed statistics as the added back-off is
    (add/remove equals a refit, a reload the same tables, a prompt alone its batch
    decision), and it changes the scores. The preset takes it "auto" (a lighter mass for
    small fit sets). Bad masses, and both forms of the back-off at once, are refused by
    name; the ridge model, which reads neither, says so."""
    prompts = _changes_are_exact(emb, toy_stats, PRIORED, tmp_path)
    three = ["math", "coding", "law"]
    for selector in ("geo", "avg"):
        priored, plain = (fit(emb, toy_stats, three, **dataclasses.asdict(
            PRIORED.with_settings(selector=selector, spelling_prior=m))) for m in (50.0, None))
        assert not np.allclose(priored.predict_proba(prompts), plain.predict_proba(prompts))
    preset = RouterConfig.preset("spelling-prior")
    assert (preset.spelling, preset.spelling_prior) == (None, "auto")
    assert preset.with_settings(spelling="auto", spelling_prior=None) == RouterConfig()
    small = Router(emb, preset).fit_stats(toy_stats)  # a few prompts per expert
    assert small.smoothing == (FEW_ALPHA, FEW_PAIRS, None, "score", None, FEW_SPELLING_PRIOR)
    assert_same_state(small, Router(emb, PRIORED.with_settings(
        alpha=FEW_ALPHA, pairs=FEW_PAIRS, spelling_prior=FEW_SPELLING_PRIOR)).fit_stats(toy_stats))
    for bad in (0, -1.0, float("nan"), float("inf"), "1e5", True):
        with pytest.raises(IR3DEError, match=r"the spelling prior's mass must be a finite "
                                             r"number > 0, 'auto' or None, got "):
            RouterConfig(spelling=None, spelling_prior=bad)
    for weight in ("auto", 0.25):
        with pytest.raises(IR3DEError, match=rf"^the spelling back-off enters once: as an "
                                             rf"added term \(spelling={weight!r}\) or as a "
                                             rf"prior \(spelling_prior='auto'\); set the "
                                             rf"other to None"):
            preset.with_settings(spelling=weight)
    with pytest.raises(IR3DEError, match="enters once"):
        Router(emb).set_params(spelling_prior=1e5)
    ridge = RouterConfig.preset("identity", spelling_prior=1e5)  # not read: no conflict
    assert ridge.ignored(["spelling_prior"]) == ("spelling_prior", "model", "nb")


def test_skip_pairs_add_remove_save_and_batches_are_exact(emb: Embedder, skip_stats,
                                                         tmp_path: Path) -> None:
    """With skip pairs and unseen tokens left out (``skips`` at full fit size), adding and
    removing an expert equals a refit, a saved router loads into the same tables, and a
    prompt routed alone gets the very decision it gets in a batch."""
    table = fit(emb, skip_stats, ["math", "coding", "law"],
                **dataclasses.asdict(FULL_SIZE))._state.table
    assert table.skips is not None and table.unseen.size
    prompts = _changes_are_exact(emb, skip_stats, FULL_SIZE, tmp_path)
    # Both parts change decisions: the skip pairs and the unseen tokens left out.
    scores = {name: Router(emb, FULL_SIZE.with_settings(**change)).fit_stats(skip_stats)
              .predict_proba(prompts) for name, change in (("both", {}), ("no skips",
                                                                          {"skips": None}),
                                                          ("scored", {"unseen": "score"}))}
    assert not np.allclose(scores["both"], scores["no skips"])
    assert not np.allclose(scores["both"], scores["scored"])
    # Router.fit counts skip pairs when its settings read them, and only then.
    texts = [t for texts in CORPORA.values() for t in texts]
    labels = [d for d, texts in CORPORA.items() for _ in texts]
    assert_same_state(Router(emb, FULL_SIZE).fit(texts, labels),  # (fit sorts the labels)
                      Router(emb, FULL_SIZE).fit_stats(dict(sorted(skip_stats.items()))))
    assert all(split_pairs(s.pairs, emb.vocab_size)[1] is None
               for s in Router(emb).fit(texts, labels).stats.values())


def test_pair_tables_without_skip_pairs(emb: Embedder, toy_stats, skip_stats) -> None:
    """Statistics counted without skip pairs (the default; also every file of an ir3de
    before 2026-11-25) are refused where skip pairs are read, naming the way out; every
    other setting routes on them as on statistics with skip pairs (it does not read
    those); tables with and without them are not summed."""
    old = {n: dataclasses.replace(s, source=f"{n}.st") for n, s in toy_stats.items()}
    with pytest.raises(StatsFormatError, match=r"no skip-pair frequencies in math\.st \(math\), "
                                               r"coding\.st \(coding\), .*: counted without "
                                               r"them; count them again with ir3de stats "
                                               r"--skip-pairs .* \(--skips none; skips=None\)"):
        Router(emb, FULL_SIZE).fit_stats(old)
    for config in ("default", "skips", FULL_SIZE.with_settings(skips=None)):
        assert_same_state(Router(emb, config).fit_stats(old),
                          Router(emb, config).fit_stats(skip_stats))
    with pytest.raises(StatsFormatError, match=r"^math\.st: token-pair counts without skip "
                                               r"pairs .* --skip-pairs, .* merge --no-pairs"):
        skip_stats["math"] + old["math"]


def test_nb_add_remove_is_exact_and_leaves_other_columns_untouched(emb: Embedder, toy_stats,
                                                                   tmp_path: Path) -> None:
    three = ["math", "coding", "law"]
    router = fit(emb, toy_stats, three, model="nb")
    before = router.W.copy()
    router.add_expert("multilingual", toy_stats["multilingual"])
    # Each column depends on its own domain only: the others do not move at all.
    np.testing.assert_array_equal(router.W[:, :3], before)
    assert_same_state(router, fit(emb, toy_stats, [*three, "multilingual"], model="nb"))
    router.remove_expert("multilingual")
    assert_same_state(router, fit(emb, toy_stats, three, model="nb"))
    router.save(tmp_path / "r.safetensors")
    loaded = Router.load(tmp_path / "r.safetensors")
    assert loaded.config == router.config and loaded.config.model == "nb"
    assert_same_state(loaded, router)
    assert loaded.predict(PROMPTS).tolist() == router.predict(PROMPTS).tolist()
    router.set_params(alpha=1.0)  # a model parameter: re-solved
    assert not np.array_equal(router.W, before)
    assert_same_state(router, fit(emb, toy_stats, three, model="nb", alpha=1.0))


def test_auto_smoothing_follows_the_prompt_counts_exactly(emb: Embedder, toy_stats,
                                                           skip_stats, tmp_path: Path) -> None:
    """The default's α and pair mass ("auto") come from the summed prompt counts: experts
    of 60 prompts each get the small-fit-set values, and its spelling back-off the prior's
    form with the small mass; an expert with many prompts lifts the mean over 100 and
    brings the full-size values, as a full refit does, and taking it away brings the small
    ones back; so does adding a tiny expert (a few prompts: the smallest at most 50), but
    with the spelling back-off off (the mean is still over 100)."""
    # n_prompts only: the same tokens counted as if they came from more prompts
    three = {n: dataclasses.replace(toy_stats[n], n_prompts=60)
             for n in ("math", "coding", "law")}
    router = Router(emb).fit_stats(three)
    assert router.config.alpha == router.config.pairs == "auto"  # (skips and unseen fixed)
    assert router.smoothing == SMALL_USED
    assert_same_state(router, Router(emb, "few", spelling_prior=FEW_SPELLING_PRIOR)
                      .fit_stats(three))
    big = dataclasses.replace(toy_stats["multilingual"], n_prompts=1000)
    router.add_expert("multilingual", big)
    four = {**three, "multilingual": big}
    assert router.smoothing == FULL_SIZE_USED
    assert_same_state(router, Router(emb).fit_stats(four))
    assert_same_state(router, Router(emb, alpha=DEFAULT_ALPHA, pairs=DEFAULT_PAIRS)
                      .fit_stats(four))
    router.save(tmp_path / "r.safetensors")
    assert read_router_meta(tmp_path / "r.safetensors")["smoothing"] == \
        {"alpha": DEFAULT_ALPHA, "pairs": DEFAULT_PAIRS, "skips": None, "unseen": "score",
         "spelling": DEFAULT_SPELLING, "spelling_prior": None}
    loaded = Router.load(tmp_path / "r.safetensors")
    assert loaded.config == router.config and loaded.smoothing == router.smoothing
    assert_same_state(loaded, router)
    router.add_expert("tiny", toy_stats["law"])
    assert router.smoothing == (FEW_ALPHA, FEW_PAIRS, None, "score", None, None)
    assert_same_state(router, Router(emb, "few").fit_stats({**four, "tiny": toy_stats["law"]}))
    router.remove_expert("tiny")
    assert router.smoothing == FULL_SIZE_USED
    router.remove_expert("multilingual")
    assert router.smoothing == SMALL_USED
    assert_same_state(router, Router(emb).fit_stats(three))
    # a number is kept whatever the counts; None keeps pairs off
    assert Router(emb, alpha=0.5, pairs=None, skips=None,
                  unseen="score", spelling=None).fit_stats(four).smoothing == (
        0.5, None, None, "score", None, None)
    # (skip-pair statistics of the same prompt counts, for the settings that read them)
    skipped = {n: dataclasses.replace(skip_stats[n], n_prompts=s.n_prompts)
               for n, s in four.items()}
    three_skipped = {n: skipped[n] for n in three}
    assert Router(emb, skips=3e5).fit_stats(three_skipped).smoothing == (
        FEW_ALPHA, FEW_PAIRS, 3e5, "score", None, FEW_SPELLING_PRIOR)
    # the skips preset's "auto": skip pairs and unseen tokens left out at full size only
    assert Router(emb, "skips").fit_stats(skipped).smoothing == (DEFAULT_ALPHA, DEFAULT_PAIRS,
                                                                 DEFAULT_SKIPS, "ignore", None,
                                                                 None)
    assert Router(emb, "skips").fit_stats(three_skipped).smoothing == (FEW_ALPHA, FEW_PAIRS,
                                                                       None, "score", None,
                                                                       None)
    # the default's spelling "auto": the added term at full size (FULL_SIZE_USED), the
    # prior where the mean fires, off where only the smallest does (above); the presets
    # measured before it leave it off
    assert Router(emb, "pairs").fit_stats(four).smoothing == (*FULL_SIZE_USED[:4], None, None)
    # the spelling-prior preset's "auto": 1e5 at full size, FEW_SPELLING_PRIOR with the
    # few values
    assert Router(emb, "spelling-prior").fit_stats(four).smoothing == (
        *FULL_SIZE_USED[:4], None, DEFAULT_SPELLING_PRIOR)
    assert Router(emb, "spelling-prior").fit_stats(three).smoothing[4:] == (
        None, FEW_SPELLING_PRIOR)
    assert Router(emb, "identity").fit_stats(three).smoothing is None
    # under FEW_SPELLING_FLOOR prompts per expert on average the default's back-off is off;
    # an expert that lifts the mean to it brings the prior, as a full refit does
    under = {n: dataclasses.replace(s, n_prompts=FEW_SPELLING_FLOOR - 1)
             for n, s in three.items()}
    router = Router(emb).fit_stats(under)
    assert router.smoothing == (*SMALL_USED[:5], None)
    assert_same_state(router, Router(emb, "few").fit_stats(under))
    lift = dataclasses.replace(toy_stats["multilingual"], n_prompts=FEW_SPELLING_FLOOR + 3)
    router.add_expert("multilingual", lift)  # the mean now exactly the floor
    assert router.smoothing == SMALL_USED
    assert router.describe()["smoothing"]["spelling_prior"] == FEW_SPELLING_PRIOR
    assert_same_state(router, Router(emb).fit_stats({**under, "multilingual": lift}))
    router.remove_expert("multilingual")
    assert router.smoothing == (*SMALL_USED[:5], None)
    assert_same_state(router, Router(emb, "few").fit_stats(under))


def test_the_default_refuses_a_spelling_prior_over_no_spelt_token(
        emb: Embedder, toy_stats, monkeypatch: pytest.MonkeyPatch) -> None:
    """A vocabulary whose every token is special has no spelling to spread the prior over:
    the default refuses it where its back-off takes the prior's form, naming the setting to
    change, and fits as before elsewhere (the added term of such a vocabulary adds 0)."""
    import ir3de.router as router_module

    monkeypatch.setitem(router_module._SPELLINGS, emb.fingerprint,
                        Spelling.of(["<s>"] * emb.vocab_size))
    small = {n: dataclasses.replace(s, n_prompts=30) for n, s in toy_stats.items()}
    with pytest.raises(IR3DEError, match=r"the default's spelling back-off is a prior for "
                                         r"experts of 10 to 100 prompts .* no token of .* "
                                         r"set spelling=None \(--spelling none\)$"):
        Router(emb).fit_stats(small)
    assert Router(emb, spelling=None).fit_stats(small).smoothing.spelling_prior is None
    full = {n: dataclasses.replace(s, n_prompts=300) for n, s in toy_stats.items()}
    assert_same_state(Router(emb).fit_stats(full), Router(emb, spelling=None).fit_stats(full))


def test_statistics_from_streaming_stats_name_the_cause(emb: Embedder, toy_stats) -> None:
    """streaming_stats (current, the reference accumulation) keeps A and b only: the error
    names it as well as older files, and the presets that can use such statistics."""
    streamed = {**toy_stats, "math": streaming_stats(emb, CORPORA["math"], domain="math")}
    with pytest.raises(StatsFormatError, match=r"no document frequencies in <memory> "
                                               r"\(math\): made by streaming_stats .* or by "
                                               r"an older ir3de .*compute_stats \(ir3de stats\)"
                                               r" .*'dense' or 'paper' preset$"):
        Router(emb).fit_stats(streamed)
    with pytest.raises(StatsFormatError, match=r"no token counts in .*: made by streaming_stats"
                                               r".*'dense' preset$"):
        Router(emb, "identity").fit_stats(streamed)
    Router(emb, "dense").fit_stats(streamed)
    Router(emb, "paper").fit_stats(streamed)


def test_nb_needs_document_frequencies(emb: Embedder, toy_stats) -> None:
    old = {n: dataclasses.replace(s, doc_counts=None, pairs=None) for n, s in toy_stats.items()}
    with pytest.raises(StatsFormatError, match=r"no document frequencies in .*'identity' or "
                                               r"'dense' preset"):
        Router(emb, RouterConfig.preset("unigram")).fit_stats(old)
    with pytest.raises(StatsFormatError, match=r"no document frequencies in .*'identity' or "
                                               r"'dense' preset"):  # (as a prior, too)
        Router(emb, PRIORED.with_settings(pairs=None)).fit_stats(old)
    Router(emb, RouterConfig.preset("identity")).fit_stats(old)  # ridge presets still work
    # Files with document frequencies but no pair frequencies feed the unigram preset.
    no_pairs = {n: dataclasses.replace(s, pairs=None) for n, s in toy_stats.items()}
    with pytest.raises(StatsFormatError, match=r"no token-pair frequencies in .*'unigram'"):
        Router(emb).fit_stats(no_pairs)
    # Only the statistics without pairs are named, with every way a file comes to lack them.
    one_bare = {**toy_stats, "law": dataclasses.replace(toy_stats["law"], pairs=None,
                                                         source="law.st")}
    with pytest.raises(StatsFormatError, match=r"no token-pair frequencies in law\.st \(law\): "
                                               r"made with ir3de stats --no-pairs, "
                                               r"merged from such files, or by an ir3de before "
                                               r"pairs were counted; .*--pairs none"):
        Router(emb).fit_stats(one_bare)
    Router(emb, RouterConfig.preset("unigram")).fit_stats(no_pairs)
    with pytest.raises(StatsFormatError, match=r"token-pair frequencies without the "
                                               r"document frequencies \(doc_counts\)"):
        dataclasses.replace(toy_stats["math"], doc_counts=None)  # pairs without their tokens


def test_routers_saved_before_nb_load_as_ridge(toy_stats, emb: Embedder,
                                               tmp_path: Path) -> None:
    """A router file written before the 'model' setting existed is a ridge router and must
    not turn into today's default on load."""
    ridge = fit(emb, toy_stats, list(toy_stats))
    ridge.save(tmp_path / "new.safetensors")
    tensors, meta = read_safetensors(tmp_path / "new.safetensors")
    for key in ("model", "alpha", "pairs"):
        del meta["config"][key]
    for key in ("doc_counts", "pair_keys", "pair_counts", "pair_offsets"):
        tensors.pop(key)
    write_safetensors(tmp_path / "old.safetensors", tensors, meta)
    loaded = Router.load(tmp_path / "old.safetensors")
    assert loaded.config.model == "ridge"
    assert read_router_meta(tmp_path / "old.safetensors")["config"]["model"] == "ridge"
    assert_same_state(loaded, ridge)


def test_nb_routers_saved_before_pairs_load_without_them(toy_stats, emb: Embedder,
                                                         tmp_path: Path) -> None:
    """An nb router file from before pair features (no 'pairs' setting, no pair tensors)
    loads as the token-only nb router it was, and can gain pairs only from new statistics."""
    unigram = fit(emb, toy_stats, list(toy_stats), **dataclasses.asdict(
        RouterConfig.preset("unigram")))
    unigram.save(tmp_path / "new.safetensors")
    tensors, meta = read_safetensors(tmp_path / "new.safetensors")
    del meta["config"]["pairs"]
    for key in ("pair_keys", "pair_counts", "pair_offsets"):
        tensors.pop(key)
    write_safetensors(tmp_path / "old.safetensors", tensors, meta)
    loaded = Router.load(tmp_path / "old.safetensors")
    assert (loaded.config.model, loaded.config.pairs) == ("nb", None)
    assert_same_state(loaded, unigram)
    with pytest.raises(StatsFormatError, match="no token-pair frequencies in "):
        loaded.set_params(pairs=1e5)
    assert loaded.config.pairs is None  # the failed change left it as it was
    # Pair tensors that do not add up are refused, not guessed at.
    tensors, meta = read_safetensors(tmp_path / "new.safetensors")
    tensors["pair_offsets"] = tensors["pair_offsets"][:-1]
    write_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(StatsFormatError, match="token-pair tensors do not match"):
        Router.load(tmp_path / "bad.safetensors")


def test_nb_generalises_across_datasets(emb: Embedder, data_dir: Path) -> None:
    """reasoning-xdata: the default (nb with token pairs) routes unseen HumanEval / IFEval
    prompts better than the token-only table and both better than the identity ridge (99.1,
    97.9 and 96.5 % balanced in EVALUATION.md)."""
    fit_texts, test = reasoning_split(data_dir, protocol="xdata")
    stats = [compute_stats(emb, texts, domain=d) for d, texts in fit_texts.items()]
    default = balanced_accuracy(Router(emb).fit_stats(stats), test)
    unigram = balanced_accuracy(Router(emb, RouterConfig.preset("unigram")).fit_stats(stats),
                                test)
    ridge = balanced_accuracy(Router(emb, RouterConfig.preset("identity")).fit_stats(stats),
                              test)
    assert default >= 0.985 and default > unigram > ridge, (default, unigram, ridge)


def test_coverage_flags_prompts_unlike_every_expert(emb: Embedder, data_dir: Path) -> None:
    """Fitted on the Reasoning domains, the default's pair coverage tells their unseen test
    prompts from legal and dialogue passages no expert covers (AUROC 0.996 with 300
    passages of each of six domain corpora in BENCHMARKS.md), and it is the share of
    distinct pairs the fit data holds."""
    fit_texts, test = reasoning_split(data_dir, protocol="2fold", fold=0)
    router = Router(emb).fit_stats([compute_stats(emb, texts, domain=d)
                                    for d, texts in fit_texts.items()])
    inside = [t for texts in test.values() for t in texts[:100]]
    outside = [*jsonl_texts(data_dir / "domains" / "legalbench" / "train.jsonl", 100),
               *jsonl_texts(data_dir / "domains" / "dailydialog" / "validation.jsonl", 100)]
    cov = np.array([d.coverage for d in router.route_batch(inside + outside)])
    a, b = cov[:len(inside)], cov[len(inside):]
    # AUROC: the chance that an inside prompt is covered more than an outside one
    auroc = np.mean(a[:, None] > b[None, :]) + 0.5 * np.mean(a[:, None] == b[None, :])
    assert auroc > 0.95, auroc
    keys = router._state.table.pairs.keys
    ids = emb.encode(outside[0])
    distinct = np.unique(pair_keys(ids, emb.vocab_size))
    assert router.route(outside[0]).coverage == np.isin(distinct, keys).mean() == cov[len(inside)]


# ------------------------------------------------------------ scikit-learn model selection
TEXTS = [t for group in CORPORA.values() for t in group]
LABELS = [d for d, group in CORPORA.items() for _ in group]
SETTINGS = [f.name for f in dataclasses.fields(RouterConfig)]


def test_get_params_are_the_constructor_arguments_and_the_settings(emb: Embedder) -> None:
    """get_params gives the constructor's embedder and config, the very objects the router
    holds, and each setting; a router made from them holds those same objects (what
    sklearn's clone checks), and set_params takes all of them back."""
    router = Router(emb, "paper", k=7)
    params = router.get_params()
    assert list(params) == ["embedder", "config", *SETTINGS]
    assert params["embedder"] is emb and params["config"] is router.config
    assert {name: params[name] for name in SETTINGS} == dataclasses.asdict(router.config)
    assert params == router.get_params(deep=False)
    again = Router(**params)
    assert all(again.get_params()[name] is value for name, value in params.items())
    other = Router(emb)
    assert other.set_params(**params) is other
    assert other.config == router.config and other.embedder is emb
    # config: every setting not named beside it is taken from it, as in the constructor
    assert other.set_params(config="default").config == RouterConfig()
    assert other.set_params(config="paper", k=3).config == RouterConfig.preset("paper", k=3)
    assert other.set_params(config=RouterConfig(alpha=0.1)).get_params()["alpha"] == 0.1
    assert other.set_params(alpha=0.3).get_params()["config"] == RouterConfig(alpha=0.3)
    # Router(): the default embedder, loaded once and shared
    default = Router()
    assert Router(**default.get_params()).embedder is default.embedder


def test_set_params_on_a_fitted_router(emb: Embedder, toy_stats, make_model_folder) -> None:
    """A new config re-solves (exactly a fresh fit); an embedder must be the one the
    statistics were made with, until the router is refitted."""
    router = Router(emb).fit_stats(toy_stats)
    router.set_params(config="paper")
    assert_same_state(router, Router(emb, "paper").fit_stats(toy_stats))
    table = router._state.table
    router.set_params(embedder=emb, config=router.config)
    assert router._state.table is table  # nothing changed: no re-solve
    state = router._state
    tiny = load_embedder(make_model_folder()[0])
    with pytest.raises(FingerprintMismatchError, match=rf"fitted with embedding .* not "
                                                       rf"{re.escape(tiny.name)}"):
        router.set_params(embedder=tiny, k=3)
    assert router.embedder is emb and router.config.k == 10 and router._state is state
    assert Router(emb).set_params(embedder=tiny).embedder is tiny  # unfitted: any embedder


def test_set_params_refuses_bad_names_and_values(emb: Embedder, toy_stats) -> None:
    router = Router(emb).fit_stats(toy_stats)
    config, state = router.config, router._state
    with pytest.raises(ValueError, match=r"unknown router setting\(s\): temperature; known: "
                                         r"model, .*, identity, tfidf; set_params also takes "
                                         r"embedder and config"):
        router.set_params(alpha=0.1, temperature=1.0)
    with pytest.raises(IR3DEError, match=r"unknown router setting\(s\): preset.*config"):
        router.set_params(preset="paper")
    with pytest.raises(IR3DEError, match="unknown preset 'fastest'"):
        router.set_params(config="fastest")
    with pytest.raises(IR3DEError, match="config must be a RouterConfig or a preset name"):
        router.set_params(config={"k": 5})
    with pytest.raises(IR3DEError, match="embedder must be an Embedder"):
        router.set_params(embedder=3)
    with pytest.raises(IR3DEError, match="k must be a positive integer"):
        router.set_params(config="paper", k=0)
    assert router.config is config and router._state is state and router.embedder is emb


def test_score_is_balanced_accuracy(toy_router: Router) -> None:
    """score is the mean per-domain accuracy (the project's figure), not plain accuracy:
    here the math prompt labelled "coding" costs coding a third of its score."""
    labels = ["math", "coding", "law", "multilingual", "coding", "coding"]
    routed = toy_router.predict(PROMPTS)
    # an array, as scikit-learn's: compared with a list it gives one answer per prompt
    assert isinstance(routed, np.ndarray) and routed.shape == (len(PROMPTS),)
    assert (routed == ["math", "coding", "law", "multilingual", "math", "coding"]).all()
    assert toy_router.predict([]).shape == (0,)
    assert toy_router.score(PROMPTS, labels) == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)
    assert toy_router.score(iter(PROMPTS), tuple(labels)) == toy_router.score(PROMPTS, labels)
    assert toy_router.score(PROMPTS[:2], ["math", "law"]) == 0.5  # no expert "law": a miss
    with pytest.raises(IR3DEError, match="6 texts but 5 domain labels"):
        toy_router.score(PROMPTS, labels[:-1])
    with pytest.raises(IR3DEError, match="domain labels must be a list"):
        toy_router.score(PROMPTS[:1], "math")
    with pytest.raises(IR3DEError, match="domain label #1 is of type list, not a string"):
        toy_router.score(PROMPTS[:2], ["math", ["coding"]])
    with pytest.raises(IR3DEError, match="no texts to score"):
        toy_router.score([], [])


def test_classes_and_fitted_state(emb: Embedder, toy_router: Router) -> None:
    assert not hasattr(Router(emb), "classes_")
    assert not Router(emb).__sklearn_is_fitted__() and toy_router.__sklearn_is_fitted__()
    np.testing.assert_array_equal(toy_router.classes_, sorted(toy_router.experts))


def test_sklearn_clone(emb: Embedder, toy_stats) -> None:
    """A clone has the same parameters and shares the embedder (its table is not copied);
    a fitted router's clone is unfitted, and the original keeps its experts."""
    base = pytest.importorskip("sklearn.base")
    from sklearn.utils.validation import check_is_fitted

    for router in (Router(emb), Router(emb, "paper", k=3),
                   Router(emb, "unigram").fit_stats(toy_stats)):
        copy = base.clone(router)
        assert type(copy) is Router and copy is not router
        assert copy.get_params() == router.get_params()
        assert copy.embedder is emb and copy.embedder.table is emb.table
        # the user's settings (a fitted router's config holds its cap as a number)
        assert copy.config is router.get_params()["config"]
        assert copy._state is None and not hasattr(copy, "classes_")
        with pytest.raises(IR3DEError, match="no experts yet"):
            copy.predict(PROMPTS)
    check_is_fitted(router)
    assert router.experts == list(toy_stats)
    assert base.is_classifier(router)


def test_cross_val_score_and_predict(emb: Embedder) -> None:
    """Each fold fits its own router on its training part: cross_val_predict is exactly a
    router per stratified fold, and the default score is balanced accuracy."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score

    scores = cross_val_score(Router(emb), TEXTS, LABELS, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6, scores  # chance: 0.25
    np.testing.assert_allclose(
        scores, cross_val_score(Router(emb), TEXTS, LABELS, cv=3, scoring="balanced_accuracy"))
    accuracy = cross_val_score(Router(emb, "paper"), TEXTS, LABELS, cv=3, scoring="accuracy")
    assert accuracy.shape == (3,) and 0 <= accuracy.min() <= accuracy.max() <= 1
    predicted = cross_val_predict(Router(emb), TEXTS, LABELS, cv=3)
    expected = np.empty(len(TEXTS), dtype=object)
    for train, test in StratifiedKFold(3).split(TEXTS, LABELS):
        expected[test] = Router(emb).fit([TEXTS[i] for i in train],
                                         [LABELS[i] for i in train]).predict(
                                             [TEXTS[i] for i in test])
    assert predicted.tolist() == expected.tolist()


def test_fit_orders_experts_by_name_whatever_the_sample_order(emb: Embedder) -> None:
    """As scikit-learn's np.unique(y): shuffled samples give the same router, ties and
    confidence digits included."""
    order = np.random.default_rng(0).permutation(len(TEXTS))
    for preset in ("default", "unigram", "dense", "paper"):
        router = Router(emb, preset).fit(TEXTS, LABELS)
        shuffled = Router(emb, preset).fit([TEXTS[i] for i in order],
                                           [LABELS[i] for i in order])
        assert router.experts == shuffled.experts == sorted(set(LABELS))
        assert [router.route(t).confidence for t in PROMPTS] == \
            [shuffled.route(t).confidence for t in PROMPTS]


@pytest.mark.parametrize("preset", ["default", "few", "unigram", "identity", "dense", "paper"])
def test_predict_proba_is_the_routing_scores(emb: Embedder, preset: str) -> None:
    """One row per prompt, one column per expert in classes_ order, rows summing to 1:
    the scores route(explain=True) reports, and their argmax the prediction (votes of
    topk may tie; their tie-break is not a column's maximum)."""
    router = Router(emb, preset).fit(TEXTS, LABELS)
    proba = router.predict_proba(PROMPTS)
    assert proba.shape == (len(PROMPTS), len(router.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    for row, prompt in zip(proba, PROMPTS, strict=True):
        scores = router.route(prompt, explain=True).scores
        np.testing.assert_array_equal(row, [scores[e] for e in router.classes_])
    if router.config.selector != "topk":
        assert router.classes_[proba.argmax(axis=1)].tolist() == router.predict(PROMPTS).tolist()
    with pytest.raises(IR3DEError, match="prompt #1 is empty"):
        router.predict_proba(["fine", " "])
    log_loss = pytest.importorskip("sklearn.metrics").log_loss
    assert np.isfinite(log_loss(LABELS, router.predict_proba(TEXTS), labels=router.classes_))


def test_probability_columns_are_sorted_whatever_the_expert_order(emb: Embedder) -> None:
    """scikit-learn's probability scorers take predict_proba's columns in sorted label
    order; a router from fit_stats, add_expert or load kept its own order there, so
    log_loss and roc_auc scored the wrong columns without a word."""
    fitted = Router(emb).fit(TEXTS, LABELS)
    names = sorted(set(LABELS), reverse=True)
    unsorted = Router(emb).fit_stats([compute_stats(emb, [t for t, y in zip(TEXTS, LABELS,
                                                                            strict=True)
                                                          if y == d], domain=d)
                                      for d in names])
    assert unsorted.experts == names != sorted(names)
    assert list(unsorted.classes_) == list(fitted.classes_) == sorted(names)
    # (the same up to rounding: sums over the experts run in another order)
    np.testing.assert_allclose(unsorted.predict_proba(PROMPTS), fitted.predict_proba(PROMPTS),
                               rtol=1e-12)
    for row, prompt in zip(unsorted.predict_proba(PROMPTS), PROMPTS, strict=True):
        scores = unsorted.route(prompt, explain=True).scores
        np.testing.assert_array_equal(row, [scores[e] for e in unsorted.classes_])
    metrics = pytest.importorskip("sklearn.metrics")
    loss = metrics.log_loss(LABELS, unsorted.predict_proba(TEXTS))
    assert loss == pytest.approx(metrics.log_loss(LABELS, fitted.predict_proba(TEXTS))) and \
        loss < 0.5
    assert unsorted.predict_proba([]).shape == (0, len(names))


def test_route_batch_takes_the_token_ids_encode_gave(toy_router: Router) -> None:
    """Tokenised once (a caller checking every prompt first), routed as if tokenised by
    route_batch itself; ids that cannot be what encode gives are refused."""
    ids = toy_router.encode(PROMPTS)
    assert toy_router.route_batch(PROMPTS, token_ids=ids, explain=True) == \
        toy_router.route_batch(PROMPTS, explain=True)
    # any integer types, mixed (numpy joined uint64 and int32 as float64: an IndexError)
    mixed = [x.astype(np.uint64 if i % 2 else np.int16) for i, x in enumerate(ids)]
    assert toy_router.route_batch(PROMPTS, token_ids=mixed, explain=True) == \
        toy_router.route_batch(PROMPTS, explain=True)
    vocab, cap = toy_router.embedder.vocab_size, toy_router.config.max_tokens
    special = int(toy_router.embedder.special_ids[0])
    for bad, match in [(ids[:-1], f"{len(PROMPTS) - 1} token-id arrays for {len(PROMPTS)}"),
                       ([*ids[:-1], ids[-1].tolist()], r"token ids #\d+: expected a 1-D"),
                       ([*ids[:-1], ids[-1].astype(float)], "expected a 1-D integer"),
                       ([*ids[:-1], ids[-1][:0]], r"prompt #\d+ has no token"),
                       ([*ids[:-1], ids[-1] + vocab], rf"ids must be in \[0, {vocab}\)"),
                       ([*ids[:-1], np.resize(ids[-1], cap + 1)],
                        rf"{cap + 1} ids, more than this router's max_tokens \({cap}\)"),
                       ([*ids[:-1], np.append(ids[-1], special)],
                        rf"special token id\(s\) \[{special}\], which Router.encode drops")]:
        with pytest.raises(IR3DEError, match=match):
            toy_router.route_batch(PROMPTS, token_ids=bad)


def test_grid_search_over_settings(emb: Embedder) -> None:
    """GridSearchCV searches the router's settings (and presets, as config) and refits the
    best on all the data; the router it was given stays unfitted."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV

    base = Router(emb)
    grid = {"alpha": [0.01, 0.03, 0.1], "selector": ["geo", "avg"]}
    search = GridSearchCV(base, grid, cv=3).fit(TEXTS, LABELS)
    best = search.best_estimator_
    assert search.best_params_["alpha"] in grid["alpha"]
    assert search.best_params_["selector"] in grid["selector"]
    assert (best.config.alpha, best.config.selector) == \
        (search.best_params_["alpha"], search.best_params_["selector"])
    assert search.best_score_ == max(search.cv_results_["mean_test_score"]) > 0.6
    assert best.embedder is emb and best.experts == sorted(CORPORA)
    assert best.route("Compute 3 + 4 and explain.").expert == "math"
    assert search.predict(PROMPTS[:2]).tolist() == ["math", "coding"]
    assert base._state is None and base.config == RouterConfig()
    presets = GridSearchCV(base, {"config": ["default", "paper"]}, cv=3).fit(TEXTS, LABELS)
    first, second = presets.cv_results_["mean_test_score"]
    assert first != second  # each candidate routed with its own preset
    # (fitted: its cap, None in the preset, is the number the statistics counted)
    assert presets.best_estimator_.config == RouterConfig.preset(
        presets.best_params_["config"], max_tokens=DEFAULT_MAX_TOKENS)
    # a grid that names the embedder: sklearn deep-copies grid values, not the table
    named = GridSearchCV(base, {"embedder": [emb], "alpha": [0.03]}, cv=3).fit(TEXTS, LABELS)
    assert named.best_estimator_.embedder is emb


# ----------------------------------------------------------------------------- probe fixes
def assert_same_arrays(got: DomainStats, want: DomainStats) -> None:
    """``got`` holds exactly ``want``'s numbers, and the same optional arrays."""
    np.testing.assert_array_equal(got.A, want.A)
    np.testing.assert_array_equal(got.b, want.b)
    assert (got.n_tokens, got.n_prompts) == (want.n_tokens, want.n_prompts)
    for key in ("counts", "doc_counts"):
        assert (getattr(got, key) is None) == (getattr(want, key) is None), key
        if getattr(want, key) is not None:
            np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
    assert (got.pairs is None) == (want.pairs is None)
    if want.pairs is not None:
        for a, b in zip(got.pairs, want.pairs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_save_keeps_each_experts_arrays_as_it_has_them(emb: Embedder, toy_stats,
                                                       tmp_path: Path) -> None:
    """An expert without pairs (or counts) used to cost every other expert theirs in the
    saved file: the loaded router could then not take back pair features."""
    mixed = {"math": toy_stats["math"],
             "coding": dataclasses.replace(toy_stats["coding"], pairs=None),
             "law": streaming_stats(emb, CORPORA["law"], domain="law")}
    router = Router(emb, "dense").fit_stats(mixed)
    router.save(tmp_path / "mixed.st")
    loaded = Router.load(tmp_path / "mixed.st")
    for name, stats in mixed.items():
        assert_same_arrays(loaded.stats[name], stats)
    assert_same_state(loaded, router)
    # The probe's scenario: with the expert without pairs gone, the others take them back.
    law = dataclasses.replace(toy_stats["law"], pairs=None)
    router = Router(emb, "unigram").fit_stats([toy_stats["math"], toy_stats["coding"], law])
    router.save(tmp_path / "u.st")
    loaded = Router.load(tmp_path / "u.st")
    for r in (router, loaded):
        r.remove_expert("law")
        r.set_params(config="default")
    assert_same_state(loaded, router)
    # Where every expert has an array, the file is as before (older ir3de reads it).
    toy_router_file = tmp_path / "all.st"
    Router(emb).fit_stats(toy_stats).save(toy_router_file)
    tensors, _ = read_safetensors(toy_router_file)
    assert not {"counts_experts", "doc_counts_experts", "pair_experts"} & tensors.keys()


def test_load_refuses_bad_expert_lists_of_arrays(emb: Embedder, toy_stats,
                                                 tmp_path: Path) -> None:
    mixed = {"math": toy_stats["math"],
             "coding": dataclasses.replace(toy_stats["coding"], pairs=None)}
    Router(emb, "unigram").fit_stats(mixed).save(tmp_path / "ok.st")
    tensors, meta = read_safetensors(tmp_path / "ok.st")
    assert tensors["pair_experts"].tolist() == [0]
    for bad, message in (
            ({"pair_experts": np.array([1, 0])}, "'pair_experts' must list distinct expert "
                                                 "indices in ascending order, each below 2"),
            ({"pair_experts": np.array([2])}, "'pair_experts' must list distinct"),
            ({"pair_experts": np.array([0, 1])}, "token-pair tensors do not match 2 experts"),
            ({"counts_experts": np.array([1])}, r"token counts do not match 1 experts and a "
                                                r"vocabulary of 32000")):
        write_safetensors(tmp_path / "bad.st", {**tensors, **bad}, meta)
        with pytest.raises(StatsFormatError, match=rf"bad\.st: .*{message}"):
            Router.load(tmp_path / "bad.st")
    without = {k: v for k, v in tensors.items() if not k.startswith("pair_") or k == "pair_experts"}
    write_safetensors(tmp_path / "bad.st", without, meta)
    with pytest.raises(StatsFormatError, match="holds 'pair_experts' but no token-pair tensors"):
        Router.load(tmp_path / "bad.st")
    # so is the expert list of any other optional array without the array
    for key, message in (("counts", "'counts_experts' but no 'counts'"),
                         ("tfidf", "'tfidf_experts' but no TF-IDF tensors")):
        kept = {k: v for k, v in tensors.items() if k != key}  # (the file has no TF-IDF)
        write_safetensors(tmp_path / "bad.st", {**kept, f"{key}_experts": np.array([0])}, meta)
        with pytest.raises(StatsFormatError, match=rf"bad\.st: holds {message}"):
            Router.load(tmp_path / "bad.st")


def test_word_order_tells_experts_apart_where_pairs_are_read(emb: Embedder) -> None:
    """The same tokens in another order have the same token counts but not the same pairs:
    the default router (which reads pairs) tells them apart; a router that reads no pairs
    would tie on every prompt and refuses them, saying why."""
    texts, labels = ["dog bites man", "man bites dog"], ["news", "gossip"]
    router = Router(emb).fit(texts, labels)
    assert router.predict(texts).tolist() == labels
    why = (r"hold exactly the same counts, but for token pairs, which these settings do not "
           r"read .*: they would tie on every prompt")
    with pytest.raises(ExpertError, match=why):
        Router(emb, "unigram").fit(texts, labels)
    with pytest.raises(ExpertError, match=why):
        router.set_params(selector="avg")
    assert router.config.selector == "geo"  # the refused change left it as it was
    alone = Router(emb).fit([texts[0], "What is 2 + 2?"], ["news", "math"])
    gossip = compute_stats(emb, texts[1:], domain="gossip")
    alone.add_expert("gossip", gossip)
    with pytest.raises(ExpertError, match=r"the new expert 'g' holds exactly the counts of "
                                          r"expert 'news', but for token pairs"):
        Router(emb, "unigram").fit(texts[:1], ["news"]).add_expert("g", gossip)


def test_ignored_refuses_a_lone_setting_name() -> None:
    """A str is an iterable of its characters: ignored("alpha") checked 'a', 'l', ….
    It is refused as everywhere else a list is expected."""
    with pytest.raises(IR3DEError, match=r"setting names must be a list .* not a single str"):
        RouterConfig.preset("paper").ignored("alpha")
    assert RouterConfig.preset("paper").ignored(["alpha"]) == ("alpha", "model", "nb")


def test_prompts_of_unknown_tokens_say_so(make_model_folder) -> None:
    """A WordPiece or WordLevel tokenizer turns what it does not know into [UNK], a special
    token that is dropped: the prompt was reported as "empty or only special tokens"."""
    folder, _ = make_model_folder()
    router = Router(folder).fit(["hello world", "math code"], ["greeting", "tech"])
    with pytest.raises(EmptyInputError, match=r"^prompt #1 has no token to route on \(the "
                                              r"tokenizer of tiny does not know its characters "
                                              r"or words: they become \[UNK\], which carries "
                                              r"no routing signal\)$"):
        router.route_batch(["hello", "zebra giraffe"])
    with pytest.raises(EmptyInputError, match=r"^prompt #0 has no token to route on \(empty, "
                                              r"or only special tokens and white space\)$"):
        router.route("</s> [PAD]")


def test_minilm_prompts_of_unknown_tokens_say_so(minilm: Embedder) -> None:
    """The probe's case: emoji and runes are [UNK] to MiniLM's WordPiece vocabulary."""
    router = Router(minilm).fit(["What is 2+2?", "import os"], ["math", "code"])
    with pytest.raises(EmptyInputError, match=r"^prompt #0 has no token to route on \(the "
                                              r"tokenizer of all-MiniLM-L6-v2 does not know"):
        router.route("🤖🤖 ᚠᚢᚦ")


def test_embedder_arguments_take_what_load_embedder_takes() -> None:
    """Router accepts an embedder recipe (a dict), as compute_stats and load_embedder do:
    its annotations say so, and methods that return the router are typed as its class."""
    import typing

    hints = typing.get_type_hints(Router.__init__)
    assert dict[str, typing.Any] in typing.get_args(hints["embedder"])
    assert typing.get_type_hints(Router.load)["embedder"] == hints["embedder"]
    for method in (Router.fit, Router.fit_stats, Router.add_expert, Router.set_params,
                   Router.load):
        returned = typing.get_type_hints(method)["return"]
        assert isinstance(returned, typing.TypeVar) and returned.__bound__ is not None, method
    assert isinstance(Router({"kind": "wordllama"}).embedder, Embedder)


def test_public_types_and_the_typed_marker() -> None:
    """Decision.tokens holds VotingTokens and DomainStats.pairs a PairCounts (which the README
    passes to dataclasses.replace): both are importable from ir3de. `from ir3de.errors
    import *` gives the exceptions only, and the package ships its py.typed marker."""
    import ir3de
    from ir3de import PairCounts, VotingToken
    from ir3de.router import VotingToken as RouterVotingToken
    from ir3de.statistics import PairCounts as StatsPairCounts

    assert VotingToken is RouterVotingToken and PairCounts is StatsPairCounts
    assert {"VotingToken", "PairCounts"} <= set(ir3de.__all__)
    namespace: dict[str, object] = {}
    exec("from ir3de.errors import *", namespace)
    assert sorted(k for k in namespace if not k.startswith("__")) == [
        "EmptyInputError", "ExpertError", "FingerprintMismatchError", "IR3DEError",
        "NotFittedError", "OutputExistsError", "StatsFormatError"]
    assert (Path(ir3de.__file__).parent / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["ir3de"]


def test_repr_names_the_changed_settings_and_the_experts(toy_router: Router, emb) -> None:
    assert repr(Router(emb, "paper")) == (
        f"Router(embedder={emb.name!r}, model='ridge', pairs=None, spelling=None, k=10, "
        f"selector='topk', balance=False, identity=None, experts=None)")
    assert repr(toy_router).endswith(f"experts={toy_router.experts!r})")


def test_a_router_saved_with_a_name_now_refused_still_loads_and_can_lose_it(
        toy_router: Router, tmp_path: Path) -> None:
    """Names not in NFC, or with invisible characters, were accepted before: the routers,
    statistics and gateway state holding them must open, so that the expert can be removed
    or renamed; a new expert still gets the full check."""
    path = tmp_path / "old.safetensors"
    toy_router.save(path)
    tensors, meta = read_safetensors(path)
    legacy = "cafe\u0301"  # 'café' spelt with a combining accent
    meta["experts"][0]["name"] = legacy
    write_safetensors(path, tensors, meta)
    router = Router.load(path)
    assert router.experts[0] == legacy and router.route(PROMPTS[0]).expert in router.experts
    kept = router.experts[1:]
    router.remove_expert(legacy)
    assert router.experts == kept
    with pytest.raises(ExpertError, match=r"write it as 'café'"):
        router.add_expert(legacy, toy_router.stats[toy_router.experts[0]])


def test_predict_labels_by_the_experts_it_selected_with(emb: Embedder,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """predict selected with one state and read the experts anew: an expert removed (by
    another thread) meanwhile mislabelled its answers, or raised an IndexError."""
    router = Router(emb).fit(["What is 2 + 2?", "Solve x + 1 = 3.", "import os",
                              "def f(x): return x", "The court held the contract void.",
                              "The statute of limitations had expired."],
                             ["math", "math", "code", "code", "law", "law"])
    assert router.experts == ["code", "law", "math"]
    encode = emb.encode_batch

    def encode_then_remove(*args, **kwargs):
        ids = encode(*args, **kwargs)
        if "code" in router.experts:
            router.remove_expert("code")  # what another thread may do meanwhile
        return ids

    monkeypatch.setattr(emb, "encode_batch", encode_then_remove)
    assert router.predict(["What is 7 * 6?"]).tolist() == ["math"]


def test_predict_in_batches_is_predict_at_once(emb: Embedder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """predict and predict_proba tokenise and select a bounded batch at a time (a whole
    60,000 abstracts held 2.4 GB): the same results, and errors still number the prompt
    in the whole input."""
    import ir3de.router as router_module

    router = Router(emb).fit(["What is 2 + 2?", "Solve x + 1 = 3.", "import os",
                              "def f(x): return x"], ["math", "math", "code", "code"])
    prompts = ["What is 5 * 5?", "import sys", "x = 2 + 3", "Solve 2x = 4.", "def g(): pass"]
    whole, scores = router.predict(prompts), router.predict_proba(prompts)
    monkeypatch.setattr(router_module, "_BATCH", 2)
    assert router.predict(prompts).tolist() == whole.tolist()
    np.testing.assert_array_equal(router.predict_proba(prompts), scores)
    assert router.predict([]).shape == (0,) and router.predict_proba([]).shape == (0, 2)
    with pytest.raises(EmptyInputError, match=r"prompt #3 has no token to route on"):
        router.predict([*prompts[:3], "<s>", "import os"])
    # the tokenizer's own refusals too (they named the prompt's place in its batch: #1)
    with pytest.raises(IR3DEError, match=r"^text #3 holds an unpaired surrogate"):
        router.predict_proba([*prompts[:3], "\ud800", "import os"])


# ------------------------------------------------------------------ threads
@pytest.fixture
def slow_solves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each solve takes 50 ms longer: two changes made at once overlap for sure."""
    solve = Router._solve

    def slow(self, *args, **kwargs):
        state = solve(self, *args, **kwargs)
        time.sleep(0.05)
        return state

    monkeypatch.setattr(Router, "_solve", slow)


def _together(*calls) -> None:
    """Run ``calls`` (functions of no argument) in threads at once; raise what one raised."""
    errors: list[BaseException] = []

    def run(call) -> None:
        try:
            call()
        except BaseException as exc:  # (re-raised below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_changes_from_two_threads_are_both_kept(emb: Embedder, toy_stats,
                                                slow_solves: None) -> None:
    """Each change read the state, solved and wrote it back: two at once lost one, with no
    error (two add_expert calls: one expert; add_expert and set_params: the settings of
    one and the solution of the other, for good, until a reload re-solved it)."""
    router = Router(emb).fit_stats({n: toy_stats[n] for n in ("math", "coding")})
    _together(lambda: router.add_expert("law", toy_stats["law"]),
              lambda: router.add_expert("multilingual", toy_stats["multilingual"]))
    assert sorted(router.experts) == ["coding", "law", "math", "multilingual"]
    router.remove_expert("multilingual")
    _together(lambda: router.remove_expert("law"), lambda: router.set_params(alpha=0.1))
    assert router.experts == ["math", "coding"] and router.config.alpha == 0.1
    assert_same_state(router, Router(emb, alpha=0.1).fit_stats(
        {n: toy_stats[n] for n in ("math", "coding")}))
    _together(lambda: router.set_params(alpha=0.3),
              lambda: router.add_expert("law", toy_stats["law"]))
    assert router.smoothing[0] == router.config.alpha == 0.3
    assert_same_state(router, Router(emb, alpha=0.3).fit_stats(
        {n: toy_stats[n] for n in router.experts}))


def test_save_writes_one_state(emb: Embedder, toy_stats, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """save read the state for the tensors and again for the metadata: an expert swapped
    in between (by another thread) gave a file that saved but did not load."""
    router = Router(emb).fit_stats({n: toy_stats[n] for n in ("math", "coding", "law")})
    swapped = Router(emb).fit_stats({n: toy_stats[n] for n in ("math", "coding",
                                                                "multilingual")})
    fitted = Router._fitted

    def read_then_swap(self: Router):
        state = fitted.fget(self)
        self._state = swapped._state  # what another thread may do meanwhile
        return state

    monkeypatch.setattr(Router, "_fitted", property(read_then_swap))
    router.save(tmp_path / "r.safetensors")
    monkeypatch.undo()
    assert Router.load(tmp_path / "r.safetensors").experts == ["math", "coding", "law"]


def test_a_router_pickles_without_its_lock(toy_router: Router) -> None:
    """(joblib pickles estimators: cross_val_score(router, ..., n_jobs=2))"""
    copy = pickle.loads(pickle.dumps(toy_router))
    assert copy.route(PROMPTS[0]) == toy_router.route(PROMPTS[0])
    # its arrays stay read-only (unpickled, they came back writable: a change in place
    # would break the promise that removing an expert gives back a refit's router)
    stats = copy.stats[copy.experts[0]]
    assert not any(a.flags.writeable for a in (copy.W, stats.b, stats.counts,
                                               stats.doc_counts, *stats.pairs))
    assert copy.set_params(alpha=0.1).config.alpha == 0.1  # a lock of its own
    assert toy_router.config.alpha != 0.1


def test_score_takes_sample_weights_as_scikit_learn_does(toy_router: Router) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    texts = ["What is 3 + 5?", "import sys", "def f(): pass", "The court held the deal void.",
             "Compute 7 * 8.", "¿Cuántos años tienes?"]
    labels = ["math", "coding", "math", "law", "coding", "multilingual"]
    weight = [3, 1, 1, 2, 0.5, 1]
    predicted = toy_router.predict(texts).tolist()
    for w in (None, weight, np.array(weight)):
        assert toy_router.score(texts, labels, sample_weight=w) == pytest.approx(
            sklearn_metrics.balanced_accuracy_score(labels, predicted, sample_weight=w))
    assert toy_router.score(texts, labels, [1, 1, 1, 1, 1, 0]) == pytest.approx(
        toy_router.score(texts[:5], labels[:5]))  # a domain weighing 0 is left out
    # finite weights whose sums overflow (was a wrong score and numpy's overflow warning)
    assert toy_router.score(texts, labels, [1e308] * 6) == toy_router.score(texts, labels)
    for bad, message in (([1, 2], "2 values for 6 texts"), ("abcdef", "must be numbers"),
                         ([[1] * 6], r"one number per text, got an array of shape \(1, 6\)"),
                         (3, "must be numbers"), ([1, 1, 1, 1, 1, -1], "non-negative"),
                         ([0] * 6, "not all 0"), ([1, 1, 1, 1, 1, np.nan], "finite")):
        with pytest.raises(IR3DEError, match=message):
            toy_router.score(texts, labels, sample_weight=bad)
