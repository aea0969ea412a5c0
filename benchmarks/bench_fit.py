"""Fitting throughput: tokens/s of ``compute_stats`` against two baselines.

What it measures, on real corpora from the shared data folder:

* **fit** -- ``ir3de.compute_stats`` per domain, then ``A = Ẽᵀ diag(c) Ẽ`` over the
  distinct tokens (``DomainStats.gram``), as a ridge router forms it (the count-then-product
  path; the default ``nb`` router reads the counts alone: its fit is the counting pass);
* **tokenizer** -- ``embedder.encode_batch`` alone over the very same batches of
  1024 non-blank texts that ``compute_stats`` tokenises (goal: fit ≥ 0.8 x tokenizer);
* **streaming** -- ``ir3de.statistics.streaming_stats``, the paper's per-prompt
  ``A += X̃ᵀX̃`` accumulation, on an evenly spaced subset of the prompts of every
  domain (it is O(tokens · h²), so it is measured on a subset and compared per token);
  on that subset ``compute_stats`` is timed too, for a same-texts speed-up.

Tokens are the ones the statistics count: special tokens dropped, every prompt
capped at ``max_tokens`` (1024). Every figure is the best and the median of
``--repeats`` runs after one warm-up; tokenizer and fit runs are interleaved so
drift hits both alike. Ratios are taken between figures measured in this process. The plain Hugging
Face ``encode_batch_fast`` (token ids as Python lists, no conversion to arrays)
is shown as a reference for what ``encode_batch`` adds.

Corpora (``--corpus``):

* ``reasoning`` -- all Reasoning fit texts (gsm8k train, m_arc train,
  mbpp train/validation/prompt, alpaca train), 4 domains;
* ``domains``   -- the 9 domain corpora of ``<data>/domains``.

Run:
    python benchmarks/bench_fit.py                       # wordllama, reasoning corpus
    python benchmarks/bench_fit.py --embedder wordllama minilm --corpus reasoning domains
    python benchmarks/bench_fit.py --quick               # 2 repeats, smaller streaming subset
"""

from __future__ import annotations

import argparse
import statistics as pystats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ir3de import compute_stats, load_embedder
from ir3de.data import read_corpus, reasoning_split
from ir3de.embedding import DEFAULT_MAX_TOKENS, Embedder
from ir3de.errors import is_blank
from ir3de.statistics import _BATCH, stats_from_counts, streaming_stats, token_counts

GOAL_RATIO = 0.8


def load_corpus(kind: str, data: Path) -> dict[str, list[str]]:
    """Texts per domain of one corpus."""
    if kind == "reasoning":
        fit, _ = reasoning_split(data)
        return fit
    folder = data / "domains"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder (pass --data)")
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(sub.glob("*.jsonl")):
            out.setdefault(sub.name, []).extend(read_corpus(path))
    return out


def subset(corpus: dict[str, list[str]], n: int) -> dict[str, list[str]]:
    """About ``n`` prompts in all, evenly spaced within every domain, shares as in the corpus."""
    total = sum(len(v) for v in corpus.values())
    out = {}
    for domain, texts in corpus.items():
        m = max(1, round(n * len(texts) / total))
        idx = np.linspace(0, len(texts) - 1, min(m, len(texts))).round().astype(int)
        out[domain] = [texts[i] for i in idx]
    return out


def _batches(texts: list[str]) -> list[list[str]]:
    """The batches compute_stats forms: its non-blank texts, _BATCH at a time."""
    kept = [t for t in texts if not is_blank(t)]
    return [kept[i:i + _BATCH] for i in range(0, len(kept), _BATCH)]


def tokenize_all(emb: Embedder, corpus: dict[str, list[str]], max_tokens: int) -> int:
    """The tokenizer alone over the batches compute_stats would form; returns tokens."""
    n = 0
    for texts in corpus.values():
        for batch in _batches(texts):
            n += sum(ids.size for ids in emb.encode_batch(batch, max_tokens))
    return n


def hf_all(emb: Embedder, corpus: dict[str, list[str]]) -> None:
    """The Hugging Face batch encoder alone (no ids post-processing), same batches."""
    for texts in corpus.values():
        for batch in _batches(texts):
            emb.tokenizer.encode_batch_fast(batch, add_special_tokens=False)


def fit_all(emb: Embedder, corpus: dict[str, list[str]], max_tokens: int) -> int:
    """Count, then form A: statistics files leave A out since 2026-11-25, so compute_stats
    alone no longer times the product that the streaming path (and this row's label)
    includes."""
    total = 0
    for d, texts in corpus.items():
        stats = compute_stats(emb, texts, domain=d, max_tokens=max_tokens)
        stats.gram(emb)
        total += stats.n_tokens
    return total


def stream_all(emb: Embedder, corpus: dict[str, list[str]], max_tokens: int) -> int:
    return sum(streaming_stats(emb, texts, domain=d, max_tokens=max_tokens).n_tokens
               for d, texts in corpus.items())


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def interleaved(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, list[float]]:
    """Run every function once as warm-up, then ``repeats`` rounds in turn; seconds per run."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn)[0])
    return times


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def bench(emb: Embedder, corpus_name: str, corpus: dict[str, list[str]], args) -> list[str]:
    mt = args.max_tokens
    n_prompts = sum(len(v) for v in corpus.values())
    n_tok = tokenize_all(emb, corpus, mt)
    n_fit = fit_all(emb, corpus, mt)
    assert n_tok == n_fit, (n_tok, n_fit)
    t = interleaved({"tokenizer": lambda: tokenize_all(emb, corpus, mt),
                     "fit": lambda: fit_all(emb, corpus, mt),
                     "hf": lambda: hf_all(emb, corpus)}, args.repeats)

    # Share of the fit spent in the product A = Ẽᵀ diag(c) Ẽ (counts computed once, untimed).
    counted = {d: token_counts(emb, texts, max_tokens=mt) for d, texts in corpus.items()}

    def products() -> int:
        total = 0
        for d, c in counted.items():
            stats = stats_from_counts(emb, c.counts, domain=d, n_prompts=c.n_prompts,
                                      max_tokens=mt, doc_counts=c.doc_counts)
            stats.gram(emb)  # (the product itself: stats_from_counts forms no A)
            total += stats.n_tokens
        return total

    t.update(interleaved({"product": products}, args.repeats))
    nnz = sum(int(np.count_nonzero(c.counts)) for c in counted.values())

    # Streaming (paper) on a subset; compute_stats on the same subset for a same-texts ratio.
    sub = subset(corpus, args.stream_prompts)
    n_sub = sum(len(v) for v in sub.values())
    s_tok = tokenize_all(emb, sub, mt)
    ts = interleaved({"stream": lambda: stream_all(emb, sub, mt),
                      "fit_subset": lambda: fit_all(emb, sub, mt),
                      "tokenizer_subset": lambda: tokenize_all(emb, sub, mt)},
                     args.stream_repeats)
    # The two paths must agree (same statistics, different summation order).
    worst = 0.0
    for d, texts in sub.items():
        a = compute_stats(emb, texts, domain=d, max_tokens=mt).gram(emb)
        b = streaming_stats(emb, texts, domain=d, max_tokens=mt).gram(emb)
        worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))

    def rates(times: list[float], n: int) -> tuple[float, float]:
        return n / min(times), n / pystats.median(times)

    tok_b, tok_m = rates(t["tokenizer"], n_tok)
    fit_b, fit_m = rates(t["fit"], n_fit)
    hf_b, hf_m = rates(t["hf"], n_tok)
    st_b, st_m = rates(ts["stream"], s_tok)
    fs_b, fs_m = rates(ts["fit_subset"], s_tok)
    ts_b, ts_m = rates(ts["tokenizer_subset"], s_tok)
    prod_share = pystats.median(t["product"]) / pystats.median(t["fit"])

    label = f"{emb.name} (h={emb.dim}) | {corpus_name}"
    rows = [
        f"| {label} | Hugging Face `encode_batch_fast` alone (reference) | {n_prompts} | "
        f"{n_tok} | {fmt_rate(hf_b)} | {fmt_rate(hf_m)} | {hf_b / tok_b:.2f} x tokenizer |",
        f"| {label} | tokenizer alone (`encode_batch`) | {n_prompts} | {n_tok} | "
        f"{fmt_rate(tok_b)} | {fmt_rate(tok_m)} | 1.00 (baseline) |",
        f"| {label} | fit (`compute_stats` + A) | {n_prompts} | {n_fit} | "
        f"{fmt_rate(fit_b)} | {fmt_rate(fit_m)} | **{fit_b / tok_b:.2f}** best / "
        f"**{fit_m / tok_m:.2f}** median vs tokenizer (goal ≥ {GOAL_RATIO}) |",
        f"| {label} | the product Ẽᵀdiag(c)Ẽ alone, from precomputed counts ({nnz} distinct "
        f"ids summed over domains) | | | | | "
        f"{100 * prod_share:.0f} % of the fit's median time |",
        f"| {label} | tokenizer alone, subset | {n_sub} | {s_tok} | "
        f"{fmt_rate(ts_b)} | {fmt_rate(ts_m)} | |",
        f"| {label} | fit (`compute_stats` + A), subset | {n_sub} | {s_tok} | "
        f"{fmt_rate(fs_b)} | {fmt_rate(fs_m)} | {fs_b / st_b:.1f}x streaming (same texts) |",
        f"| {label} | streaming X̃ᵀX̃ (`streaming_stats`), subset | {n_sub} | {s_tok} | "
        f"{fmt_rate(st_b)} | {fmt_rate(st_m)} | full-corpus fit is **{fit_b / st_b:.1f}x** "
        f"per token (best) / {fit_m / st_m:.1f}x (median); max rel. diff of A {worst:.1e} |",
    ]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", nargs="+", default=["wordllama"],
                    help="embedders to measure: wordllama, minilm, ... (default: wordllama)")
    ap.add_argument("--corpus", nargs="+", choices=["reasoning", "domains"],
                    default=["reasoning"], help="corpora to fit (default: reasoning)")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="shared data folder (default: ../shared/data)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per figure (default 5)")
    ap.add_argument("--stream-prompts", type=int, default=1500,
                    help="prompts in the streaming subset (default 1500)")
    ap.add_argument("--stream-repeats", type=int, default=3,
                    help="timed runs of the streaming subset (default 3)")
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                    help="per-prompt token cap (default 1024)")
    ap.add_argument("--quick", action="store_true",
                    help="2 repeats, 500-prompt streaming subset, 1 streaming repeat (options "
                         "given explicitly win)")
    args = ap.parse_args()
    if args.quick:  # (as defaults: it overrode --repeats 5 given with it, silently)
        ap.set_defaults(repeats=2, stream_prompts=500, stream_repeats=1)
        args = ap.parse_args()
    corpora = {c: load_corpus(c, args.data) for c in args.corpus}

    print(f"repeats={args.repeats} (best / median after 1 warm-up), batch={_BATCH}, "
          f"max_tokens={args.max_tokens}, streaming subset ≈ {args.stream_prompts} prompts "
          f"x {args.stream_repeats} repeats\n")
    print("| embedder | corpus | path | prompts | tokens | tokens/s best | tokens/s median "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.embedder:
        emb = load_embedder(name)
        _ = emb.fingerprint  # hashed once, outside every timing
        for cname, corpus in corpora.items():
            for row in bench(emb, cname, corpus, args):
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
