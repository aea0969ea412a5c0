"""Routing metrics and normalized performance against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ir3de.errors import IR3DEError

pytest.importorskip("sklearn", reason="the evaluation harness needs pip install 'ir3de[eval]'")

from ir3de.eval.metrics import normalized_performance, read_scores, routing_metrics

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
    assert out["router"]["math"] == pytest.approx(0.6 / 0.7)
    assert out["router"]["code"] == pytest.approx(0.1 / 0.9)
    assert out["router"]["average"] == pytest.approx((0.6 / 0.7 + 0.1 / 0.9) / 2)
    # Experts average: math expert everywhere -> math 1.0, code 0.1/0.9;
    #                  code expert everywhere -> math 0.3/0.7, code 1.0.
    assert out["experts average"]["math"] == pytest.approx((1.0 + 0.3 / 0.7) / 2)
    assert out["experts average"]["code"] == pytest.approx((0.1 / 0.9 + 1.0) / 2)
    assert out["domain expert"] == {"math": 1.0, "code": 1.0, "average": 1.0}


def test_normalized_performance_perplexity_is_expert_over_method() -> None:
    scores = {("a", "x"): 10.0, ("a", "y"): 20.0, ("b", "x"): 40.0, ("b", "y"): 8.0}
    out = normalized_performance(scores, ["a", "b"], ["x", "y"], {"r": ["y", "y"]},
                                 kind="perplexity", experts=["x", "y"])
    assert out["r"]["x"] == pytest.approx(10.0 / 20.0)  # routed to the worse expert
    assert out["r"]["y"] == pytest.approx(1.0)


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


def test_read_scores(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "expert": e, "score": s})
                              for (i, e), s in _scores().items()) + "\n")
    assert read_scores(path) == _scores()
    for bad, match in [('{"id": "p1", "expert": "math"}', "numeric 'score'"),
                       ('{"id": "p1", "expert": "math", "score": "NaN"}', "non-finite"),
                       ('{"id": "p1", "expert": "m", "score": 1}\n'
                        '{"id": "p1", "expert": "m", "score": 2}', "repeats id 'p1'"),
                       ("", "no scores"), ("{oops", "invalid JSON")]:
        path.write_text(bad)
        with pytest.raises(IR3DEError, match=match):
            read_scores(path)
