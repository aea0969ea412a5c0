"""Near-duplicates between the test prompts and the fit data of every ``ir3de eval`` setting.

The harness drops a test prompt whose text (leading and trailing whitespace aside) is also a
fit prompt of its split, except in ``reasoning-paper``, which leaks on purpose. This audit
looks further, per split and domain:

* ``normalised``: the same text after NFKC, lower case and keeping word characters only
  (``don't`` against ``don 't``, ``<>`` against ``()``);
* ``near ≥ 0.5`` / ``≥ 0.8``: at least that share of the test prompt's word 5-grams occur in
  one fit prompt (5-grams shared by more than 200 fit prompts, boilerplate, are skipped);
* ``other domain``: near-duplicates whose closest fit prompt has another label.

Then it fits today's default router on each split and routes the near-duplicate test prompts
(≥ 0.5): ``routed right`` counts those the router sends to their own expert, i.e. how far the
reported accuracy could owe anything to them.

Run:  python benchmarks/audit_duplicates.py [--data ../shared/data] [--seed 0]
                                            [--settings domains ...]
"""

from __future__ import annotations

import argparse
import re
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

from ir3de import Router, load_embedder
from ir3de.eval import load_setting

SETTINGS = ["reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains"]
N = 5
COMMON = 200
_WORD = re.compile(r"\w+")


def _normal(text: str) -> str:
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


def _grams(text: str) -> set[str]:
    words = _normal(text).split()
    if len(words) < N:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + N]) for i in range(len(words) - N + 1)}


def audit(split, emb) -> None:
    fit = [(domain, text) for domain, texts in split.fit.items() for text in texts]
    normalised = {_normal(text) for _, text in fit}
    grams = [_grams(text) for _, text in fit]
    index = defaultdict(list)
    for i, g in enumerate(grams):
        for gram in g:
            index[gram].append(i)
    rows: dict[str, Counter] = defaultdict(Counter)
    near: list[tuple[str, str]] = []
    for text, gold in zip(split.test_texts, split.test_labels, strict=True):
        row = rows[gold]
        row["test"] += 1
        row["normalised"] += _normal(text) in normalised
        mine = _grams(text)
        shared = Counter()
        for gram in mine:
            if len(index.get(gram, ())) <= COMMON:
                shared.update(index.get(gram, ()))
        if not shared:
            continue
        best, n = max(shared.items(), key=lambda kv: kv[1])
        containment = n / len(mine)
        row["near ≥ 0.5"] += containment >= 0.5
        row["near ≥ 0.8"] += containment >= 0.8
        if containment >= 0.5:
            row["other domain"] += fit[best][0] != gold
            near.append((text, gold))
    right = Counter()
    if near:
        router = Router(embedder=emb).fit([t for _, t in fit], [d for d, _ in fit])
        for (_, gold), expert in zip(near, router.predict([t for t, _ in near]), strict=True):
            right[gold] += expert == gold
    print(f"\n### {split.name}: {len(fit)} fit, {len(split.test_texts)} test prompts\n")
    keys = ["test", "normalised", "near ≥ 0.5", "near ≥ 0.8", "other domain"]
    print("| domain | " + " | ".join(keys) + " | routed right |")
    print("|---" * (len(keys) + 2) + "|")
    for domain, row in rows.items():
        print(f"| {domain} | " + " | ".join(str(row[k]) for k in keys)
              + f" | {right[domain]} of {row['near ≥ 0.5']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="shared data folder (default ../shared/data)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the split seed, as ir3de eval --seed (default 0)")
    ap.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS,
                    help="settings to audit (default: all)")
    args = ap.parse_args()
    start = time.perf_counter()
    emb = load_embedder()
    for name in args.settings:
        print(f"\n## {name} (seed {args.seed})")
        for split in load_setting(name, args.data, seed=args.seed).splits:
            audit(split, emb)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
