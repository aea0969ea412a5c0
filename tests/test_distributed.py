"""Ray statistics equal the single-process statistics, on a real local 2-CPU Ray cluster."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ir3de import DomainStats, Embedder, compute_stats
from ir3de.cli import main
from ir3de.data import read_corpus, read_jsonl
from ir3de.errors import IR3DEError

ray = pytest.importorskip("ray", reason="the Ray engine needs pip install 'ir3de[ray]'")

from ir3de import distributed  # noqa: E402
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


def test_ray_counts_the_tfidf_statistics_as_local(cluster, corpus, emb: Embedder,
                                                 tmp_path: Path) -> None:
    files = [str(p) for p in corpus["jsonl"]]
    texts = [t for path in corpus["jsonl"] for t in read_corpus(path)]
    local = compute_stats(emb, texts, domain="mixed", tfidf_buckets=256)
    remote = ray_stats(files, emb, domain="mixed", workers=2, progress=False,
                       tfidf_buckets=256)
    _assert_same(remote, local)
    for got, want in zip(remote.tfidf, local.tfidf, strict=True):  # integers: to the bit
        np.testing.assert_array_equal(got, want)
    assert ray_stats(files, emb, domain="mixed", progress=False).tfidf is None
    assert main(["stats", *files, "--domain", "mixed", "-o", str(tmp_path / "ray.stats"),
                 "-q", "--engine", "ray", "--tfidf-buckets", "256"]) == 0
    assert DomainStats.load(tmp_path / "ray.stats").tfidf.buckets == 256


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
    with pytest.raises(IR3DEError, match=r"bad\.jsonl:1: record has no string field 'text'"):
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

    # a glob overlapping an explicit file would count it twice, as would a file URL of it
    refused("given twice", str(tmp_path / "*.jsonl"), a)
    refused("given twice", str(tmp_path / "*.jsonl"), str(tmp_path / "a.*"))
    refused(rf"^{(tmp_path / 'a.jsonl').as_uri()} is given twice", a,
            (tmp_path / "a.jsonl").as_uri())
    # a suffix that means no format, a folder, an unknown --format
    (tmp_path / "c.csv").write_text("one\n")
    refused(r"c\.csv: cannot tell the format from the suffix '\.csv'", str(tmp_path / "c.csv"))
    refused(f"^{tmp_path}: is a directory$", str(tmp_path))
    refused("unknown corpus format 'csv'", a, fmt="csv")
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

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused(f"cannot reach the Ray cluster at 127.0.0.1:{port} ", a,
            address=f"127.0.0.1:{port}")
    # ray.init joins $RAY_ADDRESS without an address: a stale one hung the run
    with monkeypatch.context() as patch:
        patch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        refused(rf"cannot reach the Ray cluster at 127\.0\.0\.1:{port} \(from \$RAY_ADDRESS\) ",
                a, workers=1)

    def no_cluster(**kwargs: object) -> None:
        raise ConnectionError("Could not find any running Ray instance.")

    with monkeypatch.context() as patch:
        patch.setattr(ray, "init", no_cluster)
        refused(r"^cannot reach the Ray cluster at auto \(Could not find", a, address="auto")
    # addresses ray.init itself refuses, where something listens: one line, not a traceback
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # (Ray's own texts, over several lines, joined into one)
        refused(rf"^cannot join the Ray cluster at http://127\.0\.0\.1:{port} \(Invalid Ray "
                r"address: .*\)$", a, address=f"http://127.0.0.1:{port}")
        refused(rf"^cannot join the Ray cluster at nosuchmodule://127\.0\.0\.1:{port} "
                r"\(Module: nosuchmodule does not exist\. .*\)$", a,
                address=f"nosuchmodule://127.0.0.1:{port}")


def test_text_lines_split_like_local(cluster, emb: Embedder, tmp_path: Path) -> None:
    # \n, \r\n and a lone \r (old Mac files) end a prompt locally; a form feed or U+2028
    # stays inside it.
    path = tmp_path / "odd.txt"
    path.write_bytes("alpha\x0cbeta gamma\r\ndelta\u2028epsilon zeta\n \n\neta\rtheta iota\r\r\n"
                     "kappa lambda".encode())
    local = compute_stats(emb, read_corpus(path), domain="odd")
    assert local.n_prompts == 5
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
        with pytest.raises(EmptyInputError, match=r"no countable token \(blank prompts, and "
                                                  r"prompts of only special tokens and white "
                                                  r"space, are skipped\)$"):
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
    assert str(info.value) == f"{ints}:1: record has no string field 'text'"  # one line


def _same_outcome(emb: Embedder, paths: list[Path], **kwargs: Any) -> str | None:
    """Assert that ray_stats gives the local engine's statistics on ``paths``, or fails with
    its exact one-line error; return that error (None when both succeed)."""
    fmt, text_field = kwargs.get("fmt"), kwargs.get("text_field", "text")
    try:
        local: DomainStats | IR3DEError = compute_stats(
            emb, [t for p in paths for t in read_corpus(p, fmt=fmt, text_field=text_field)],
            domain="d")
    except IR3DEError as exc:
        local = exc  # Ray is run outside this handler: nothing of it may leak into Ray's error
    if isinstance(local, IR3DEError):
        with pytest.raises(IR3DEError) as info:
            ray_stats([str(p) for p in paths], emb, domain="d", progress=False, **kwargs)
        assert (type(info.value), str(info.value)) == (type(local), str(local))
        assert "\n" not in str(info.value)
        return str(local)
    _assert_same(ray_stats([str(p) for p in paths], emb, domain="d", progress=False,
                           **kwargs), local)
    return None


def test_jsonl_read_by_the_local_reader(cluster, emb: Embedder, tmp_path: Path) -> None:
    # Valid JSONL that Arrow's type inference refused: fields of changing types, duplicate
    # keys, big integers; and CRLF, blank lines, a .json suffix.
    files = {"types.jsonl": '{"id": 1, "text": "one two"}\n{"id": "x", "text": "three"}\n',
             "shapes.jsonl": '{"m": {"a": 1}, "text": "alpha beta"}\n'
                             '{"m": [1, 2], "text": "gamma"}\n',
             "keys.jsonl": '{"text": "first", "text": "second wins"}\n'
                           '{"n": 123456789012345678901234567890, "text": "big"}\n',
             "crlf.json": '{"text": "delta"}\r\n\r\n   \n{"text": "epsilon zeta"}\r\n'}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content.encode())
    assert _same_outcome(emb, sorted(tmp_path.iterdir())) is None
    # A UTF-8 BOM: whatever decode_lines makes of it, both engines make the same
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "bom first"}\n')
    _same_outcome(emb, [tmp_path / "bom.jsonl"])


@pytest.mark.parametrize(("name", "content", "error"), [
    ("array.json", b'[{"text": "a"}, {"text": "b"}]\n', ":1: expected a JSON object"),
    ("pretty.json", b'{\n  "text": "a"\n}\n', ":1: invalid JSON"),
    ("lines.jsonl", b'{"text": "a"}\n\n[1]\n', ":3: expected a JSON object"),
    ("utf8.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', ":2: not valid UTF-8"),
    ("broken.jsonl", b'{"text": "a"}\n{"text" "b"}\n', ":2: invalid JSON"),
    ("missing.jsonl", b'{"text": "a"}\n{"id": 2}\n', ":2: record has no string field"),
    ("number.jsonl", b'{"text": "a"}\n{"text": 3}\n', ":2: record has no string field"),
    ("null.jsonl", b'{"text": null}\n', ":1: record has no string field"),
    ("surrogate.jsonl", b'{"text": "\\ud800"}\n', ":1: holds an unpaired surrogate"),
    ("junk.parquet", b"not parquet", ": not a readable Parquet file"),
])
def test_invalid_files_fail_as_local(cluster, emb: Embedder, tmp_path: Path, name: str,
                                     content: bytes, error: str) -> None:
    (tmp_path / name).write_bytes(content)
    assert error in (_same_outcome(emb, [tmp_path / name]) or "")


def test_parquet_columns_checked_as_local(cluster, emb: Embedder, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [b"a b", b"c"]}), tmp_path / "binary.parquet")
    pq.write_table(pa.table({"body": ["a b"]}), tmp_path / "other.parquet")
    assert _same_outcome(emb, [tmp_path / "binary.parquet"]).endswith(
        "binary.parquet: column 'text' is not a string column (binary)")
    assert "other.parquet: no column 'text' (columns: body)" in \
        _same_outcome(emb, [tmp_path / "other.parquet"])


def test_suffixless_files_and_mixed_formats(cluster, corpus, emb: Embedder,
                                            tmp_path: Path) -> None:
    (tmp_path / "records").write_text('{"text": "one two"}\n{"text": "three"}\n')
    (tmp_path / "table").write_bytes(corpus["parquet"][0].read_bytes())
    assert _same_outcome(emb, [tmp_path / "records"], fmt="jsonl") is None
    assert _same_outcome(emb, [tmp_path / "table"], fmt="parquet") is None
    assert "cannot tell the format from the suffix ''" in \
        _same_outcome(emb, [tmp_path / "records"])
    # Each file in its own format, as locally
    assert _same_outcome(emb, [corpus["jsonl"][0], corpus["text"][0],
                               corpus["parquet"][0]]) is None
    # Bytes as stored, as locally: Ray Data decompressed a .gz file by its suffix
    (tmp_path / "z.jsonl.gz").write_bytes(gzip.compress(b'{"text": "one two"}\n'))
    assert "z.jsonl.gz:1: not valid UTF-8" in \
        _same_outcome(emb, [tmp_path / "z.jsonl.gz"], fmt="jsonl")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text('{"text": "one two"}\n')
    assert _same_outcome(emb, [fake], fmt="jsonl") is None
    _assert_same(ray_stats([fake.as_uri()], emb, domain="d", fmt="jsonl", progress=False),
                 compute_stats(emb, read_corpus(fake, fmt="jsonl"), domain="d"))


def test_paths_taken_as_the_local_engine_takes_them(cluster, emb: Embedder,
                                                    tmp_path: Path) -> None:
    # An existing name with glob characters is that file, not the glob's match
    (tmp_path / "corpus[1].jsonl").write_text('{"text": "bracket one two"}\n')
    (tmp_path / "corpus1.jsonl").write_text('{"text": "plain"}\n{"text": "other"}\n')
    assert _same_outcome(emb, [tmp_path / "corpus[1].jsonl"]) is None
    # A folder is refused, not read recursively (nor a file in it counted twice)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "a"}\n')
    assert _same_outcome(emb, [folder, folder / "a.jsonl"]) == f"{folder}: is a directory"
    with pytest.raises(IR3DEError, match=f"^{folder.as_uri()}: is a directory$"):
        ray_stats([folder.as_uri()], emb, domain="d", progress=False)


def test_file_url_globs_expanded(cluster, emb: Embedder, tmp_path: Path) -> None:
    for name, text in (("b.jsonl", "bee"), ("a.jsonl", "ant"), (".hidden.jsonl", "no")):
        (tmp_path / name).write_text(json.dumps({"text": f"{text} one two"}) + "\n")
    (tmp_path / "c.txt").write_text("cat\n")
    local = compute_stats(emb, ["ant one two", "bee one two"], domain="d")
    _assert_same(ray_stats([f"{tmp_path.as_uri()}/*.jsonl"], emb, domain="d",
                           progress=False), local)
    both = ray_stats([f"{tmp_path.as_uri()}/[ab].jsonl", (tmp_path / "c.txt").as_uri()], emb,
                     domain="d", progress=False)
    assert both.n_prompts == 3
    for pattern, error in (("*.csv", "no file matches"),
                           ("*/a.jsonl", "a glob may only be in the last path component")):
        with pytest.raises(IR3DEError, match=f"^{tmp_path.as_uri()}/{re.escape(pattern)}: "
                                             f"{error}"):
            ray_stats([f"{tmp_path.as_uri()}/{pattern}"], emb, domain="d", progress=False)


def test_url_globs_match_and_name_files_by_their_decoded_names(tmp_path: Path) -> None:
    """The URL's path is percent-encoded, the folder's listing is not: a match was pasted
    into the URL undecoded, so "law%41.jsonl" was read as lawA.jsonl and "a b.parquet"
    failed on a worker; an encoded pattern (a%20*) matched nothing."""
    from ir3de.distributed import _expand, _read_file

    for name, text in (("law%41.jsonl", "court"), ("lawA.jsonl", "sum"), ("a b.jsonl", "ab"),
                       ("x*y.jsonl", "star")):
        (tmp_path / name).write_text(json.dumps({"text": text}) + "\n")
    base = tmp_path.as_uri()
    (court,) = _expand([f"{base}/law%25*"])
    assert court == f"{base}/law%2541.jsonl" and b"court" in _read_file(court, court)
    assert _expand([f"{base}/a%20*"]) == _expand([f"{base}/a *"]) == [f"{base}/a%20b.jsonl"]
    # an encoded * is a character of the name, the other one a wildcard
    assert _expand([f"{base}/x%2A*"]) == [f"{base}/x%2Ay.jsonl"]


def test_ray_failures_are_one_line(cluster, emb: Embedder, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ir3de import distributed

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n')

    def failing_job(*args: object, **kwargs: object) -> None:
        def fail(batch: object) -> None:
            raise KeyError("a key\nover two lines")

        ray.data.range(1).map_batches(fail).take_all()

    monkeypatch.setattr(distributed, "_run", failing_job)
    with pytest.raises(IR3DEError) as info:
        ray_stats([tmp_path / "a.jsonl"], emb, domain="d", progress=False)
    assert str(info.value) == "Ray job failed: KeyError: 'a key\\nover two lines'"
    # a file gone between the check and its reading, on a worker
    monkeypatch.undo()
    monkeypatch.setattr(distributed, "_expand", lambda paths: [str(tmp_path / "gone")])
    with pytest.raises(IR3DEError, match=rf"^{tmp_path}/gone: No such file or directory$"):
        ray_stats([tmp_path / "a.jsonl"], emb, domain="d", fmt="jsonl", progress=False)


def test_quiet_cli_run_prints_nothing(emb: Embedder, tmp_path: Path) -> None:
    # Ray started (and stopped) by the run itself, as `ir3de stats` does: neither its
    # token-authentication banner, nor its log lines, nor the progress-bar warning.
    # Beside a stale ray_current_cluster file (`ray start` writes it, only `ray stop`
    # removes it), which ray.init(address=None) joined: "cannot start Ray (…num_cpus…
    # must not be provided)", or minutes of retries without --workers.
    import shutil
    import tempfile

    (tmp_path / "a.jsonl").write_text('{"text": "one two"}\n')
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # (short: Ray's socket paths)
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("192.0.2.2:6391")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        run = subprocess.run([sys.executable, "-m", "ir3de.cli", "stats",
                              str(tmp_path / "a.jsonl"), "--domain", "d", "-o",
                              str(tmp_path / "a.stats"), "-q", "--engine", "ray", "--workers",
                              "1"], capture_output=True, text=True, timeout=300,
                             env={**env, "RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


def test_sigterm_during_a_ray_run_cleans_up_as_locally(emb: Embedder, tmp_path: Path) -> None:
    """ray.init took over SIGTERM: `ir3de stats --engine ray` then exited 15 with a C++
    stack on stderr, not 143 "ir3de: terminated", and the handler outlived the run. The
    signal is sent once Ray has started, as the job begins."""
    (tmp_path / "a.jsonl").write_text('{"text": "one two"}\n')
    (tmp_path / "a.stats").write_bytes(b"previous")
    script = (
        "import os, signal, sys\n"
        "from ir3de import cli, distributed\n"
        "run = distributed._run\n"
        "def stopped(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return run(*args, **kwargs)\n"
        "distributed._run = stopped\n"
        "sys.exit(cli.main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", script, "stats", str(tmp_path / "a.jsonl"),
                          "--domain", "d", "-o", str(tmp_path / "a.stats"), "--force", "-q",
                          "--engine", "ray", "--workers", "1"],
                         capture_output=True, text=True, timeout=300)
    assert (run.returncode, run.stderr) == (143, "ir3de: terminated\n")
    assert (tmp_path / "a.stats").read_bytes() == b"previous"


def test_an_address_where_no_ray_answers_fails_fast(cluster, emb: Embedder, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # ray.init retries for minutes against a port that accepts but is not Ray's (a
    # mistyped port, the dashboard's HTTP); the address is probed first.
    (tmp_path / "a.jsonl").write_text('{"text": "one two"}\n')
    a = str(tmp_path / "a.jsonl")
    gcs = ray.get_runtime_context().gcs_address  # (the cluster's, before it is hidden)

    def refused(match: str, address: str) -> None:
        with pytest.raises(IR3DEError, match=match):
            ray_stats([a], emb, domain="x", progress=False, address=address)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "_PROBE_SECONDS", 0.5)
    not_ray = r"what listens there does not speak Ray's protocol \(gRPC\); give the head"
    http = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        for server in (http.server_address[1], silent.getsockname()[1]):
            for address in (f"127.0.0.1:{server}", f"ray://127.0.0.1:{server}"):
                started = time.monotonic()
                refused(rf"^cannot join the Ray cluster at 127\.0\.0\.1:{server}: {not_ray}",
                        address)
                assert time.monotonic() - started < 5
        # With Ray's TLS switch on the probe cannot speak first; ray.init is left to judge.
        monkeypatch.setenv("RAY_USE_TLS", "1")
        distributed._check_reachable(f"127.0.0.1:{http.server_address[1]}")
    finally:
        http.shutdown()
        http.server_close()
        silent.close()
    # The real cluster's GCS passes the probe (so would a Ray Client server: gRPC too); a
    # refusal of ray.init's own after it is one line, not a traceback.
    monkeypatch.delenv("RAY_USE_TLS")
    distributed._check_reachable(gcs)

    def no_client(**kwargs: object) -> None:  # what Ray says without ray[client]
        raise ValueError("Ray Client requires pip package `ray[client]`. If you "
                         "installed the minimal Ray (e.g. `pip install ray`), please "
                         "reinstall by executing `pip install ray[client]`.")

    monkeypatch.setattr(ray, "init", no_client)
    refused(rf"^cannot join the Ray cluster at ray://{re.escape(gcs)} \(Ray Client "
            r"requires pip package `ray\[client\]`\. .*\)$", f"ray://{gcs}")
