"""Routing metrics and normalized performance against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ir3de.errors import IR3DEError

pytest.importorskip("sklearn", reason="the evaluation harness needs pip install 'ir3de[eval]'")

from ir3de.eval.metrics import (
    bootstrap_balanced,
    normalized_performance,
    percentile_interval,
    read_scores,
    routing_metrics,
    validate_scores,
)

DOMAINS = ["math", "code", "law"]


def test_metrics_equal_hand_computed_confusion() -> None:
    # Gold: 4 math, 3 code, 2 law. Hand-made confusion (rows gold, columns routed):
    #   math: 3 math, 1 code          -> recall 3/4
    #   code: 1 math, 2 code          -> recall 2/3
    #   law:  2 law                   -> recall 1
    gold = ["math"] * 4 + ["code"] * 3 + ["law"] * 2
    routed = ["math", "math", "code", "math", "math", "code", "code", "law", "law"]
    m = routing_metrics(gold, routed, DOMAINS)
    np.testing.assert_array_equal(m.confusion, [[3, 1, 0], [1, 2, 0], [0, 0, 2]])
    assert m.micro == pytest.approx(7 / 9)
    assert m.balanced == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    assert m.per_domain == pytest.approx({"math": 0.75, "code": 2 / 3, "law": 1.0})


def test_domain_without_test_prompts_is_left_out_of_balanced() -> None:
    m = routing_metrics(["math", "code"], ["math", "law"], DOMAINS)
    assert math.isnan(m.per_domain["law"])
    assert m.balanced == pytest.approx(0.5)  # (1 + 0) / 2, law not counted
    assert m.confusion[1, 2] == 1


@pytest.mark.parametrize(("gold", "routed", "match"), [
    (["math"], ["math", "code"], "1 gold labels but 2"),
    ([], [], "no test prompts"),
    (["math"], ["poetry"], "poetry"),
])
def test_metric_errors(gold, routed, match) -> None:
    with pytest.raises(IR3DEError, match=match):
        routing_metrics(gold, routed, DOMAINS)


def _scores() -> dict[tuple[str, str], float]:
    # Three prompts, two experts. Task scores (higher is better).
    return {("p1", "math"): 0.8, ("p1", "code"): 0.2,
            ("p2", "math"): 0.6, ("p2", "code"): 0.4,
            ("p3", "math"): 0.1, ("p3", "code"): 0.9}


def test_normalized_performance_task_scores_by_hand() -> None:
    ids, gold = ["p1", "p2", "p3"], ["math", "math", "code"]
    out = normalized_performance(_scores(), ids, gold, {"router": ["math", "code", "math"]},
                                 kind="task", experts=["math", "code"])
    # math: router mean (0.8 + 0.4) / 2 = 0.6; domain expert (0.8 + 0.6) / 2 = 0.7 -> 6/7.
    # code: router 0.1; domain expert 0.9 -> 1/9.
    assert out["router"]["domains"]["math"] == pytest.approx(0.6 / 0.7)
    assert out["router"]["domains"]["code"] == pytest.approx(0.1 / 0.9)
    assert out["router"]["average"] == pytest.approx((0.6 / 0.7 + 0.1 / 0.9) / 2)
    # Experts average: math expert everywhere -> math 1.0, code 0.1/0.9;
    #                  code expert everywhere -> math 0.3/0.7, code 1.0.
    assert out["experts average"]["domains"]["math"] == pytest.approx((1.0 + 0.3 / 0.7) / 2)
    assert out["experts average"]["domains"]["code"] == pytest.approx((0.1 / 0.9 + 1.0) / 2)
    assert out["domain expert"] == {"domains": {"math": 1.0, "code": 1.0}, "average": 1.0}


def test_normalized_performance_perplexity_is_expert_over_method() -> None:
    scores = {("a", "x"): 10.0, ("a", "y"): 20.0, ("b", "x"): 40.0, ("b", "y"): 8.0}
    out = normalized_performance(scores, ["a", "b"], ["x", "y"], {"r": ["y", "y"]},
                                 kind="perplexity", experts=["x", "y"])
    assert out["r"]["domains"]["x"] == pytest.approx(10.0 / 20.0)  # routed to the worse expert
    assert out["r"]["domains"]["y"] == pytest.approx(1.0)


def test_a_domain_named_average_keeps_its_own_column() -> None:
    """The row mean was stored under "average" beside the domains, so a domain of that
    name was overwritten by it (in results.json and in the report's table)."""
    scores = {("a", "average"): 1.0, ("a", "y"): 0.5, ("b", "average"): 0.2, ("b", "y"): 0.8}
    out = normalized_performance(scores, ["a", "b"], ["average", "y"],
                                 {"r": ["average", "average"]}, kind="task",
                                 experts=["average", "y"])
    assert out["r"]["domains"] == {"average": 1.0, "y": pytest.approx(0.25)}
    assert out["r"]["average"] == pytest.approx(0.625)


def test_normalized_performance_errors() -> None:
    scores = _scores()
    del scores[("p3", "code")]
    with pytest.raises(IR3DEError, match=r"1 .* scores missing.*p3"):
        normalized_performance(scores, ["p1", "p3"], ["math", "code"], {"r": ["math", "code"]},
                               kind="task", experts=["math", "code"])
    with pytest.raises(IR3DEError, match="score kind"):
        normalized_performance(_scores(), ["p1"], ["math"], {}, kind="bleu",  # type: ignore
                               experts=["math"])
    with pytest.raises(IR3DEError, match="1 decisions for 2 prompts"):
        normalized_performance(_scores(), ["p1", "p2"], ["math", "math"], {"r": ["math"]},
                               kind="task", experts=["math", "code"])


@pytest.mark.parametrize(("kind", "bad", "match"), [
    # A negative perplexity made random routing "beat" the domain expert (1.82 > 1.0).
    ("perplexity", -4.0, r"perplexity scores must be > 0 .* id 'p1' for expert 'code' has -4.0"),
    ("perplexity", 0.0, "perplexity scores must be > 0"),  # was a ZeroDivisionError
    ("task", -0.5, r"task scores must be >= 0 .* id 'p1' for expert 'code' has -0.5"),
])
def test_scores_that_make_the_ratio_meaningless_are_refused(kind, bad, match) -> None:
    scores = {k: v + 1 for k, v in _scores().items()}
    scores[("p1", "code")] = bad
    ids, gold = ["p1", "p2", "p3"], ["math", "math", "code"]
    with pytest.raises(IR3DEError, match=match):
        normalized_performance(scores, ids, gold, {"r": ["code", "code", "math"]}, kind=kind,
                               experts=["math", "code"])
    with pytest.raises(IR3DEError, match="^s.jsonl: " + match):
        validate_scores(scores, kind, source="s.jsonl")


def test_task_scores_need_a_non_zero_domain_expert() -> None:
    # The code expert scores 0 on the only code prompt: method / expert divided by zero.
    scores = {**_scores(), ("p3", "code"): 0.0}
    ids, gold = ["p1", "p2", "p3"], ["math", "math", "code"]
    with pytest.raises(IR3DEError, match=r"expert 'code' scores 0 on all 1 test prompts .*p3"):
        normalized_performance(scores, ids, gold, {"r": ["math", "code", "math"]},
                               kind="task", experts=["math", "code"])
    validate_scores(scores, "task")  # zeros alone are fine: they are only a method's score
    out = normalized_performance({**_scores(), ("p2", "code"): 0.0}, ids, gold,
                                 {"r": ["code", "code", "code"]}, kind="task",
                                 experts=["math", "code"])
    assert out["r"]["domains"]["math"] == pytest.approx(0.1 / 0.7)  # a method's zero score is fine


def test_validate_scores_against_test_prompts() -> None:
    validate_scores(_scores(), "task", ids=["p1", "p3"], gold=["math", "code"],
                    experts=["math", "code"])
    with pytest.raises(IR3DEError, match=r"f.jsonl: 1 \(id, expert\) scores missing.*'p4'"):
        validate_scores(_scores(), "task", source="f.jsonl", ids=["p1", "p4"],
                        gold=["math", "math"], experts=["math"])
    with pytest.raises(IR3DEError, match=r"gold domains \['law'\] have no expert"):
        validate_scores(_scores(), "task", ids=["p1"], gold=["law"], experts=["math", "code"])
    with pytest.raises(IR3DEError, match="needs ids, gold and experts"):
        validate_scores(_scores(), "task", ids=["p1"])
    for value in (float("inf"), float("nan"), "high", None):
        with pytest.raises(IR3DEError, match="perplexity scores must be > 0"):
            validate_scores({("p1", "math"): value}, "perplexity")  # type: ignore[dict-item]


def test_routing_to_an_expert_without_scores_is_refused() -> None:
    with pytest.raises(IR3DEError, match=r"r: routed to \['law'\], not among the experts"):
        normalized_performance(_scores(), ["p1"], ["math"], {"r": ["law"]}, kind="task",
                               experts=["math", "code"])


def test_read_scores(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "expert": e, "score": s})
                              for (i, e), s in _scores().items()) + "\n")
    assert read_scores(path) == _scores()
    assert read_scores(path, experts={e for _, e in _scores()}) == _scores()
    with pytest.raises(IR3DEError, match=r"scores\.jsonl:1: unknown expert '.*'; the experts "
                                         r"are nobody"):
        read_scores(path, experts={"nobody"})
    for bad, match in [('{"id": "p1", "expert": "math"}', "numeric 'score'"),
                       ('{"id": "p1", "expert": "math", "score": NaN}', "non-finite"),
                       ('{"id": "p1", "expert": "math", "score": "1.0"}',
                        "'score' must be a number, got \"1.0\""),
                       ('{"id": "p1", "expert": "math", "score": true}',
                        "'score' must be a number, got true"),
                       ('{"id": "p1", "expert": "m", "score": 1}\n'
                        '{"id": "p1", "expert": "m", "score": 2}', "repeats id 'p1'"),
                       ("", "no scores"), ("{oops", "invalid JSON")]:
        path.write_text(bad)
        with pytest.raises(IR3DEError, match=match):
            read_scores(path)


def test_bootstrap_keeps_domains_apart_and_matches_the_binomial_width() -> None:
    # Domain a: 400 prompts, all right; domain b: 400 prompts, half right. Stratified
    # resampling keeps a at 1.0, so balanced = (1 + p_b) / 2 with sd sqrt(.25 / 400) / 2.
    gold = ["a"] * 400 + ["b"] * 400
    correct = np.array([[True] * 400 + [True, False] * 200])
    samples = bootstrap_balanced(correct, gold, resamples=4000, seed=1)
    assert samples.shape == (1, 4000)
    low, high = percentile_interval(samples[0])
    assert low < 0.75 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.0125, rel=0.1)
    assert samples.min() >= 0.5  # domain a never loses a prompt to domain b's draws


def test_bootstrap_pairs_routers_on_the_same_resamples() -> None:
    rng = np.random.default_rng(0)
    gold = ["a"] * 300 + ["b"] * 100
    a = rng.random(400) < 0.9
    b = a.copy()
    b[:30] = False  # b = a with up to 30 more errors
    samples = bootstrap_balanced(np.array([a, a, b]), gold, resamples=1000)
    np.testing.assert_array_equal(samples[0], samples[1])  # same router, same resamples
    assert (samples[0] >= samples[2]).all()  # paired: b never beats a on any resample
    low, high = percentile_interval(samples[0] - samples[2])
    assert 0 < low < high


def test_bootstrap_draws_repeated_prompts_together() -> None:
    # Every prompt tested twice (e.g. once per fold) is still one observation: with ids the
    # resamples equal those of the prompts counted once; without, the interval is too narrow.
    rng = np.random.default_rng(2)
    gold = ["a"] * 200 + ["b"] * 200
    ids = [f"p{i}" for i in range(400)]
    once = rng.random((2, 400)) < 0.8
    twice = np.concatenate([once, once], axis=1)
    base = bootstrap_balanced(once, gold, resamples=800, seed=3)
    np.testing.assert_allclose(bootstrap_balanced(twice, gold * 2, ids * 2, resamples=800,
                                                  seed=3), base)
    naive = bootstrap_balanced(twice, gold * 2, resamples=800, seed=3)
    width = np.subtract(*percentile_interval(base[0])[::-1])
    assert np.subtract(*percentile_interval(naive[0])[::-1]) < 0.85 * width


def test_bootstrap_draws_in_blocks_as_in_one_call() -> None:
    """Past one block of resamples, the draws go on where the block left them: the samples
    are those of drawing every resample of a domain at once (the memory is bounded)."""
    rng = np.random.default_rng(5)
    gold = list(rng.choice(["a", "b", "c"], 40))
    correct = rng.random((3, 40)) < 0.7
    samples = bootstrap_balanced(correct, gold, resamples=5000, seed=2)
    draw = np.random.default_rng(2)
    expected = np.zeros((3, 5000))
    for domain in dict.fromkeys(gold):
        members = np.flatnonzero(np.array(gold) == domain)
        counts = draw.multinomial(members.size, np.full(members.size, 1 / members.size),
                                  size=5000)
        expected += (counts @ correct[:, members].T).T / members.size
    np.testing.assert_allclose(samples, expected / 3, rtol=1e-12)


@pytest.mark.parametrize(("correct", "gold", "ids", "kwargs", "match"), [
    (np.ones(3, bool), ["a"] * 3, None, {}, "boolean matrix"),
    (np.ones((1, 3)), ["a"] * 3, None, {}, "boolean matrix"),
    (np.ones((1, 3), bool), ["a"] * 2, None, {}, "3 decisions per router but 2 gold"),
    (np.ones((1, 2), bool), ["a"] * 2, ["x"], {}, "and 1 ids"),
    (np.ones((1, 0), bool), [], None, {}, "no test prompts"),
    (np.ones((1, 2), bool), ["a"] * 2, None, {"resamples": 0},
     "resamples must be from 1 to 1,000,000, got 0"),
    # (the draws alone would take 800 GB: refused before any)
    (np.ones((1, 2), bool), ["a"] * 2, None, {"resamples": 10**11}, "got 100000000000"),
])
def test_bootstrap_errors(correct, gold, ids, kwargs, match) -> None:
    with pytest.raises(IR3DEError, match=match):
        bootstrap_balanced(correct, gold, ids, **kwargs)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5])
def test_percentile_interval_level_errors(level: float) -> None:
    with pytest.raises(IR3DEError, match="level must be in"):
        percentile_interval(np.arange(10.0), level)


def test_numpy_inputs_and_empty_samples() -> None:
    """Labels in numpy arrays used to fail on `if not gold` (an array has no truth value),
    and an empty sample array with numpy's IndexError."""
    m = routing_metrics(np.array(["a", "b"]), np.array(["a", "a"]), np.array(["a", "b"]))
    assert (m.micro, m.balanced, m.domains) == (0.5, 0.5, ["a", "b"])
    with pytest.raises(IR3DEError, match=r"^labels \['c'\] are not among the domains "
                                         r"\['a', 'b'\]$"):
        routing_metrics(np.array(["a", "c"]), np.array(["a", "a"]), ["a", "b"])
    with pytest.raises(IR3DEError, match="no test prompts to score"):
        routing_metrics(np.array([]), np.array([]), ["a"])
    with pytest.raises(ValueError, match="no bootstrap samples to take a percentile interval"):
        percentile_interval(np.array([]))
