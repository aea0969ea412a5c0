"""Issue 6 diagnostic: what the default's held-out errors rest on, term by term.

For each split, the default router is fitted on the inner 80 % of the fit data and routes
the held-out 20 % (the parts every ``explore_*`` script chooses on, ``_holdout``; no test
prompt is read). For every misrouted prompt the ``geo`` decision is taken apart by
``route(..., explain=True, against=gold)``: against the **gold** expert instead of the
runner-up, each distinct token's and pair's share of the
wrong expert's lead over the right one, the shares adding up to that lead. Printed per
split: the errors and their most common confusions, the lead (median and quartiles, in mean
log-likelihood units: 0.1 is a score ratio of 1.11), the net lead that tokens and pairs
carry over all errors, and the terms that recur most among each error's five largest.

A term that recurs across many errors would be a systematic cause a table could correct; a
lead spread over terms that each appear once says the errors are prompts between domains.
Chooses nothing.

Run:  python benchmarks/error_evidence.py [--settings domains] [--seeds 0] [--embedder E]
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np
from _holdout import TokenizedSplit, flatten, script_parser, test_texts

from ir3de import Evidence, Router, load_embedder
from ir3de.eval.settings import SETTINGS, load_setting

TOP = 5  # the largest terms of each error that are counted


def _term_name(term: Evidence) -> str:
    """A term as printed: the token, or the pair's two tokens (<start> for the prompt's start)."""
    if term.kind == "token":
        return repr(term.tokens[0])
    first, second = term.tokens
    gap = " _ " if term.kind == "skip" else " "
    return repr(f"{'<start>' if first is None else first}{gap}{second}")


def _report(label: str, emb, data: TokenizedSplit) -> None:
    texts, gold = flatten(data.held_texts)
    router = Router(emb).fit(*flatten(data.inner_texts))
    pred = router.predict(texts)
    wrong = [i for i, (p, g) in enumerate(zip(pred, gold, strict=True)) if p != g]
    confusions = Counter(f"{gold[i]} -> {pred[i]}" for i in wrong).most_common(3)
    print(f"## {label}: {len(wrong)} of {len(texts)} held-out prompts misrouted"
          + "".join(f"; {c} ({n})" if j == 0 else f", {c} ({n})"
                    for j, (c, n) in enumerate(confusions)))
    if not wrong:
        return
    leads, net, recurring = [], Counter(), Counter()
    for i in wrong:
        terms = router.route(texts[i], explain=True, against=gold[i]).evidence
        leads.append(sum(term.lead for term in terms))
        for term in terms:
            net[term.kind] += term.lead
        recurring.update(_term_name(term) for term in terms[:TOP] if term.lead > 0)
    q1, q2, q3 = np.percentile(leads, [25, 50, 75])
    print(f"  wrong expert's lead over the gold one: median {q2:.3f} (quartiles {q1:.3f}, "
          f"{q3:.3f})")
    print("  net lead over all errors: " + ", ".join(f"{k} {v:+.2f}" for k, v in net.items()))
    top = recurring.most_common(8)
    print(f"  terms most often among an error's {TOP} largest: "
          + ", ".join(f"{name} ({n})" for name, n in top)
          + f"; {sum(1 for n in recurring.values() if n == 1)} of {len(recurring)} "
            "terms there once only\n", flush=True)


def main() -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--settings", nargs="+", default=["domains"], choices=SETTINGS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = ap.parse_args()
    start = time.perf_counter()
    emb = load_embedder(args.embedder)
    print(f"embedder {emb.name}; the default router, fitted on the inner 80 % of each split's "
          "fit data, on the held-out 20 %\n")
    for seed in args.seeds:
        settings = {name: load_setting(name, args.data, seed=seed) for name in SETTINGS}
        tested = test_texts(settings.values())
        for name in args.settings:
            for split in settings[name].splits:
                _report(f"{name} / {split.name} (seed {seed})", emb,
                        TokenizedSplit(emb, split, tested=tested))
    print(f"[{time.perf_counter() - start:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
