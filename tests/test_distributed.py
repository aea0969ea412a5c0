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


def test_bad_arguments_fail_before_ray_starts(emb: Embedder, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "one two"}\n')
    (tmp_path / "b.txt").write_text("one two\n")
    a = str(tmp_path / "a.jsonl")

    def refused(match: str, *paths: object, **kwargs: object) -> None:
        with pytest.raises(IR3DEError, match=match):
            ray_stats(list(paths), emb, domain="x", progress=False, **kwargs)

    # a glob overlapping an explicit file would count it twice
    refused("given twice", str(tmp_path / "*.jsonl"), a)
    refused("given twice", str(tmp_path / "*.jsonl"), str(tmp_path / "a.*"))
    # one format for all files: a .txt among .jsonl is refused, as is a --format its
    # suffix contradicts
    refused(r"a\.jsonl is jsonl but .*b\.txt is text", a, str(tmp_path / "b.txt"))
    refused("means jsonl, not the --format text", a, fmt="text")
    # arguments checked before Ray is started (workers=0 hung in ray.init)
    refused("workers must be a positive integer", a, workers=0)
    refused("workers must be a positive integer", a, workers=True)
    refused("max_tokens must be a positive integer", a, max_tokens=0)
    refused("no corpus file given")
    refused("paths must be strings or os.PathLike", 3)
    with pytest.raises(IR3DEError, match="not a single str"):
        ray_stats(a, emb, domain="x", progress=False)  # type: ignore[arg-type]
    # an address nothing listens on fails at once instead of retrying for ever
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused(f"cannot reach the Ray cluster at 127.0.0.1:{port} ", a,
            address=f"127.0.0.1:{port}")

    def no_cluster(**kwargs: object) -> None:
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    refused(r"^cannot reach the Ray cluster at auto \(Could not find", a, address="auto")


def test_text_lines_split_like_local(cluster, emb: Embedder, tmp_path: Path) -> None:
    # Only \n ends a prompt locally: a form feed, U+2028 or a lone \r stay inside it.
    path = tmp_path / "odd.txt"
    path.write_bytes("alpha\x0cbeta gamma\r\ndelta\u2028epsilon zeta\n \n\neta\rtheta iota\r\r\n"
                     "kappa lambda".encode())
    local = compute_stats(emb, read_corpus(path), domain="odd")
    assert local.n_prompts == 4
    _assert_same(ray_stats([path], emb, domain="odd", progress=False), local)  # a Path too


def test_ndjson_and_pq_suffixes(cluster, corpus, emb: Embedder, tmp_path: Path) -> None:
    ndjson = tmp_path / "part.NDJSON"
    ndjson.write_bytes(corpus["jsonl"][0].read_bytes())
    _assert_same(ray_stats([str(ndjson)], emb, domain="mixed", progress=False),
                 compute_stats(emb, read_corpus(ndjson), domain="mixed"))
    pq = tmp_path / "corpus.pq"
    pq.write_bytes(corpus["parquet"][0].read_bytes())
    _assert_same(ray_stats([str(pq)], emb, domain="mixed", progress=False),
                 compute_stats(emb, read_corpus(pq), domain="mixed"))


def test_empty_files_and_worker_errors(cluster, emb: Embedder, tmp_path: Path) -> None:
    from ir3de.errors import EmptyInputError

    for name, content in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n"), ("blank.txt", " \n\n")):
        (tmp_path / name).write_text(content)
        with pytest.raises(EmptyInputError, match=r"no countable token \(0 prompt\(s\) read\)"):
            ray_stats([str(tmp_path / name)], emb, domain="x", progress=False)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok line\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(IR3DEError) as info:
        ray_stats([str(latin1)], emb, domain="x", progress=False)
    assert str(info.value).endswith("latin1.txt:2: not valid UTF-8 (byte 0xe9 at column 4); "
                                    "is the file compressed or in another encoding?")
    ints = tmp_path / "ints.jsonl"
    ints.write_text('{"text": 3}\n')
    with pytest.raises(IR3DEError) as info:
        ray_stats([str(ints)], emb, domain="x", progress=False)
    assert str(info.value) == "a record has no string field 'text'"  # no traceback, no ANSI
