"""The evaluation harness end to end on seeded subsamples of every setting."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ir3de import Embedder, Router, compute_stats
from ir3de.errors import IR3DEError

pytest.importorskip("sklearn", reason="the evaluation harness needs pip install 'ir3de[eval]'")
pytest.importorskip("matplotlib", reason="the evaluation harness needs pip install 'ir3de[eval]'")

from ir3de.eval import K_GRID, SETTINGS, Setting, Split, evaluate, load_setting, write_report
from ir3de.eval.harness import check_scores, make_baselines

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(data_dir: Path, emb: Embedder) -> dict[str, dict]:
    """Every setting on a seeded subsample: IR3DE (WordLlama), random and TF-IDF + LR.

    reasoning-2fold keeps its whole fit data so its accuracy can be held to the bar.
    """
    out = {}
    for name in SETTINGS:
        max_fit = None if name == "reasoning-2fold" else 300
        setting = load_setting(name, data_dir, seed=0, max_fit=max_fit, max_test=150)
        out[name] = evaluate(setting, embedders=[emb],
                             baselines=make_baselines(["random", "tfidf"]), progress=False)
    return out


def _router(result: dict, name: str) -> dict:
    return next(r for r in result["routers"] if r["name"] == name)


def test_every_router_of_the_grid_is_reported(results: dict[str, dict]) -> None:
    for result in results.values():
        ir3de = [r for r in result["routers"] if r["family"] == "ir3de"]
        assert len(ir3de) == 2 * (len(K_GRID) + 3)  # two presets x (topk grid, all, avg, geo)
        assert sum(r["is_preset"] for r in ir3de) == 2
        for r in result["routers"]:
            assert 0.0 <= r["balanced"] <= 1.0 and r["route_us"] > 0 and r["fit_s"] >= 0
            assert sum(map(sum, r["confusion"])) == sum(
                sum(s["test"].values()) for s in result["splits"])


def test_random_is_near_one_over_the_number_of_domains(results: dict[str, dict]) -> None:
    for name, result in results.items():
        chance = 1 / len(result["domains"])
        assert _router(result, "random")["balanced"] == pytest.approx(chance, abs=0.07), name


def test_default_ir3de_on_two_fold_is_at_least_90_percent(results: dict[str, dict]) -> None:
    result = results["reasoning-2fold"]
    default = next(r for r in result["routers"] if r["family"] == "ir3de"
                   and r["preset"] == "default" and r["is_preset"])
    assert default["balanced"] >= 0.90, default["per_domain"]
    assert [s["split"] for s in default["splits"]] == ["fold0", "fold1"]


def test_ir3de_beats_random_everywhere(results: dict[str, dict]) -> None:
    for name, result in results.items():
        best_preset = max(r["balanced"] for r in result["routers"] if r.get("is_preset"))
        assert best_preset > _router(result, "random")["balanced"] + 0.4, name


def test_intervals_bracket_the_figures_and_the_gap_to_the_best_baseline(
        results: dict[str, dict]) -> None:
    for name, result in results.items():
        kept = [r for r in result["routers"] if "balanced_ci" in r]
        # Preset routers and baselines get intervals; the rest of the selector grid does not.
        assert {r["name"] for r in kept} == {r["name"] for r in result["routers"]
                                             if r.get("is_preset") or r["family"] != "ir3de"}
        for r in kept:
            low, high = r["balanced_ci"]
            assert low <= r["balanced"] <= high and high - low < 0.3, (name, r["name"])
        comparison = result["comparison"]
        assert comparison["baseline"] == "TF-IDF+LR" and comparison["level"] == 0.95
        tfidf = next(r for r in result["routers"] if r["name"] == "TF-IDF+LR")
        assert len(comparison["differences"]) == 2  # the two presets
        for router, d in comparison["differences"].items():
            own = next(r for r in result["routers"] if r["name"] == router)
            assert d["difference"] == pytest.approx(own["balanced"] - tfidf["balanced"])
            assert d["low"] <= d["difference"] <= d["high"], (name, router)
    # Clear gaps on these subsamples must come out as such, not as noise: the paper preset's
    # top-k vote is far below TF-IDF + LR on domains, the default far above it on xdata.
    differences = {name: r["comparison"]["differences"] for name, r in results.items()}
    assert differences["domains"]["IR3DE topk k=10 [wordllama, paper]"]["high"] < 0
    assert differences["reasoning-xdata"]["IR3DE geo [wordllama, default]"]["low"] > 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"resamples": -1}, "resamples must be 0 .no intervals. or from 100 to 1,000,000, got -1"),
    # One resample gave a zero-width interval, so every gap was marked significant.
    ({"resamples": 1}, "resamples must be 0 .no intervals. or from 100 to 1,000,000, got 1"),
    ({"resamples": 10**11}, "or from 100 to 1,000,000, got 100000000000"),
    ({"level": 1.0}, "level must be in")])
def test_interval_settings_are_checked_before_running(kwargs, match, data_dir: Path,
                                                      emb: Embedder) -> None:
    setting = load_setting("reasoning-xdata", data_dir, max_fit=5, max_test=5)
    with pytest.raises(IR3DEError, match=match):
        evaluate(setting, embedders=[emb], progress=False, **kwargs)


def test_report_results_and_plots_are_written(results: dict[str, dict], tmp_path: Path) -> None:
    meta = {"command": "pytest", "date": "today", "machine": "here", "data_dir": "data",
            "seed": 0, "max_fit": 300, "max_test": 150}
    report = write_report({"meta": meta, "settings": list(results.values())}, tmp_path)
    text = report.read_text()
    assert "## Preset routers against the best baseline (points, 95 % interval)" in text
    assert "balanced 95 % CI" in text
    for name in SETTINGS:
        assert f"## {name}" in text
        for kind in ("accuracy_vs_k", "confusion", "cost"):
            png = tmp_path / f"{kind}_{name}.png"
            assert png.read_bytes().startswith(PNG) and png.stat().st_size > 5000
            assert f"]({png.name})" in text
    assert "Leaks test prompts" in text
    loaded = json.loads((tmp_path / "results.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert [s["setting"] for s in loaded["settings"]] == list(SETTINGS)
    assert not list(tmp_path.glob("*.tmp*"))


def _never_run() -> None:
    pytest.fail("a router ran although the input was bad")


def _tiny(test_ids: list[str]) -> Setting:
    return Setting("tiny", "two domains", ["a", "b"],
                   [Split("all", {"a": ["one plus one"], "b": ["def f(): pass"]}, test_ids,
                          [f"prompt {i}" for i in test_ids], ["a", "b"][:len(test_ids)])])


def test_a_split_without_test_prompts_is_refused_before_running(emb: Embedder) -> None:
    """It used to fail with a ZeroDivisionError after the fit (time per test prompt)."""
    with pytest.raises(IR3DEError, match=r"setting 'tiny', split 'all': no test prompts"):
        evaluate(_tiny([]), embedders=[emb], baselines=[("random", _never_run)],
                 progress=False)


def test_a_test_prompt_without_a_token_is_named_by_its_id(emb: Embedder) -> None:
    """It was "prompt #1 has no token to route on": a place in the harness's reordered
    list, not a line of the file nor an id."""
    setting = Setting("tiny", "two domains", ["a", "b"],
                      [Split("all", {"a": ["one plus one"], "b": ["def f(): pass"]},
                             ["q7", "special-one"], ["two plus two", "<s>"], ["a", "b"])])
    with pytest.raises(IR3DEError, match=r"^split 'all': test prompt 'special-one' \(domain "
                                         r"'b'\) has no token to route on with .* \(empty, "
                                         r"or only special tokens and white space\): leave "
                                         r"it out"):
        evaluate(setting, embedders=[emb], presets=["default"], progress=False)


def test_missing_scores_are_found_before_running(emb: Embedder) -> None:
    """They used to be found after every router had run, without naming the setting."""
    scores = {("p1", "a"): 1.0, ("p1", "b"): 0.5, ("p2", "a"): 0.5}
    with pytest.raises(IR3DEError, match=r"^s.jsonl: setting 'tiny', split 'all': 1 \(id, "
                                         r"expert\) scores missing, e.g. id 'p2' for expert 'b'"):
        check_scores(_tiny(["p1", "p2"]), scores, "task", source="s.jsonl")
    with pytest.raises(IR3DEError, match=r"^setting 'tiny', split 'all': 1 \(id, expert\)"):
        evaluate(_tiny(["p1", "p2"]), embedders=[emb], baselines=[("random", _never_run)],
                 scores=scores, progress=False)
    check_scores(_tiny(["p1"]), scores, "task")


def test_test_prompts_dropped_as_fit_prompts_are_reported(data_dir: Path) -> None:
    """The domains corpora hold a few texts under two ids: the results count them."""
    setting = load_setting("domains", data_dir, max_test=5)  # the whole fit part
    result = evaluate(setting, embedders=[], baselines=make_baselines(["random"]),
                      resamples=0, progress=False)
    (split,) = result["splits"]
    assert split["dropped"] == setting.splits[0].dropped
    assert set(split["dropped"]) == set(setting.domains) and sum(split["dropped"].values()) > 0


def _three_domain_split(name: str, tests: dict[str, int], dropped: dict[str, int]) -> Split:
    ids = [f"{d}{i}" for d, n in tests.items() for i in range(n)]
    return Split(name, {"a": ["one plus one"], "b": ["def f(): pass"], "c": ["the court"]},
                 ids, [f"prompt {i}" for i in ids], [i[0] for i in ids], dropped)


def test_dropped_and_too_few_test_prompts_are_warned_about_before_the_run(
        caplog: pytest.LogCaptureFixture) -> None:
    """Both used to go unsaid: results.json alone counted the dropped prompts, and one test
    prompt per domain got a "95 % CI [100.0, 100.0]" without a word."""
    setting = Setting("tiny", "three domains", ["a", "b", "c"],
                      [_three_domain_split("all", {"a": 1, "b": 25}, {"a": 2, "b": 0, "c": 0})])
    with caplog.at_level("WARNING", logger="ir3de.eval"):
        result = evaluate(setting, embedders=[], baselines=make_baselines(["random"]),
                          resamples=0, progress=False)
    expected = ["setting 'tiny': 2 test prompts left out because the same text is also a fit "
                "prompt (a 2)",
                "setting 'tiny': fewer than 20 test prompts in a (1); their accuracies and the "
                "bootstrap intervals are not meaningful",
                "setting 'tiny': no test prompts in c; it is routed to but never tested, and "
                "not in the balanced mean"]
    assert caplog.messages == [f"ir3de: warning: {w}" for w in expected]
    assert [r.name for r in caplog.records] == ["ir3de.eval.harness"] * 3
    assert result["warnings"] == expected
    assert result["test_prompts"] == {"a": 1, "b": 25, "c": 0}


def test_a_test_text_under_two_domains_is_warned_about() -> None:
    """The same text labelled math under one id and coding under another capped every
    router's accuracy without a word."""
    from ir3de.eval.harness import data_warnings

    split = Split("all", {"math": ["one plus one"], "coding": ["def f(): pass"]},
                  ["d1", "d2", "d3", "d4"], ["2 + 2?", "2 + 2? ", "import os", "x = 1"],
                  ["math", "math", "coding", "coding"])
    assert data_warnings(Setting("tiny", "two domains", ["math", "coding"], [split])) == [
        "setting 'tiny': fewer than 20 test prompts in math (2), coding (2); their "
        "accuracies and the bootstrap intervals are not meaningful"]
    split.test_labels[1] = "coding"
    assert data_warnings(Setting("tiny", "two domains", ["math", "coding"], [split]))[-1] == \
        "setting 'tiny': 1 test text stands under several domains (e.g. 'd1' as math, " \
        "'d2' as coding); no router can route it right every time"


def test_an_untested_domain_is_not_warned_about_as_too_few_test_prompts(
        caplog: pytest.LogCaptureFixture) -> None:
    """A domain without test prompts made "fewer than 20 test prompts in c (0); ... not
    meaningful" of domains tested on plenty."""
    setting = Setting("untested", "three domains", ["a", "b", "c"],
                      [_three_domain_split("all", {"a": 20, "b": 25}, {})])
    with caplog.at_level("WARNING", logger="ir3de.eval"):
        result = evaluate(setting, embedders=[], baselines=make_baselines(["random"]),
                          resamples=0, progress=False)
    assert result["warnings"] == ["setting 'untested': no test prompts in c; it is routed to "
                                  "but never tested, and not in the balanced mean"]
    assert caplog.messages == [f"ir3de: warning: {result['warnings'][0]}"]


def test_test_prompts_are_counted_once_over_splits_and_drops_per_split(
        caplog: pytest.LogCaptureFixture) -> None:
    # Two folds testing the same 10 prompts of "a": 10 prompts, not 20, for the bootstrap.
    setting = Setting("folds", "three domains", ["a", "b", "c"],
                      [_three_domain_split("fold0", {"a": 10, "b": 20, "c": 20}, {"a": 1}),
                       _three_domain_split("fold1", {"a": 10, "b": 20, "c": 20}, {"c": 3})])
    with caplog.at_level("WARNING", logger="ir3de.eval"):
        result = evaluate(setting, embedders=[], baselines=make_baselines(["random"]),
                          resamples=0, progress=False)
    assert result["test_prompts"] == {"a": 10, "b": 20, "c": 20}
    assert result["warnings"] == [
        "setting 'folds': 4 test prompts left out because the same text is also a fit prompt "
        "(split 'fold0': a 1; split 'fold1': c 3)",
        "setting 'folds': fewer than 20 test prompts in a (10); their accuracies and the "
        "bootstrap intervals are not meaningful"]
    caplog.clear()
    enough = Setting("enough", "three domains", ["a", "b", "c"],
                     [_three_domain_split("all", {"a": 20, "b": 20, "c": 20}, {"a": 0})])
    with caplog.at_level("WARNING", logger="ir3de.eval"):
        assert evaluate(enough, embedders=[], baselines=make_baselines(["random"]),
                        resamples=0, progress=False)["warnings"] == []
    assert caplog.messages == []


# ----------------------------------------------------------------------------- probe fixes
def test_nothing_to_evaluate_is_refused_up_front() -> None:
    """No embedder and no baseline ended in an internal message about a boolean matrix."""
    with pytest.raises(IR3DEError, match=r"^nothing to evaluate: no IR3DE embedder \(with a "
                                         r"preset\), no baseline and no saved router$"):
        evaluate(_tiny(["p1", "p2"]), embedders=[], baselines=[], progress=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Setting:
    """The inline corpora as a custom setting (30 % of each domain tested)."""
    from conftest import CORPORA

    from ir3de.eval import custom_setting

    data = tmp_path_factory.mktemp("small") / "fit.jsonl"
    data.write_text("".join(json.dumps({"text": t, "domain": d}) + "\n"
                            for d, texts in CORPORA.items() for t in texts))
    return custom_setting(data)


def test_repeated_presets_embedders_and_baselines_count_once(small: Setting,
                                                             emb: Embedder) -> None:
    """Each repeat pooled every figure twice: confusion sums doubled, splits listed twice."""
    result = evaluate(small, embedders=[emb, emb], presets=["default", "default"],
                      baselines=make_baselines(["random", "random"]), resamples=0,
                      progress=False)
    tested = len(small.splits[0].test_texts)
    names = [r["name"] for r in result["routers"]]
    assert len(names) == len(set(names)) == len(K_GRID) + 3 + 1
    for r in result["routers"]:
        assert sum(map(sum, r["confusion"])) == tested and len(r["splits"]) == 1, r["name"]
    from ir3de.baselines import RandomRouter

    with pytest.raises(IR3DEError, match=r"baselines \['random'\] are given twice"):
        evaluate(small, embedders=[], baselines=[("random", RandomRouter)] * 2, progress=False)
    # Two different tables under one name would pool into one row: refused, not merged.
    from types import SimpleNamespace

    twins = [SimpleNamespace(spec={}, name="mine", fingerprint=f) for f in ("f1", "f2")]
    with pytest.raises(IR3DEError, match=r"two different embedders are both named 'mine'"):
        evaluate(small, embedders=twins, progress=False)  # type: ignore[arg-type]


def _saved(setting: Setting, emb: Embedder, rename: dict[str, str] | None = None) -> Router:
    """A router fitted on ``setting``'s fit prompts (domains renamed by ``rename``)."""
    split = setting.splits[0]
    return Router(emb).fit(split.fit_texts, [(rename or {}).get(d, d)
                                             for d in split.fit_labels])


def test_a_saved_router_is_scored_as_it_is(small: Setting, emb: Embedder) -> None:
    """ir3de eval could only score routers it fitted itself, not one a user had built."""
    saved = _saved(small, emb)
    saved.set_params(selector="topk", k=2)
    result = evaluate(small, embedders=[emb], presets=["default"],
                      baselines=make_baselines(["random", "tfidf"]), routers={"mine": saved},
                      resamples=200, keep_decisions=True, progress=False)
    mine = _router(result, "mine")
    assert mine["family"] == "saved" and mine["fit_s"] is None and mine["route_us"] > 0
    assert (mine["selector"], mine["k"]) == ("topk", 2)
    split = small.splits[0]
    routed = list(saved.predict(split.test_texts))
    assert [d["routed"]["mine"] for d in result["decisions"]] == routed
    hits = [r == g for r, g in zip(routed, split.test_labels, strict=True)]
    assert mine["micro"] == pytest.approx(sum(hits) / len(hits))
    # the same selector fitted here scores the same: it is the same router
    assert mine["balanced"] == _router(result, "IR3DE topk k=2 [wordllama, default]")["balanced"]
    # compared with the best baseline, never counted as one
    assert result["comparison"]["baseline"] == "TF-IDF+LR" and "mine" in \
        result["comparison"]["differences"] and "balanced_ci" in mine


def test_decisions_explain_each_error_against_its_gold_domain(small: Setting,
                                                             emb: Embedder) -> None:
    """decisions.jsonl's evidence: for every prompt an IR3DE router (a preset's, a saved
    one) misrouted and only for those, the largest terms against the gold expert, as
    routing it alone with ``explain=True, against=gold`` gives them; baselines have none."""
    from ir3de.eval import render_markdown
    from ir3de.eval.harness import ERROR_TERMS, EVIDENCE_TERMS

    saved = _saved(small, emb)
    saved.set_params(selector="topk", k=1)
    result = evaluate(small, embedders=[emb], presets=["default", "paper"],
                      baselines=make_baselines(["random"]), routers={"mine": saved},
                      resamples=0, keep_decisions=True, progress=False)
    split = small.splits[0]
    stats = {d: compute_stats(emb, texts, domain=d) for d, texts in split.fit.items()}
    routers = {"mine": saved,
               "IR3DE topk k=10 [wordllama, paper]": Router(emb, "paper").fit_stats(stats),
               "IR3DE geo [wordllama, default]": Router(emb).fit_stats(stats)}
    text = dict(zip(split.test_ids, split.test_texts, strict=True))
    explained = dict.fromkeys(routers, 0)
    for d in result["decisions"]:
        wrong = {name for name, got in d["routed"].items() if got != d["gold"]}
        assert set(d.get("evidence", {})) == wrong - {"random"}
        for name, router in routers.items():
            if name in wrong:
                want = router.route(text[d["id"]], explain=True, against=d["gold"]).evidence
                assert d["evidence"][name] == [e.__dict__ for e in want[:EVIDENCE_TERMS]]
                assert len(d["evidence"][name]) == min(EVIDENCE_TERMS, len(want))
                explained[name] += 1
    assert min(explained.values()) >= 1, explained  # every router's errors compared

    # error_terms: each router's errors, and the terms that pulled most of them away
    summary = result["error_terms"]
    assert set(summary) == set(routers)
    for name, info in summary.items():
        errors = [d["evidence"][name] for d in result["decisions"] if name in
                  d.get("evidence", {})]
        assert info["errors"] == len(errors) == explained[name]
        leads: dict[tuple, list[float]] = {}
        for terms in errors:
            for t in terms:
                if t["lead"] > 0:
                    leads.setdefault((t["kind"], tuple(t["tokens"])), []).append(t["lead"])
        shown = [(t["kind"], tuple(t["tokens"])) for t in info["terms"]]
        assert len(shown) == min(ERROR_TERMS, len(leads))
        for t, key in zip(info["terms"], shown, strict=True):
            assert (t["errors"], t["mean_lead"]) == (len(leads[key]),
                                                    pytest.approx(np.mean(leads[key])))
        counts = [t["errors"] for t in info["terms"]]
        assert counts == sorted(counts, reverse=True)
        assert all(len(v) <= counts[-1] for k, v in leads.items() if k not in shown)
    report = render_markdown({"settings": [result]}, {})
    section = report.split("What the IR3DE routers' errors rest on")[1].splitlines()
    for name, info in summary.items():
        row = next(line for line in section if line.startswith(f"| {name} |"))
        assert f"| {info['errors']} |" in row and f"({info['terms'][0]['errors']})" in row


def test_a_saved_router_must_route_to_the_settings_domains(small: Setting,
                                                            emb: Embedder) -> None:
    odd = _saved(small, emb, rename={"coding": "code"})
    with pytest.raises(IR3DEError, match=r"^router 'odd' does not fit setting 'custom': no "
                                         r"expert for the domains coding and experts code "
                                         r"that are not domains of the setting"):
        evaluate(small, embedders=[], routers={"odd": odd}, progress=False)
    with pytest.raises(IR3DEError, match=r"saved routers \['random'\] are named as other "
                                         r"routers"):
        evaluate(small, embedders=[], baselines=make_baselines(["random"]),
                 routers={"random": _saved(small, emb)}, progress=False)


def test_test_data_alone_scores_saved_routers_only(small: Setting, emb: Embedder,
                                                   tmp_path: Path) -> None:
    from ir3de.eval import test_setting

    split = small.splits[0]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": t, "domain": d}) + "\n" for i, (t, d)
                            in enumerate(zip(split.test_texts, split.test_labels, strict=True))
                            if d != "math"))
    saved = _saved(small, emb)
    setting = test_setting(data, saved.experts)
    assert setting.domains == saved.experts and setting.splits[0].fit == {}
    result = evaluate(setting, embedders=[], routers={"mine": saved}, resamples=0,
                      progress=False)
    assert [r["name"] for r in result["routers"]] == ["mine"]
    assert result["routers"][0]["per_domain"]["math"] is None  # routed to, never tested
    with pytest.raises(IR3DEError, match=r"setting 'custom' has no fit prompts: only saved "
                                         r"routers can be evaluated on it"):
        evaluate(setting, embedders=[emb], routers={"mine": saved}, progress=False)
    math = tmp_path / "math.jsonl"
    math.write_text(json.dumps({"id": "m", "text": "What is 2 + 2?", "domain": "math"}) + "\n")
    with pytest.raises(IR3DEError, match=r"math.jsonl: test domains math are not experts of "
                                         r"the router \(a, b, coding\); name them"):
        test_setting(math, ["a", "b", "coding"])


def test_a_seed_scikit_learn_refuses_is_refused_before_the_run() -> None:
    """2**32 failed in LogisticRegression, after the IR3DE routers had run."""
    with pytest.raises(IR3DEError, match=r"seed must be an integer in 0\.\.4294967295, got "
                                         r"4294967296"):
        make_baselines(["tfidf"], seed=2**32)
    assert len(make_baselines(["tfidf"], seed=2**32 - 1)) == 1


def test_a_hand_built_setting_is_checked_before_running(emb: Embedder) -> None:
    """Twin domains failed in the router ("identical statistics ... <memory>"), and a
    setting name such as "a/b" made plot subfolders."""
    twins = Setting("twins", "two domains", ["a", "b"],
                    [Split("all", {"a": ["one plus one"], "b": ["one plus one"]}, ["p1"],
                           ["prompt"], ["a"])])
    with pytest.raises(IR3DEError, match=r"^setting 'twins', split 'all': domains 'a' and 'b' "
                                         r"have the same fit prompts, so no router"):
        evaluate(twins, embedders=[emb], baselines=[("random", _never_run)], progress=False)
    bad = Setting("a/b", "two domains", _tiny(["p1"]).domains, _tiny(["p1"]).splits)
    with pytest.raises(IR3DEError, match=r"setting name 'a/b': use letters"):
        evaluate(bad, embedders=[emb], baselines=[("random", _never_run)], progress=False)


def test_the_kNN_model_load_is_charged_to_no_router() -> None:
    """The encoder loads its model on first use, outside its encoding time: k=1's fit time
    held the whole load, k=5's and k=10's none of it."""
    from types import SimpleNamespace

    from ir3de.eval.harness import _baseline_times

    class SlowLoad:  # loads in 0.3 s on first use; encoding itself is free
        def __init__(self) -> None:
            self.spent, self.load_s = 0.0, 0.0

        def encode(self, texts: list[str]) -> None:
            if not self.load_s:
                time.sleep(0.3)
                self.load_s = 0.3

        def cost(self, texts: list[str]) -> float:
            return 0.0

    encoder = SlowLoad()
    model = SimpleNamespace(encoder=encoder)
    times = [_baseline_times(model, lambda: encoder.encode(["a"]), ["a"])[1] for _ in range(2)]
    assert encoder.load_s and all(t < 0.1 for t in times), times


def test_warnings_list_five_domains_then_how_many_more(
        caplog: pytest.LogCaptureFixture) -> None:
    """The few-test-prompts warning listed all 340 domains on one line."""
    domains = [f"d{i}" for i in range(8)]
    ids = [f"{d}-0" for d in domains]
    setting = Setting("many", "eight domains", domains,
                      [Split("all", {d: [f"text of {d}"] for d in domains}, ids,
                             [f"prompt {i}" for i in ids], domains, dict.fromkeys(domains, 1))])
    with caplog.at_level("WARNING", logger="ir3de.eval"):
        result = evaluate(setting, embedders=[], baselines=make_baselines(["random"]),
                          resamples=0, progress=False)
    assert result["warnings"] == [
        "setting 'many': 8 test prompts left out because the same text is also a fit prompt "
        "(d0 1, d1 1, d2 1, d3 1, d4 1 and 3 more)",
        "setting 'many': fewer than 20 test prompts in d0 (1), d1 (1), d2 (1), d3 (1), d4 (1) "
        "and 3 more; their accuracies and the bootstrap intervals are not meaningful"]


class _Fixed:
    """A baseline whose factory takes no seed: it keeps its own."""

    name = "fixed"
    seed = 4

    def fit(self, texts: list[str], labels: list[str]) -> _Fixed:
        self.label = labels[0]
        return self

    def predict(self, texts: list[str]) -> list[str]:
        return [self.label] * len(texts)


class _Seeded(_Fixed):
    """A user's baseline class that takes a seed."""

    name = "seeded"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed


def test_baselines_are_trained_with_each_splits_seed() -> None:
    """Repeating a setting over seeds repeats the baselines' own random draw too: a factory
    that takes a seed gets the split's (make_baselines' seed serves a split without one),
    one that takes none is called as it is, and results keep the seed per split."""
    from ir3de.baselines import RandomRouter

    tests = {"a": 25, "b": 25, "c": 25}
    splits = [replace(_three_domain_split(f"s{s}", tests, {}), seed=s) for s in (1, 2, None)]
    setting = Setting("tiny", "three domains", ["a", "b", "c"], splits)
    class Numpy(_Fixed):  # a numpy integer seed is kept, as an int
        name = "numpy"
        seed = np.int64(6)

    def required(seed: int) -> _Seeded:  # a seed without a default is given one too
        model = _Seeded(seed)
        model.name = "required"
        return model

    result = evaluate(setting, embedders=[], resamples=0, keep_decisions=True, progress=False,
                      baselines=[*make_baselines(["random"], seed=9), ("seeded", _Seeded),
                                 ("fixed", _Fixed), ("numpy", Numpy)])
    seeds = {r["name"]: [s.get("seed") for s in r["splits"]] for r in result["routers"]}
    assert seeds == {"random": [1, 2, 9], "seeded": [1, 2, 0], "fixed": [4, 4, 4],
                     "numpy": [6, 6, 6]}
    json.dumps(result)  # results.json takes it as it is
    seeded = replace(setting, splits=splits[:2])
    needs = evaluate(seeded, embedders=[], resamples=0, progress=False,
                     baselines=[("required", required)])
    assert [s["seed"] for s in needs["routers"][0]["splits"]] == [1, 2]
    with pytest.raises(IR3DEError, match=r"split 'sNone': no seed, which baselines "
                                         r"\['required'\] need"):
        evaluate(setting, embedders=[], baselines=[("required", required)], progress=False)
    # Also behind another factory of its family that needs none (kNN's three share one).
    with pytest.raises(IR3DEError, match=r"split 'sNone': no seed, which baselines "
                                         r"\['mine'\] need"):
        evaluate(setting, embedders=[], baselines=[("mine", required), ("mine", _Fixed)],
                 progress=False)
    # The seed was the one really used, not only the one written down.
    for split, seed in zip(splits, (1, 2, 9), strict=True):
        want = RandomRouter(seed=seed).fit(split.fit_texts, split.fit_labels).predict(
            split.test_texts)
        got = [d["routed"]["random"] for d in result["decisions"] if d["split"] == split.name]
        assert got == list(want)


def test_a_split_seed_a_baseline_cannot_take_is_refused_before_the_run() -> None:
    """scikit-learn refuses a seed outside 0 .. 2**32 - 1 only when TF-IDF + LR is fitted,
    after the IR3DE routers of the split have run."""
    split = replace(_three_domain_split("s", {"a": 25, "b": 25, "c": 25}, {}), seed=2**32)
    setting = Setting("tiny", "three domains", ["a", "b", "c"], [split])
    with pytest.raises(IR3DEError, match=r"split 's': the seed must be an integer in "
                                         r"0\.\.4294967295, got 4294967296"):
        evaluate(setting, embedders=[], baselines=[("seeded", _Seeded)], progress=False)
    # A baseline that takes no seed does not care.
    assert evaluate(setting, embedders=[], baselines=[("fixed", _Fixed)], resamples=0,
                    progress=False)["routers"][0]["name"] == "fixed"
