"""Issue 6 diagnostic: is the unseen-key lean's lead on ``reasoning-xdata`` a matter of fit sizes?

In the default, an unseen token or pair adds more to a domain the fewer fit prompts it has
(EVALUATION.md, *Issue 6*), and on ``reasoning-xdata`` the shifted test domains (HumanEval,
IFEval) are also the two smallest fit sets (MBPP 474, Alpaca 2000 prompts against GSM8K
7473, m_arc 3720). Every treatment that weakens the lean loses there. This script shrinks
the two in-distribution fit sets (math, multilingual; a seeded sample of n prompts each,
the coding and instruction fit sets unchanged) so that the shifted domains stop being the
smallest, and scores the same test prompts with today's treatment (``each``), the two
weaker ones of ``explore_longer.py`` (``once``, ``none``) and the held-out picks of
``explore_unseen_mass.py``.

It chooses nothing: it reads test prompts only to say how far the lean's lead depends on
which domains are small. Balanced accuracy (%) and per-domain recall.

Run:  python benchmarks/explore_fit_sizes.py [--embedder wordllama] [--sizes 2000 500 200]
"""

from __future__ import annotations

import sys

import numpy as np
from _holdout import balanced, script_parser
from explore_longer import _variants as _longer
from explore_unseen_mass import _variants as _unseen_mass

from ir3de import load_embedder
from ir3de.eval import load_setting

SHRUNK = ("math", "multilingual")
ROUTERS = {  # name: (which script's scoring, configuration label)
    "each (default)": (_longer, "pair uni=each oov=each m=100000"),
    "once": (_longer, "pair uni=each oov=once m=100000"),
    "none": (_longer, "pair uni=each oov=none m=100000"),
    "Good-Turing κ=1": (_unseen_mass, "gt κ=1"),
    "abs δ=0.75": (_unseen_mass, "abs δ=0.75"),
    "Witten-Bell κ=1": (_unseen_mass, "wb κ=1"),
}


def main() -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--sizes", nargs="+", type=int, default=[2000, 500, 200],
                    help="fit prompts kept for math and multilingual (full size is run first)")
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    split = load_setting("reasoning-xdata", args.data).splits[0]
    domains = list(split.fit)
    test = emb.encode_batch(split.test_texts)
    gold = np.array([domains.index(d) for d in split.test_labels])
    full = {d: [x for x in emb.encode_batch(t) if x.size] for d, t in split.fit.items()}
    rng = np.random.default_rng(0)
    print(f"embedder {emb.name}; reasoning-xdata test prompts; balanced accuracy (%), "
          f"recall {' / '.join(domains)}\n")
    for size in (None, *args.sizes):
        fit = dict(full)
        if size is not None:
            for d in SHRUNK:
                fit[d] = [full[d][i] for i in np.sort(rng.permutation(len(full[d]))[:size])]
        print("fit prompts: " + ", ".join(f"{d} {len(v)}" for d, v in fit.items()))
        scores = {script: script(emb.vocab_size, fit, test) for script in (_longer, _unseen_mass)}
        for name, (script, label) in ROUTERS.items():
            pred = scores[script][label].argmax(axis=1)
            recall = " / ".join(f"{100 * np.mean(pred[gold == i] == i):.1f}"
                                for i in range(len(domains)))
            print(f"  {name:16s} {100 * balanced(scores[script][label], gold):6.2f}  ({recall})")
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
