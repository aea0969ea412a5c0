"""Corpus readers and the leakage-free Reasoning protocols."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import jsonl_texts

from ir3de import IR3DEError
from ir3de.data import (
    JSONL_SUFFIXES,
    decode_lines,
    default_data_dir,
    missing_data,
    read_corpus,
    read_jsonl,
    reasoning_records,
    reasoning_split,
    refuse_repeated_paths,
)

TEXTS = ["What is 2 + 2?", "def f(x):\n    return x", "Ünïcödé ✓ and emoji 😀", "  padded  "]


def write_jsonl(path: Path, records: list[object], blank_after: int | None = None) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ jsonl


def test_jsonl_corpus(tmp_path: Path) -> None:
    records = [{"id": i, "text": t, "domain": "x"} for i, t in enumerate(TEXTS)]
    path = write_jsonl(tmp_path / "c.jsonl", records, blank_after=2)
    assert list(read_corpus(path)) == TEXTS
    for suffix in (".json", ".ndjson", ".JSONL"):
        other = path.with_name(f"c{suffix}")
        other.write_bytes(path.read_bytes())
        assert list(read_corpus(other)) == TEXTS
    # Another text field, and an explicit format overriding the suffix.
    write_jsonl(tmp_path / "q.data", [{"prompt": t} for t in TEXTS])
    assert list(read_corpus(tmp_path / "q.data", fmt="jsonl", text_field="prompt")) == TEXTS
    assert [r["id"] for r in read_jsonl(path)] == [0, 1, 2, 3]


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "fine"}\n{"text": broken}\n{"text": "x"}\n')
    reader = read_corpus(path)
    assert next(reader) == "ok" and next(reader) == "fine"  # streamed up to the bad line
    with pytest.raises(IR3DEError, match=rf"{path}:4: invalid JSON"):
        next(reader)
    path.write_text('{"text": "ok"}\n["not", "an", "object"]\n')
    with pytest.raises(IR3DEError, match=rf"{path}:2: expected a JSON object"):
        list(read_corpus(path))
    # Valid JSON that Python's parser still cannot read: a RecursionError and a ValueError
    # came out as tracebacks.
    deep = '{"text": "hi", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text('{"text": "ok"}\n' + deep + "\n")
    with pytest.raises(IR3DEError, match=rf"{path}:2: JSON nested too deeply to read"):
        list(read_corpus(path))
    path.write_text('{"text": "hi", "id": ' + "9" * 5000 + "}\n")
    with pytest.raises(IR3DEError, match=rf"{path}:1: invalid JSON \(Exceeds the limit"):
        list(read_corpus(path))


def test_jsonl_missing_text_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "ok"}, {"question": "where?"}])
    with pytest.raises(IR3DEError, match=r"c\.jsonl:2: record has no string field 'text'"):
        list(read_corpus(path))
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": 42}])
    with pytest.raises(IR3DEError, match="no string field"):
        list(read_corpus(path))
    with pytest.raises(IR3DEError, match="'prompt'"):
        list(read_corpus(tmp_path / "c.jsonl", text_field="prompt"))


def test_jsonl_errors_name_the_line_after_blank_lines(tmp_path: Path) -> None:
    """Blank lines are skipped but counted: an error names the line an editor shows, as the
    invalid-JSON and non-UTF-8 errors do, not the record number."""
    path = write_jsonl(tmp_path / "b.jsonl", [{"text": "ok"}, {"question": "where?"}],
                       blank_after=1)  # the second record is on line 3
    with pytest.raises(IR3DEError, match=r"b\.jsonl:3: record has no string field 'text'"):
        list(read_corpus(path))
    with pytest.raises(IR3DEError, match=r"b\.jsonl:3: record has no string field 'text'"):
        list(read_jsonl(path, text_field="text"))
    assert len(list(read_jsonl(path))) == 2  # without text_field any object passes


# ------------------------------------------------------------------ text and parquet


def test_text_corpus(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("first prompt\n\n   \nsecond  prompt  \nlast without newline", encoding="utf-8")
    assert list(read_corpus(path)) == ["first prompt", "second  prompt  ",
                                       "last without newline"]
    crlf = tmp_path / "w.text"
    crlf.write_bytes(b"one\r\ntwo\r\n")
    assert list(read_corpus(crlf)) == ["one", "two"]
    # Old Mac line endings (a lone \r) end lines too: such a file was one prompt, cut at
    # the token cap. Lines of invisible characters only are blank.
    cr = tmp_path / "mac.txt"
    cr.write_bytes("one\rtwo\r\u200b\u200b\r\ufeff\rthree\r\n".encode())
    assert list(read_corpus(cr)) == ["one", "two", "three"]
    assert list(read_corpus(tmp_path / "c.txt", fmt="text")) == list(read_corpus(path))


def test_parquet_corpus(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [f"prompt number {i}" for i in range(2500)] + [None, "tail"]
    table = pa.table({"id": list(range(len(texts))), "text": texts,
                      "question": [f"q{i}" for i in range(len(texts))]})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=1000)  # several row groups
    got = list(read_corpus(tmp_path / "c.parquet"))
    assert got == [t for t in texts if t is not None]
    assert list(read_corpus(tmp_path / "c.parquet", text_field="question"))[:2] == ["q0", "q1"]
    pq.write_table(pa.table({"text": pa.array(["a", "b"], type=pa.large_string())}),
                   tmp_path / "large.pq")
    assert list(read_corpus(tmp_path / "large.pq")) == ["a", "b"]
    # pandas' category dtype is stored dictionary-encoded: it was "not a string column"
    pq.write_table(pa.table({"text": pa.array(["a", "b", "a"]).dictionary_encode()}),
                   tmp_path / "category.pq")
    assert list(read_corpus(tmp_path / "category.pq")) == ["a", "b", "a"]
    with pytest.raises(IR3DEError, match=r"no column 'prompt' \(columns: id, text, question\)"):
        list(read_corpus(tmp_path / "c.parquet", text_field="prompt"))
    with pytest.raises(IR3DEError, match=r"'id' is not a string column \(int64\)"):
        list(read_corpus(tmp_path / "c.parquet", text_field="id"))
    (tmp_path / "fake.parquet").write_text("not parquet at all")
    with pytest.raises(IR3DEError, match="not a readable Parquet file"):
        list(read_corpus(tmp_path / "fake.parquet"))


def test_parquet_strings_that_are_not_utf8_are_named(tmp_path: Path) -> None:
    """A string column holding bytes that are not UTF-8 (from a writer that does not check
    them) was a UnicodeDecodeError traceback; JSONL and text name the line."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    raw = pa.array([b"What is 2+2?", None, b"caf\xe9 au lait"], type=pa.binary())
    for kind, column in (("string", raw.view(pa.string())),
                         ("large", raw.cast(pa.large_binary()).view(pa.large_string()))):
        pq.write_table(pa.table({"text": column}), tmp_path / f"{kind}.pq", row_group_size=2)
        with pytest.raises(IR3DEError, match=rf"^{tmp_path / kind}\.pq: row 3: column 'text' is "
                                             r"not valid UTF-8 \(byte 0xe9 at byte 4\); is the "
                                             "file in another encoding\\?$"):
            list(read_corpus(tmp_path / f"{kind}.pq"))
    # dictionary-encoded (pandas' category): pyarrow's reader checks, without the row
    valid = raw.view(pa.string()).filter(pa.array([True, False, True]))
    pq.write_table(pa.table({"text": pa.DictionaryArray.from_arrays(pa.array([0, 1]), valid)}),
                   tmp_path / "category.pq")
    with pytest.raises(IR3DEError, match=r"category\.pq: column 'text' cannot be read after row "
                                         r"0 \(Invalid UTF8 payload\)"):
        list(read_corpus(tmp_path / "category.pq"))


# ------------------------------------------------------------------ errors


def test_unknown_suffix_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("text\nhello\n")
    with pytest.raises(IR3DEError, match=r"suffix '\.csv'.*--format"):
        list(read_corpus(tmp_path / "c.csv"))
    (tmp_path / "noext").write_text("hello\n")
    with pytest.raises(IR3DEError, match="suffix ''"):
        list(read_corpus(tmp_path / "noext"))
    with pytest.raises(IR3DEError, match="unknown corpus format 'csv'"):
        list(read_corpus(tmp_path / "c.csv", fmt="csv"))  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match="no such file"):
        list(read_corpus(tmp_path / "absent.jsonl"))
    with pytest.raises(IR3DEError, match="no such file"):
        list(read_jsonl(tmp_path / "absent.jsonl"))
    with pytest.raises(IR3DEError, match="is a directory"):
        list(read_corpus(tmp_path))
    if os.path.exists(os.devnull):  # a device exists but is not a file to read a corpus from
        with pytest.raises(IR3DEError, match="not a regular file"):
            list(read_jsonl(os.devnull))


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IR3DE_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("IR3DE_DATA")
    assert default_data_dir() == Path("../shared/data")
    monkeypatch.setenv("IR3DE_DATA", "")  # empty is unset, as the tests read it
    assert default_data_dir() == Path("../shared/data")


def test_a_missing_data_folder_says_where_its_path_came_from(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    hint = "; point --data (or $IR3DE_DATA) at the shared data folder"
    assert str(missing_data(tmp_path / "nope", True)) == \
        f"{tmp_path / 'nope'}: no such data folder{hint}"  # was "no reasoning/ folder"
    assert str(missing_data(tmp_path, True, "reasoning/")) == \
        f"{tmp_path}: no reasoning/ folder in it{hint}"
    monkeypatch.setenv("IR3DE_DATA", str(tmp_path / "stale"))
    assert str(missing_data(default_data_dir(), False)) == \
        f"{tmp_path / 'stale'} (from $IR3DE_DATA): no such data folder{hint}"
    monkeypatch.delenv("IR3DE_DATA")
    monkeypatch.chdir(tmp_path)
    assert str(missing_data(default_data_dir(), False)).startswith(
        f"../shared/data (the default, relative to the working directory {tmp_path}): ")


# ------------------------------------------------------------------ Reasoning protocols


README_SIZES = {"gsm8k/train": 7473, "gsm8k/test": 1319, "m_arc/train": 3720,
                "m_arc/test": 1860, "humaneval/test": 164, "ifeval/test": 541,
                "mbpp/train": 374, "mbpp/validation": 90, "mbpp/prompt": 10,
                "alpaca/train": 2000}


def test_xdata_protocol(data_dir: Path) -> None:
    fit, test = reasoning_split(data_dir, protocol="xdata")
    domains = ["math", "multilingual", "coding", "instruction_following"]
    assert list(fit) == domains and list(test) == domains
    n = README_SIZES
    assert {d: len(v) for d, v in fit.items()} == {
        "math": n["gsm8k/train"], "multilingual": n["m_arc/train"],
        "coding": n["mbpp/train"] + n["mbpp/validation"] + n["mbpp/prompt"],
        "instruction_following": n["alpaca/train"]}
    assert {d: len(v) for d, v in test.items()} == {
        "math": n["gsm8k/test"], "multilingual": n["m_arc/test"],
        "coding": n["humaneval/test"], "instruction_following": n["ifeval/test"]}
    assert test["coding"] == jsonl_texts(data_dir / "reasoning" / "humaneval" / "test.jsonl")
    all_fit = {t for v in fit.values() for t in v}
    assert not all_fit & {t for v in test.values() for t in v}  # no test prompt is fitted on


@pytest.mark.parametrize("seed", [0, 7])
def test_two_fold_protocol(data_dir: Path, seed: int) -> None:
    fit0, test0 = reasoning_split(data_dir, protocol="2fold", fold=0, seed=seed)
    fit1, test1 = reasoning_split(data_dir, protocol="2fold", fold=1, seed=seed)
    xfit, xtest = reasoning_split(data_dir, protocol="xdata")
    for domain, source in (("coding", "humaneval/test"), ("instruction_following",
                                                          "ifeval/test")):
        full = jsonl_texts(data_dir / "reasoning" / f"{source}.jsonl")
        assert fit0[domain] == test1[domain] and fit1[domain] == test0[domain]
        assert not set(fit0[domain]) & set(test0[domain])
        assert sorted(fit0[domain] + test0[domain]) == sorted(full)
        assert len(fit0[domain]) == len(full) // 2
    for domain in ("math", "multilingual"):  # as in xdata
        assert fit0[domain] == xfit[domain] and test1[domain] == xtest[domain]
    again, _ = reasoning_split(data_dir, protocol="2fold", fold=0, seed=seed)
    assert again == fit0  # deterministic
    other, _ = reasoning_split(data_dir, protocol="2fold", fold=0, seed=seed + 1)
    assert other["coding"] != fit0["coding"]


def test_reasoning_split_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(IR3DEError, match="fold must be 0 or 1"):
        reasoning_split(data_dir, protocol="2fold", fold=2)
    with pytest.raises(IR3DEError, match="unknown protocol 'loo'"):
        reasoning_split(data_dir, protocol="loo")  # type: ignore[arg-type]
    with pytest.raises(IR3DEError, match=r"missing; is .* the shared data folder"):
        reasoning_split(tmp_path)


@pytest.mark.parametrize(("bad", "message"), [
    ({"id": "gsm-9"}, ":3: record has no non-empty string field 'text'"),
    ({"text": "What is 9 + 9?"}, r":3: record has no 'id' \(a string or an integer\)"),
    ({"id": "gsm-0", "text": "What is 9 + 9?"}, r":3: repeats id 'gsm-0' of .*test.jsonl:1")])
def test_reasoning_records_name_the_line_of_a_bad_record(bad: dict, message: str,
                                                         tmp_path: Path) -> None:
    """The built-in settings read 'text' and split by 'id': a record without either was a
    bare KeyError."""
    path = tmp_path / "reasoning" / "gsm8k" / "test.jsonl"
    path.parent.mkdir(parents=True)
    write_jsonl(path, [{"id": "gsm-0", "text": "What is 2 + 2?"},
                       {"id": 7, "text": "What is 3 + 3?"}, bad])
    with pytest.raises(IR3DEError, match=rf"^{re.escape(str(path))}{message}"):
        reasoning_records(tmp_path, ["gsm8k/test"])
    write_jsonl(path, [{"id": "gsm-0", "text": "What is 2 + 2?"},
                       {"id": 7, "text": "What is 3 + 3?"}])
    # An integer id is its decimal string, as for ir3de eval's own data.
    assert [r["id"] for r in reasoning_records(tmp_path, ["gsm8k/test"])] == ["gsm-0", "7"]


def test_jsonl_suffixes_are_what_read_corpus_reads_as_jsonl(tmp_path: Path) -> None:
    """ir3de eval --fit DIR reads these (any case); ir3de stats must read the same files."""
    assert set(JSONL_SUFFIXES) == {".jsonl", ".ndjson", ".json"}
    for suffix in JSONL_SUFFIXES:
        path = tmp_path / f"x{suffix.upper()}"
        path.write_text('{"text": "hello"}\n')
        assert list(read_corpus(path)) == ["hello"]


# ------------------------------------------------------------------ byte-order marks


BOM = "\ufeff".encode()


def test_a_bom_at_the_start_is_dropped_by_every_reader(tmp_path: Path) -> None:
    """Windows editors start UTF-8 files with a byte-order mark: JSONL used to be refused
    ("decode using utf-8-sig") and plain text counted U+FEFF as part of the first prompt."""
    jsonl = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    jsonl.write_bytes(BOM + jsonl.read_bytes())
    assert list(read_corpus(jsonl)) == TEXTS
    assert [r["text"] for r in read_jsonl(jsonl)] == TEXTS
    text = tmp_path / "c.txt"
    text.write_bytes(BOM + b"first prompt\r\nsecond\n")
    assert list(read_corpus(text)) == ["first prompt", "second"]
    # standard input and the Ray engine's workers read through decode_lines too
    assert list(decode_lines(iter([BOM + b"one\n", b"two\n"]), "<stdin>")) == ["one\n",
                                                                            "two\n"]
    assert list(decode_lines([BOM], "<stdin>")) == [""]


def test_a_bom_elsewhere_is_text(tmp_path: Path) -> None:
    """Only the very start of the first line is a byte-order mark; later it is a character
    (a zero-width no-break space) of the text, and the line numbers stay the file's."""
    assert list(decode_lines([b"a\n", BOM + b"b\n"], "x")) == ["a\n", "\ufeffb\n"]
    assert list(decode_lines([b"x" + BOM], "x")) == ["x\ufeff"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(BOM + b'{"text": "ok"}\n{"text": \xff}\n')
    with pytest.raises(IR3DEError, match=r"bad\.jsonl:2: not valid UTF-8 \(byte 0xff"):
        list(read_corpus(bad))


def test_utf16_without_a_byte_order_mark_is_refused(tmp_path: Path) -> None:
    """UTF-16 without a byte-order mark is valid UTF-8, every other byte NUL: it was counted
    as text ("2 prompts, 48 tokens" of letters and <0x00> tokens)."""
    for name, data in (("le.txt", "What is 2+2?\nAdd 3 and 4\n".encode("utf-16-le")),
                       ("be.jsonl", '{"text": "hi"}\n'.encode("utf-16-be")),
                       ("late.txt", b"fine\nmid\x00dle\n")):
        (tmp_path / name).write_bytes(data)
        line, column = (2, 4) if name == "late.txt" else (1, 2 if name == "le.txt" else 1)
        with pytest.raises(IR3DEError, match=rf"^{tmp_path / name}:{line}: holds a NUL byte "
                                             rf"\(column {column}\), which no text file "
                                             r"holds; is the file UTF-16 or binary\?$"):
            list(read_corpus(tmp_path / name))


# ------------------------------------------------------------------ repeated paths


def test_a_corpus_named_twice_is_refused_under_any_name(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hard link to the same file used to be read twice (its resolved path differs)."""
    corpus = write_jsonl(tmp_path / "math.jsonl", [{"text": t} for t in TEXTS])
    os.link(corpus, tmp_path / "hl.jsonl")
    (tmp_path / "sym.jsonl").symlink_to(corpus)
    monkeypatch.chdir(tmp_path)
    # file:// URLs (the Ray engine reads them) name the file at their decoded path
    (tmp_path / "a b.jsonl").symlink_to(corpus)
    for again in ("hl.jsonl", "sym.jsonl", "./math.jsonl", str(corpus), corpus.as_uri(),
                  f"file://{tmp_path}//math.jsonl", (tmp_path / "sym.jsonl").as_uri(),
                  (tmp_path / "a b.jsonl").as_uri()):
        with pytest.raises(IR3DEError, match=rf"^{re.escape(again)} is given twice \(also as "
                                             r"math\.jsonl\); it would be counted twice$"):
            refuse_repeated_paths(["math.jsonl", again])
    # a copy is another file; other URLs and missing paths are compared as given
    (tmp_path / "copy.jsonl").write_bytes(corpus.read_bytes())
    refuse_repeated_paths(["math.jsonl", "copy.jsonl", "s3://b/math.jsonl", "missing.jsonl",
                           "file:///missing.jsonl"])
    refuse_repeated_paths(["math.jsonl", (tmp_path / "copy.jsonl").as_uri()])
    with pytest.raises(IR3DEError, match="given twice"):
        refuse_repeated_paths(["s3://b/math.jsonl", "s3://b/math.jsonl"])
