"""The held-out part of the fit data that benchmark scripts choose settings on.

Every script that picks a setting (selector, k, μ, pooling, threshold) does it on a seeded
20 % of each domain's FIT prompts, never on test prompts; this module is that split, so
they all hold out the same prompts for a seed. The ``explore_*`` scripts also share their
command line, the loop over tokenised splits, the balanced accuracy and the per-family
choice from here.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from ir3de.data import read_jsonl
from ir3de.eval import load_setting
from ir3de.eval.settings import SETTINGS

T = TypeVar("T")


def holdout(groups: Mapping[str, Sequence[T]], seed: int = 0,
            fraction: float = 0.8) -> tuple[dict[str, list[T]], dict[str, list[T]]]:
    """``(inner, held)`` per domain: a seeded shuffle of each domain's items (one generator
    drawn in domain order), the first ``fraction`` to fit on and the rest held out."""
    rng = np.random.default_rng(seed)
    inner, held = {}, {}
    for domain, items in groups.items():
        perm = rng.permutation(len(items))
        cut = int(fraction * len(items))
        inner[domain] = [items[i] for i in perm[:cut]]
        held[domain] = [items[i] for i in perm[cut:]]
    return inner, held


# Where a data file's records say which sub-source they come from (the record's own field):
# arXiv primary category, TheAlgorithms folder, president, LegalBench task, book, and the
# multilingual ARC's language. The other sets have no such field: each prompt is its own.
SOURCE_FIELDS: dict[str, Callable[[dict], str]] = {
    "domains/arxiv_cs": lambda r: r["categories"].split()[0],
    "domains/arxiv_math": lambda r: r["categories"].split()[0],
    "domains/arxiv_physics": lambda r: r["categories"].split()[0],
    "domains/code_python": lambda r: r["category"],
    "domains/history_speeches": lambda r: r["speaker"],
    "domains/legalbench": lambda r: r["task"],
    "domains/philosophy_texts": lambda r: r["work"],
    "reasoning/m_arc": lambda r: r["id"].split(":", 1)[0],
}


def source_of(data_dir: str) -> dict[str, str]:
    """Each text of :data:`SOURCE_FIELDS`' files → its sub-source (``folder:value``)."""
    out: dict[str, str] = {}
    for folder, field in SOURCE_FIELDS.items():
        for path in sorted(Path(data_dir, folder).glob("*.jsonl")):
            for record in read_jsonl(path):
                out.setdefault(record["text"], f"{folder}:{field(record)}")
    return out


def source_holdout(texts: Mapping[str, Sequence[str]], sources: Mapping[str, str],
                   seed: int = 0, fraction: float = 0.8) -> tuple[dict[str, list[int]],
                                                                  dict[str, list[int]]]:
    """``(inner, held)`` item indices per domain, holding out WHOLE sub-sources: a seeded
    shuffle of each domain's sources (a text without one is its own), taken while the
    held-out part stays within 1.5 times its share (a source larger than that is never held
    out) until it reaches ``1 - fraction`` of the domain's items."""
    rng = np.random.default_rng(seed)
    inner, held = {}, {}
    for domain, items in texts.items():
        members: dict[str, list[int]] = {}
        for i, text in enumerate(items):
            members.setdefault(sources.get(text, f"prompt:{i}"), []).append(i)
        keys = list(members)
        target, cap, out = (1 - fraction) * len(items), 1.5 * (1 - fraction) * len(items), []
        for k in rng.permutation(len(keys)):
            if len(out) >= target:
                break
            if len(out) + len(members[keys[k]]) <= cap:
                out += members[keys[k]]
        held[domain] = sorted(out)
        inner[domain] = sorted(set(range(len(items))) - set(out))
    return inner, held


def flatten(groups: Mapping[str, Sequence[T]]) -> tuple[list[T], list[str]]:
    """Items of every domain in one list, with each item's domain."""
    return ([x for items in groups.values() for x in items],
            [d for d, items in groups.items() for _ in items])


def test_texts(settings: Iterable) -> frozenset[str]:
    """Every test prompt of ``settings`` (stripped; given every evaluation setting, which
    no held-out part may hold: ``reasoning-paper`` fits on HumanEval and IFEval, the test
    prompts of ``reasoning-xdata``, and each ``reasoning-2fold`` fold fits on the other's
    test half)."""
    return frozenset(t.strip() for setting in settings for split in setting.splits
                     for t in split.test_texts)


class TokenizedSplit:
    """One evaluation split tokenised once: per-domain fit prompts (``fit``), their inner
    80 % (``inner``), the held-out 20 % (``held``, gold domain indices ``held_y``) and the
    test prompts (``test``, ``test_y``); prompts without any token are left out of the fit.
    The texts of the three fit parts, per domain: ``fit_texts``, ``inner_texts``,
    ``held_texts``.

    ``tested`` (:func:`test_texts`): the held-out part leaves these out, so that no choice
    is judged on a test prompt of any setting. Until 2026-11-25 it did not: the held-out
    parts of ``reasoning-paper`` and ``reasoning-2fold`` held test prompts of the other
    settings (EVALUATION.md, *Held-out parts that held test prompts*)."""

    def __init__(self, emb, split, sources: Mapping[str, str] | None = None,
                 tested: frozenset[str] = frozenset()) -> None:
        self.domains = list(split.fit)
        pairs = {d: [(t, x) for t, x in zip(split.fit[d], emb.encode_batch(split.fit[d]),
                                            strict=True) if x.size] for d in self.domains}
        texts = {d: [t for t, _ in pairs[d]] for d in self.domains}
        self.fit = {d: [x for _, x in pairs[d]] for d in self.domains}
        if sources is None:  # (drawn as over the prompts themselves: the same split)
            inner_i, held_i = holdout({d: list(range(len(texts[d]))) for d in self.domains})
        else:  # whole sub-sources held out (source_holdout)
            inner_i, held_i = source_holdout(texts, sources)
        kept = {d: [i for i in held_i[d] if texts[d][i].strip() not in tested]
                for d in self.domains}
        self.fit_texts = texts
        self.inner_texts = {d: [texts[d][i] for i in inner_i[d]] for d in self.domains}
        self.held_texts = {d: [texts[d][i] for i in kept[d]] for d in self.domains}
        self.inner = {d: [self.fit[d][i] for i in inner_i[d]] for d in self.domains}
        self.held, held_labels = flatten({d: [self.fit[d][i] for i in kept[d]]
                                          for d in self.domains})
        self.held_y = np.array([self.domains.index(d) for d in held_labels])
        self.test = emb.encode_batch(split.test_texts)
        self.test_y = np.array([self.domains.index(d) for d in split.test_labels])


def script_parser(doc: str) -> argparse.ArgumentParser:
    """The options every script on one embedder and the shared data takes: ``--embedder``
    (default wordllama) and ``--data`` (default ../shared/data)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--embedder", default="wordllama")
    ap.add_argument("--data", default="../shared/data")
    return ap


def explore_args(doc: str, settings: Sequence[str], by_source: bool = False,
                 fresh: bool = False, flags: Sequence[tuple[str, str]] = (),
                 extra: Callable[[argparse.ArgumentParser], object] | None = None
                 ) -> argparse.Namespace:
    """The command line of every ``explore_*`` script: :func:`script_parser`'s options and
    ``--settings`` (default ``settings``); ``--by-source`` for a script that passes it on
    to :func:`report_splits`, ``--fresh LABEL`` for one that judges a configuration on
    ``fresh_unseen.py``'s checks; ``flags``: the script's own on/off options, as
    ``(option, help)``; ``extra`` adds any other options of the script's (so that
    ``--help`` lists them)."""
    ap = script_parser(doc)
    if extra is not None:
        extra(ap)
    ap.add_argument("--settings", nargs="+", default=list(settings))
    if by_source:
        ap.add_argument("--by-source", action="store_true",
                        help="hold out whole sub-sources of the fit data (source_holdout)")
    if fresh:
        ap.add_argument("--fresh", metavar="LABEL",
                        help="judge this configuration on the fresh checks")
    for option, help_text in flags:
        ap.add_argument(option, action="store_true", help=help_text)
    return ap.parse_args()


def decision_margins(experts: Sequence[str], decisions: Sequence) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Predicted expert index and the winner's confidence minus the runner-up's, per
    decision (``Router.route_batch(..., scores=True)``, whose ``scores`` name ``experts``)."""
    scores = np.array([[d.scores[e] for e in experts] for d in decisions])
    top = np.sort(scores, axis=1)
    return scores.argmax(axis=1), top[:, -1] - top[:, -2]


def kept_balanced(pred: np.ndarray, gold: np.ndarray, keep: np.ndarray) -> float:
    """Balanced accuracy over the prompts ``keep`` marks (domains with none kept left out)."""
    return float(np.mean([np.mean(pred[keep & (gold == d)] == d)
                          for d in np.unique(gold) if (keep & (gold == d)).any()]))


def tokenized_splits(emb, names: Sequence[str], data_dir: str, by_source: bool = False
                     ) -> Iterator[tuple[str, TokenizedSplit]]:
    """``("setting / split", TokenizedSplit)`` for every split of every named setting (with
    ``by_source``, whole sub-sources held out: :func:`source_holdout`)."""
    sources = source_of(data_dir) if by_source else None
    # every setting, loaded once: the named ones' splits and the test prompts of all
    settings = {name: load_setting(name, data_dir) for name in dict.fromkeys([*SETTINGS, *names])}
    tested = test_texts(settings.values())
    for name in names:
        for split in settings[name].splits:
            yield f"{name} / {split.name}", TokenizedSplit(emb, split, sources, tested)


def report_splits(emb, names: Sequence[str], data_dir: str,
                  variants: Callable[[Mapping[str, list[np.ndarray]], Sequence[np.ndarray]],
                                     Mapping[str, np.ndarray]],
                  start: float | None = None, by_source: bool = False
                  ) -> dict[str, list[tuple[str, float, float]]]:
    """:func:`report_split` for every split of every named setting, the variants scored by
    ``variants(fit groups, prompt ids)`` fitted on the inner 80 % (held-out scores) and on
    the whole fit data (test scores); with ``start`` (a ``time.perf_counter()``), the
    elapsed time after each split; ``by_source``: whole sub-sources held out. Returns the
    rows per split."""
    per_split = {}
    for name, data in tokenized_splits(emb, names, data_dir, by_source):
        per_split[name] = report_split(name, variants(data.inner, data.held),
                                       variants(data.fit, data.test), data)
        if start is not None:
            print(f"  [{time.perf_counter() - start:.0f} s]\n", flush=True)
    return per_split


def balanced(scores: np.ndarray, gold: np.ndarray) -> float:
    """Balanced accuracy of the argmax of per-prompt ``scores`` (P, D) against ``gold``."""
    pred = scores.argmax(axis=1)
    return float(np.mean([np.mean(pred[gold == d] == d) for d in np.unique(gold)]))


def report_split(name: str, held: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
                 data: TokenizedSplit) -> list[tuple[str, float, float]]:
    """Print every variant's held-out → test balanced accuracy for one split (``held`` and
    ``test``: per-variant scores of ``data.held`` / ``data.test``), then the per-family
    choice; returns the ``(label, held, test)`` rows."""
    print(f"## {name}")
    rows = []
    for label in held:
        h, t = balanced(held[label], data.held_y), balanced(test[label], data.test_y)
        print(f"  {label:40s} {100 * h:5.1f} → {100 * t:5.1f}")
        rows.append((label, h, t))
    for family, (label, h, t, ties) in best_per_family(rows).items():
        print(f"  chosen {family}: {label} ({100 * h:.1f} → test {100 * t:.1f}; "
              f"{ties} variant(s) tie on held-out)")
    print(flush=True)
    return rows


def best_per_family(rows: Sequence[tuple[str, float, float]]
                    ) -> dict[str, tuple[str, float, float, int]]:
    """For ``(label, held, test)`` rows, the first row with the highest held-out score of each
    family (the label's first word), and how many rows of that family tie with it."""
    best: dict[str, tuple[str, float, float, int]] = {}
    for label, held, test in rows:
        family = label.split()[0]
        if family not in best or held > best[family][1]:
            best[family] = (label, held, test, 1)
        elif held == best[family][1]:
            best[family] = (*best[family][:3], best[family][3] + 1)
    return best


def print_mean_choice(title: str, names: Sequence[str],
                      rows: Mapping[str, Sequence[tuple[float, float]]]) -> str:
    """Print a Markdown table of every variant's mean held-out accuracy and its test accuracy
    per split (``rows``: label → one ``(held, test)`` per split of ``names``), marking the
    one configuration chosen for all splits, the highest mean held-out; returns its label."""
    best = max(rows, key=lambda label: np.mean([h for h, _ in rows[label]]))
    print(f"\n| {title} | mean held-out | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label, cells in rows.items():
        mark = " (chosen)" if label == best else ""
        print(f"| {label}{mark} | {np.mean([h for h, _ in cells]):.3f} | "
              + " | ".join(f"{t:.2f}" for _, t in cells) + " |")
    return best

