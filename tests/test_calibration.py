"""ir3de.calibration: the gateway's fallback cuts from held-out or cross-fitted prompts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import CORPORA

from ir3de import Embedder, Router
from ir3de.calibration import DEFAULT_KEEP, calibrate, render_plot
from ir3de.errors import EmptyInputError, ExpertError, IR3DEError

TEXTS = [t for texts in CORPORA.values() for t in texts]
LABELS = [d for d, texts in CORPORA.items() for _ in texts]
HELD = ["What is 9 times 8?", "def mul(a, b):\n    return a * b", "The court dismissed the appeal.",
        "¿Qué planeta es el más grande?", "Solve 2x = 10.", "print('hello')"]
HELD_LABELS = ["math", "coding", "law", "multilingual", "math", "coding"]


@pytest.fixture(scope="module")
def router(emb: Embedder) -> Router:
    return Router(emb).fit(TEXTS, LABELS)


def _balanced(correct: np.ndarray, gold: np.ndarray, kept: np.ndarray) -> float:
    """Balanced accuracy of the kept prompts, written out the plain way."""
    return float(np.mean([correct[kept & (gold == d)].mean() for d in np.unique(gold)
                          if np.any(kept & (gold == d))]))


def test_cuts_keep_at_least_their_share_and_drop_the_lowest(router: Router) -> None:
    result = calibrate(router, HELD, HELD_LABELS)
    assert sorted({c.keep for c in result.cuts}, reverse=True) == list(DEFAULT_KEEP)
    assert result.knobs == ("threshold", "min_coverage")
    correct = np.array(result.routed) == np.array(HELD_LABELS)
    for cut in result.cuts:
        values = result.confidence if cut.knob == "threshold" else result.coverage
        assert values is not None
        kept = values >= cut.value
        assert cut.kept == kept.mean() >= cut.keep
        # the cut is a value some prompt has, and no more than 1 - keep of them fall below
        assert cut.value in values
        assert (values < cut.value).sum() <= math.floor((1 - cut.keep) * len(values) + 1e-9)
        assert cut.accuracy == pytest.approx(_balanced(correct, np.array(HELD_LABELS), kept))
        assert cut.least_kept is not None
        domain, share = cut.least_kept
        assert share == min(kept[np.array(HELD_LABELS) == d].mean() for d in set(HELD_LABELS))
        assert share == kept[np.array(HELD_LABELS) == domain].mean()
    assert result.accuracy == pytest.approx(_balanced(correct, np.array(HELD_LABELS),
                                                      np.ones(len(HELD), bool)))
    # what the gateway compares: the decisions' own confidence and coverage
    decisions = router.route_batch(HELD)
    assert list(result.confidence) == [d.confidence for d in decisions]
    assert result.coverage is not None
    assert list(result.coverage) == [d.coverage for d in decisions]


def test_ties_at_the_cut_are_all_kept(router: Router) -> None:
    texts = ["What is 9 times 8?"] * 4 + ["Solve 2x = 10."]  # four equal confidences
    result = calibrate(router, texts, keep=[0.5])
    cut = result.cut("threshold", 0.5)
    if result.confidence[-1] < result.confidence[0]:
        assert cut.value == result.confidence[0] and cut.kept == 0.8
    else:
        assert cut.value == result.confidence[0] and cut.kept == 1.0


def test_curve_is_every_cut_at_once(router: Router) -> None:
    result = calibrate(router, HELD * 2 + TEXTS[:7], HELD_LABELS * 2 + LABELS[:7])
    correct = np.array(result.routed) == np.array(result.gold)
    for knob in result.knobs:
        kept, accuracy = result.curve(knob)
        values = result.confidence if knob == "threshold" else result.coverage
        assert values is not None
        cuts = np.unique(values)
        assert kept.tolist() == [float(np.mean(values >= v)) for v in cuts]
        assert accuracy == pytest.approx([_balanced(correct, np.array(result.gold), values >= v)
                                          for v in cuts])


def test_folds_route_each_prompt_by_an_exact_refit_without_its_fold(emb: Embedder) -> None:
    router = Router(emb).fit(TEXTS, LABELS)
    result = calibrate(router, TEXTS, LABELS, folds=3, seed=7)
    assert result.held_out == "3 folds" and result.fold is not None
    assert sorted(set(result.fold.tolist())) == [0, 1, 2]
    for domain in CORPORA:  # stratified: each fold holds its share of every domain
        sizes = np.bincount(result.fold[np.array(LABELS) == domain], minlength=3)
        assert sizes.max() - sizes.min() <= 1
    assert router.smoothing is not None  # (the nb model's: its "auto" settings pinned)
    for f in range(3):
        out = result.fold == f
        refit = Router(emb, **router.smoothing._asdict()).fit(
            [t for t, o in zip(TEXTS, out, strict=True) if not o],
            [d for d, o in zip(LABELS, out, strict=True) if not o])
        held = refit.route_batch([t for t, o in zip(TEXTS, out, strict=True) if o])
        assert [d.expert for d in held] == [r for r, o in zip(result.routed, out, strict=True)
                                            if o]
        assert [d.confidence for d in held] == result.confidence[out].tolist()
        assert result.coverage is not None
        assert [d.coverage for d in held] == result.coverage[out].tolist()
    # the same seed gives the same folds; held-out coverage is below the fit prompts' 1.0
    assert np.array_equal(calibrate(router, TEXTS, LABELS, folds=3, seed=7).fold, result.fold)
    assert result.coverage.mean() < 1.0
    assert all(d.coverage == 1.0 for d in router.route_batch(TEXTS))


def test_folds_keep_the_full_routers_automatic_smoothing(emb: Embedder) -> None:
    # Eleven prompts per expert or so: "auto" takes the small-fit-set values; a fold's
    # router must use what the full router chose, not choose again on fewer prompts.
    router = Router(emb, alpha=0.1, pairs=3e4).fit(TEXTS, LABELS)
    result = calibrate(router, TEXTS, LABELS, folds=2)
    out = result.fold == 0
    refit = Router(emb, alpha=0.1, pairs=3e4).fit(
        [t for t, o in zip(TEXTS, out, strict=True) if not o],
        [d for d, o in zip(LABELS, out, strict=True) if not o])
    held = refit.route_batch([t for t, o in zip(TEXTS, out, strict=True) if o])
    assert [d.confidence for d in held] == result.confidence[out].tolist()


def test_folds_keep_the_full_routers_spelling_prior(emb: Embedder) -> None:
    # Twelve prompts per expert: the default's spelling back-off enters as a prior of mass
    # 100; each fold's router holds six, where "auto" would turn it off.
    texts = [f"What is {a} times {a + 3}, plus {a}?" for a in range(12)] + [
        f"Write a Python function that returns the {a}th item of a list." for a in range(12)]
    labels = ["math"] * 12 + ["coding"] * 12
    router = Router(emb).fit(texts, labels)
    assert router.smoothing is not None and router.smoothing.spelling_prior == 100
    result = calibrate(router, texts, labels, folds=2)
    out = result.fold == 0
    rest = ([t for t, o in zip(texts, out, strict=True) if not o],
            [d for d, o in zip(labels, out, strict=True) if not o])
    held = [t for t, o in zip(texts, out, strict=True) if o]
    pinned = Router(emb, **router.smoothing._asdict()).fit(*rest).route_batch(held)
    assert [d.confidence for d in pinned] == result.confidence[out].tolist()
    again = Router(emb).fit(*rest)  # chosen afresh on the fold's six: no back-off
    assert again.smoothing is not None and again.smoothing.spelling_prior is None
    assert [d.confidence for d in again.route_batch(held)] != result.confidence[out].tolist()


def test_folds_refuse_prompts_that_were_not_fitted_on(router: Router) -> None:
    with pytest.raises(IR3DEError, match="not all part of expert"):
        calibrate(router, HELD * 3, HELD_LABELS * 3, folds=2)


def test_folds_refuse_a_fold_holding_a_whole_expert(emb: Embedder) -> None:
    texts, labels = [*TEXTS, "lone prompt about gardening"], [*LABELS, "garden"]
    router = Router(emb).fit(texts, labels)
    with pytest.raises(IR3DEError, match="holds every prompt of expert 'garden'"):
        calibrate(router, texts, labels, folds=2)


def test_unigram_router_has_threshold_only(emb: Embedder) -> None:
    router = Router(emb, "unigram").fit(TEXTS, LABELS)
    result = calibrate(router, HELD, HELD_LABELS, folds=None)
    assert result.knobs == ("threshold",) and result.coverage is None
    assert {c.knob for c in result.cuts} == {"threshold"}
    with pytest.raises(IR3DEError, match="no min_coverage cut"):
        result.cut("min_coverage", 0.95)
    with pytest.raises(IR3DEError, match="carry no coverage"):
        result.curve("min_coverage")


def test_unlabelled_prompts_give_kept_shares_only(router: Router) -> None:
    result = calibrate(router, HELD, keep=[0.5])
    assert result.gold is None and result.accuracy is None
    cut = result.cut("threshold", 0.5)
    assert cut.accuracy is None and cut.least_kept is None and cut.kept >= 0.5
    assert result.to_dict()["domains"] is None
    with pytest.raises(IR3DEError, match="needs labelled prompts"):
        result.curve("threshold")


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"labels": ["math"]}, IR3DEError, "6 texts but 1 labels"),
    ({"labels": ["math", "coding", "law", "multilingual", "math", "chemistry"]}, ExpertError,
     "labels 'chemistry' are not among the router's experts"),
    ({"labels": ["math", "coding", "law", "multilingual", "math", 3]}, IR3DEError,
     "label #5 is int 3"),
    ({"folds": 3}, IR3DEError, "folds need labels"),
    ({"labels": HELD_LABELS, "folds": 1}, IR3DEError, "at least 2"),
    ({"labels": HELD_LABELS, "folds": True}, IR3DEError, "at least 2"),
    ({"labels": HELD_LABELS, "folds": 7}, IR3DEError, "7 folds but only 6 prompts"),
    ({"keep": [0.0]}, IR3DEError, r"in \(0, 1\]"),
    ({"keep": [1.5]}, IR3DEError, r"in \(0, 1\]"),
    ({"keep": [float("nan")]}, IR3DEError, r"in \(0, 1\]"),
    ({"keep": [True]}, IR3DEError, r"in \(0, 1\]"),
    ({"keep": []}, IR3DEError, "no share"),
])
def test_bad_arguments_are_named(router: Router, kwargs: dict, error: type,
                                 message: str) -> None:
    with pytest.raises(error, match=message):
        calibrate(router, HELD, **kwargs)


def test_bad_prompts_are_named(router: Router) -> None:
    with pytest.raises(IR3DEError, match="no prompts"):
        calibrate(router, [])
    with pytest.raises(IR3DEError, match="not a single str"):
        calibrate(router, "What is 2 + 2?")
    with pytest.raises(EmptyInputError, match="prompt #1 is empty"):
        calibrate(router, ["What is 2 + 2?", "   "])
    with pytest.raises(EmptyInputError, match="prompt #1 has no token to route on"):
        calibrate(router, ["What is 2 + 2?", "<s>"])


def test_token_ids_given_are_routed_without_tokenising_again(router: Router,
                                                              monkeypatch) -> None:
    """ir3de calibrate tokenised every prompt to name one without a token, and calibrate
    tokenised it again: the ids it has are now passed on, and checked as route_batch
    checks them."""
    ids = router.encode(HELD)
    expected = calibrate(router, HELD, HELD_LABELS)
    folded = calibrate(router, TEXTS, LABELS, folds=2)

    def refuse(*_, **__) -> None:
        raise AssertionError("tokenised again")

    monkeypatch.setattr(router.embedder, "encode_batch", refuse)
    given = calibrate(router, HELD, HELD_LABELS, token_ids=ids)
    assert given.cuts == expected.cuts and given.routed == expected.routed
    assert np.array_equal(given.confidence, expected.confidence)
    monkeypatch.undo()  # (the folds count each fold's texts, as ir3de stats did)
    again = calibrate(router, TEXTS, LABELS, folds=2, token_ids=router.encode(TEXTS))
    assert again.cuts == folded.cuts and again.routed == folded.routed
    with pytest.raises(IR3DEError, match="5 token-id arrays for 6 texts"):
        calibrate(router, HELD, token_ids=ids[:5])
    with pytest.raises(IR3DEError, match="token id"):
        calibrate(router, HELD, token_ids=[*ids[:5], np.array([10**9])])


def test_plot_is_a_png(router: Router) -> None:
    pytest.importorskip("matplotlib")
    result = calibrate(router, HELD * 3 + TEXTS, HELD_LABELS * 3 + LABELS)
    png = render_plot(result, 0.95)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_cross_fitted_cuts_carry_over_to_unseen_prompts_of_the_same_data(data_dir) -> None:
    """On real data, cuts chosen by 5-fold calibration on the fit prompts keep about their
    share of test prompts from the same datasets (reasoning-2fold, fold 0)."""
    from ir3de.eval.settings import load_setting

    split = load_setting("reasoning-2fold", data_dir).splits[0]
    router = Router().fit(split.fit_texts, split.fit_labels)
    result = calibrate(router, split.fit_texts, split.fit_labels, folds=5, keep=[0.95])
    decisions = router.route_batch(split.test_texts)
    for knob in result.knobs:
        cut = result.cut(knob, 0.95)
        values = np.array([getattr(d, "confidence" if knob == "threshold" else "coverage")
                           for d in decisions])
        assert 0.92 <= np.mean(values >= cut.value) <= 0.99, knob
    # the confidence cut ranks errors: the prompts it keeps are routed better than all
    assert result.accuracy is not None
    assert result.cut("threshold", 0.95).accuracy > result.accuracy


def test_copies_of_a_text_share_a_fold(emb: Embedder) -> None:
    """A copy left in the re-solved router would make its twin look seen (cuts far too
    strict for new prompts): every copy of a text is held out with it."""
    texts, labels = TEXTS * 2, LABELS * 2
    router = Router(emb).fit(texts, labels)
    result = calibrate(router, texts, labels, folds=3, seed=1)
    assert result.fold is not None
    half = len(TEXTS)
    assert result.fold[:half].tolist() == result.fold[half:].tolist()
    # held out with its copy, a prompt is as unseen as without copies at all
    single = calibrate(Router(emb).fit(TEXTS, LABELS), TEXTS, LABELS, folds=3, seed=1)
    assert result.coverage is not None and single.coverage is not None
    assert sorted(result.coverage[:half]) == pytest.approx(sorted(single.coverage))
    # also copies in two experts' fit data: each was held out alone, its twin left in the
    # other expert, and every such prompt looked seen (coverage 1)
    shared = CORPORA["law"]
    twice = [*TEXTS, *shared]
    labels2 = [*LABELS, *["math"] * len(shared)]
    both = calibrate(Router(emb).fit(twice, labels2), twice, labels2, folds=3, seed=1)
    assert both.fold is not None and both.coverage is not None
    law = [i for i, label in enumerate(LABELS) if label == "law"]
    assert both.fold[law].tolist() == both.fold[len(TEXTS):].tolist()
    assert max(both.coverage[len(TEXTS):]) < 1.0


def test_kept_with_both_cuts_and_seen_share(router: Router) -> None:
    result = calibrate(router, HELD, HELD_LABELS)
    t, c = result.cut("threshold", 0.8).value, result.cut("min_coverage", 0.8).value
    assert result.coverage is not None
    assert result.kept(t, c) == np.mean((result.confidence >= t) & (result.coverage >= c))
    assert result.kept() == 1.0
    assert result.seen == np.mean(result.coverage == 1.0)
    fitted = calibrate(router, TEXTS, LABELS)  # fit prompts given as held out: all seen
    assert fitted.seen == 1.0


def test_a_router_and_knobs_that_are_not_are_named(router: Router) -> None:
    with pytest.raises(IR3DEError, match="calibrate needs a fitted Router, got NoneType"):
        calibrate(None, HELD)  # type: ignore[arg-type]  (an AttributeError)
    result = calibrate(router, HELD, HELD_LABELS)
    with pytest.raises(IR3DEError, match="unknown knob 'thresold'; this router's are "
                                         "threshold, min_coverage"):
        result.curve("thresold")  # type: ignore[arg-type]  (was min_coverage's curve)
    for bad in (float("nan"), "0.5", None):  # NaN kept nothing; the others a numpy error
        with pytest.raises(IR3DEError, match="threshold must be a finite number"):
            result.kept(bad)  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match="min_coverage must be a finite number"):
        result.kept(0.5, float("inf"))


def test_kept_is_never_below_the_share_asked(router: Router) -> None:
    texts = [f"What is {i} plus {i + 1}?" for i in range(10)]
    result = calibrate(router, texts, keep=[0.90000000001, 0.9])
    assert result.cut("threshold", 0.90000000001).kept == 1.0
    assert result.cut("threshold", 0.9).kept == 0.9


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keep": 0.95}, r"keep is a list of shares .* \(pass \[share\] for one\)"),
    # a TypeError each, or the characters of "0.9" read as shares
    ({"keep": np.array(0.9)}, r"got the number array\(0\.9\) \(pass \[share\] for one\)"),
    ({"keep": None}, "keep is a list of shares of prompts to keep, got NoneType None"),
    ({"keep": "0.9"}, "keep is a list of shares of prompts to keep, got str '0.9'"),
    ({"labels": HELD_LABELS, "folds": 2, "seed": -1}, "seed must be an integer >= 0"),
    ({"labels": HELD_LABELS, "folds": 2, "seed": "a"}, "seed must be an integer >= 0"),
])
def test_bad_keep_and_seed_are_named(router: Router, kwargs: dict, message: str) -> None:
    with pytest.raises(IR3DEError, match=message):
        calibrate(router, HELD, **kwargs)
