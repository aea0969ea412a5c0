"""Prompts no expert covers: does the router notice? Coverage against the confidence margin.

A router always names an expert; a prompt from a domain none of them was fitted on should
go to the fallback instead. Two per-prompt signals are compared:

* the margin of ``bench_abstain.py``: the winner's confidence minus the runner-up's;
* the coverage (``Decision.coverage``, the ``default`` preset): the share of the prompt's
  distinct token pairs that occur in the fit data.

Each scenario fits the default router on some experts, then scores prompts of those
experts' test sets ("inside") and test prompts of corpora no expert was fitted on
("outside", at most 300 per corpus, seeded). Reported: the AUROC of each signal for
telling inside from outside, and what a cut does when it is chosen the way the README
recommends, on held-out FIT data only: the 5 % quantile of the signal over a held-out 20 %
of the fit prompts (router fitted on the other 80 %), applied unchanged: the share of
inside prompts kept, their balanced accuracy, and the share of outside prompts sent to the
fallback. Last, where the outside prompts go when nothing is cut, beside each expert's
number of fit prompts, and the same for the third scenario with one expert (arxiv_math)
fitted on fewer prompts: unseen tokens and pairs lean towards the experts with the least
fit data, and this isolates how much.

Run:  python benchmarks/bench_ood.py [--embedder wordllama] [--data ../shared/data]
"""

from __future__ import annotations

import sys

import numpy as np
from _holdout import decision_margins, flatten, holdout, kept_balanced, script_parser
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from ir3de import Router, RouterConfig, compute_stats, load_embedder
from ir3de.eval import load_setting

PER_CORPUS = 300
QUANTILE = 0.05
# Corpora of `domains` that no Reasoning expert covers (code_python and arxiv_math would
# overlap with the coding and math experts).
OUTSIDE_REASONING = ("arxiv_physics", "dailydialog", "history_speeches", "legalbench",
                     "philosophy_texts", "pubmedqa")
# Corpora held out of a `domains` router in the third scenario.
HELD_OUT_DOMAINS = ("dailydialog", "legalbench", "philosophy_texts")
# The expert fitted on fewer prompts in the last table, and its sizes (then all its prompts).
SMALL_EXPERT, SMALL_SIZES = "arxiv_math", (25, 50, 100, 200, 400)
DESTINATIONS: list[str] = []  # per scenario: where the outside prompts go without a cut


def _signals(router: Router, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted expert index, margin and coverage of every prompt."""
    decisions = router.route_batch(texts, scores=True)
    return (*decision_margins(router.experts, decisions),
            np.array([d.coverage for d in decisions]))


def _scenario(name: str, emb, fit: dict[str, list[str]], inside: list[str],
              inside_labels: list[str], outside: list[str]) -> None:
    inner, held = holdout(fit)
    probe = Router(emb).fit_stats([compute_stats(emb, t, domain=d) for d, t in inner.items()])
    _, held_margin, held_cov = _signals(probe, flatten(held)[0])
    router = Router(emb).fit_stats([compute_stats(emb, t, domain=d) for d, t in fit.items()])
    pred, margin, cov = _signals(router, inside)
    out_pred, out_margin, out_cov = _signals(router, outside)
    gold = np.array([router.experts.index(d) for d in inside_labels])
    y = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
    cells = []
    for held_values, values, out_values in ((held_margin, margin, out_margin),
                                            (held_cov, cov, out_cov)):
        cut = np.quantile(held_values, QUANTILE)
        keep = values >= cut
        kept_acc = kept_balanced(pred, gold, keep)
        cells.append(f"{roc_auc_score(y, np.r_[values, out_values]):.3f} | "
                     f"{100 * keep.mean():.0f} % ({100 * kept_acc:.1f}) | "
                     f"{100 * np.mean(out_values < cut):.0f} %")
    print(f"| {name} | {len(inside)} / {len(outside)} | " + " | ".join(cells) + " |",
          flush=True)
    # Without a cut every outside prompt still reaches an expert; unseen tokens and pairs
    # lean towards the experts with the least fit data, so this shows where they go.
    sent = np.bincount(out_pred, minlength=len(router.experts))
    DESTINATIONS.append(f"| {name} | " + ", ".join(
        f"{e} {len(fit[e])}: {100 * c / len(outside):.0f} %"
        for e, c in zip(router.experts, sent, strict=True)) + " |")


def main() -> int:
    args = script_parser(__doc__).parse_args()
    emb = load_embedder(args.embedder)
    domains = load_setting("domains", args.data).splits[0]
    rng = np.random.default_rng(0)

    def sample(corpora: tuple[str, ...]) -> list[str]:
        out = []
        for corpus in corpora:
            texts = [t for t, d in zip(domains.test_texts, domains.test_labels, strict=True)
                     if d == corpus]
            out += [texts[i] for i in np.sort(rng.permutation(len(texts))[:PER_CORPUS])]
        return out

    print(f"embedder {emb.name}, preset default; cuts = the {100 * QUANTILE:.0f} % quantile "
          "of the signal on held-out fit prompts\n")
    print("| experts → outside prompts | inside / outside | margin AUROC | margin: inside "
          "kept (balanced acc.) | margin: outside caught | coverage AUROC | coverage: "
          "inside kept (balanced acc.) | coverage: outside caught |")
    print("|---|---|---|---|---|---|---|---|")
    outside_reasoning = sample(OUTSIDE_REASONING)
    for setting in ("reasoning-2fold", "reasoning-xdata"):
        split = load_setting(setting, args.data).splits[0]
        _scenario(f"{setting} / {split.name} → {len(OUTSIDE_REASONING)} domain corpora", emb,
                  split.fit, split.test_texts, split.test_labels, outside_reasoning)
    outside_domains = sample(HELD_OUT_DOMAINS)
    kept = [i for i, d in enumerate(domains.test_labels) if d not in HELD_OUT_DOMAINS]
    fit = {d: t for d, t in domains.fit.items() if d not in HELD_OUT_DOMAINS}
    inside = [domains.test_texts[i] for i in kept]
    inside_labels = [domains.test_labels[i] for i in kept]
    _scenario(f"domains without {', '.join(HELD_OUT_DOMAINS)} → those 3", emb, fit, inside,
              inside_labels, outside_domains)
    print("\nWithout a cut: expert, its fit prompts: share of the outside prompts it gets\n")
    print("| experts → outside prompts | destinations |\n|---|---|")
    print("\n".join(DESTINATIONS))
    _small_expert(emb, fit, inside, inside_labels, outside_domains, SMALL_EXPERT)
    return 0


def _small_expert(emb, fit: dict[str, list[str]], inside: list[str], inside_labels: list[str],
                  outside: list[str], expert: str) -> None:
    """The lean, isolated: the same experts with one of them fitted on fewer prompts; the
    share of the outside prompts it gets from the default (without and with the coverage
    cut, chosen on held-out fit prompts as above) and from the identity ridge, whose
    embedding features give unseen tokens no such lean; and each router's balanced
    accuracy on the inside prompts (where the lean is what brings the small expert its
    own prompts)."""
    print(f"\nFewer fit prompts for {expert} (the other experts unchanged): share of the "
          f"outside prompts sent to {expert}; balanced accuracy on the inside prompts\n")
    print("| fit prompts | default | default, coverage cut | identity ridge | inside: default "
          "| inside: identity ridge |\n|---|---|---|---|---|---|")
    # the other experts' full statistics are the same at every size (their held-out
    # split is not: holdout draws one generator through every domain in turn)
    full = {d: compute_stats(emb, t, domain=d) for d, t in fit.items() if d != expert}
    for size in (*SMALL_SIZES, len(fit[expert])):
        shrunk = {**fit, expert: fit[expert][:size]}
        inner, held = holdout(shrunk)
        probe = Router(emb).fit_stats([compute_stats(emb, t, domain=d)
                                       for d, t in inner.items()])
        cut = np.quantile(_signals(probe, flatten(held)[0])[2], QUANTILE)
        stats = [full[d] if d != expert else compute_stats(emb, shrunk[d], domain=d)
                 for d in shrunk]
        cells, accuracy = [], []
        for preset in ("default", "identity"):
            router = Router(emb, RouterConfig.preset(preset)).fit_stats(stats)
            decisions = router.route_batch(outside)
            cuts = (False, True) if preset == "default" else (False,)
            cells += [np.mean([d.expert == expert and not (use_cut and d.coverage < cut)
                               for d in decisions]) for use_cut in cuts]
            accuracy.append(balanced_accuracy_score(inside_labels, router.predict(inside)))
        print(f"| {size} | " + " | ".join(f"{100 * c:.0f} %" for c in cells) + " | "
              + " | ".join(f"{100 * a:.1f}" for a in accuracy) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
