"""Ray statistics equal the single-process statistics, on a real local 2-CPU Ray cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ir3de import DomainStats, Embedder, compute_stats
from ir3de.cli import main
from ir3de.data import read_corpus, read_jsonl
from ir3de.errors import IR3DEError

ray = pytest.importorskip("ray", reason="the Ray engine needs pip install 'ir3de[ray]'")

from ir3de.distributed import ray_stats  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(data_dir: Path, tmp_path_factory) -> dict[str, list[Path]]:
    """The same 1174 gsm8k/MBPP prompts (+ a blank one) as two JSONL shards, a text file
    and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [r for r in read_jsonl(data_dir / "reasoning/gsm8k/train.jsonl")][:800]
    records += [r for r in read_jsonl(data_dir / "reasoning/mbpp/train.jsonl")][:400]
    records.append({"id": "blank", "text": "   "})  # skipped by both paths
    folder = tmp_path_factory.mktemp("corpus")
    shards = [folder / "part-0.jsonl", folder / "part-1.jsonl"]
    for shard, part in zip(shards, (records[:600], records[600:]), strict=True):
        shard.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n"
                                 for r in part))
    lines = [r["text"].replace("\n", " ") for r in records]
    text = folder / "corpus.txt"
    text.write_text("\n".join(lines) + "\n\n")
    parquet = folder / "corpus.parquet"
    pq.write_table(pa.table({"text": [r["text"] for r in records]}), parquet,
                   row_group_size=250)
    return {"jsonl": shards, "text": [text], "parquet": [parquet]}


def _assert_same(a: DomainStats, b: DomainStats) -> None:
    assert (a.domain, a.n_tokens, a.n_prompts, a.fingerprint) == \
        (b.domain, b.n_tokens, b.n_prompts, b.fingerprint)
    np.testing.assert_array_equal(a.A, b.A)  # bit for bit, not just to 1e-12
    np.testing.assert_array_equal(a.b, b.b)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.doc_counts, b.doc_counts)  # what the nb router reads
    np.testing.assert_array_equal(a.pairs.keys, b.pairs.keys)  # and its pair features
    np.testing.assert_array_equal(a.pairs.counts, b.pairs.counts)


@pytest.mark.parametrize("fmt", ["jsonl", "text", "parquet"])
def test_ray_equals_local(cluster, corpus, emb: Embedder, fmt: str) -> None:
    texts = [t for path in corpus[fmt] for t in read_corpus(path)]
    local = compute_stats(emb, texts, domain="mixed")
    remote = ray_stats([str(p) for p in corpus[fmt]], emb, domain="mixed", workers=2,
                       progress=False)
    _assert_same(remote, local)
    assert local.n_prompts == sum(1 for t in texts if t.strip()) > 1000  # blank skipped


def test_glob_and_errors(cluster, corpus, emb: Embedder, tmp_path: Path) -> None:
    pattern = str(corpus["jsonl"][0].parent / "part-*.jsonl")
    local = compute_stats(emb, [t for p in corpus["jsonl"] for t in read_corpus(p)],
                          domain="mixed")
    _assert_same(ray_stats([pattern], emb, domain="mixed", progress=False), local)
    with pytest.raises(IR3DEError, match="no file matches"):
        ray_stats([str(tmp_path / "*.jsonl")], emb, domain="x", progress=False)
    with pytest.raises(IR3DEError, match="no such file"):
        ray_stats([str(tmp_path / "missing.jsonl")], emb, domain="x", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    with pytest.raises(IR3DEError, match="no field 'text'"):
        ray_stats([str(bad)], emb, domain="x", progress=False)


def test_cli_engine_ray_writes_the_same_file(cluster, corpus, emb: Embedder,
                                             tmp_path: Path) -> None:
    files = [str(p) for p in corpus["jsonl"]]
    assert main(["stats", *files, "--domain", "mixed", "-o", str(tmp_path / "local.stats"),
                 "-q"]) == 0
    assert main(["stats", *files, "--domain", "mixed", "-o", str(tmp_path / "ray.stats"),
                 "-q", "--engine", "ray"]) == 0
    _assert_same(DomainStats.load(tmp_path / "ray.stats"),
                 DomainStats.load(tmp_path / "local.stats"))
