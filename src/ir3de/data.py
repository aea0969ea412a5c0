"""Reading corpora and the Reasoning protocols of ``../shared/data``.

Corpus formats (chosen by file suffix, in any case, or explicitly):

* ``.jsonl`` (also ``.ndjson``, ``.json``: :data:`JSONL_SUFFIXES`) — one JSON object per
  line, the prompt in a text field (``text``);
* ``.txt`` (``.text``) — one prompt per non-empty line;
* ``.parquet`` (``.pq``) — a string column (``text``), read batch by batch.

The Reasoning protocols (all leakage-free: no test prompt is ever fitted on):

* ``xdata`` — fit math on gsm8k train, multilingual on m_arc train, coding on
  MBPP train+validation+prompt and instruction following on Alpaca; test on
  gsm8k test, m_arc test, HumanEval and IFEval: every coding/instruction test
  prompt comes from a dataset the router never saw.
* ``2fold`` — as ``xdata`` for math and multilingual; coding and instruction
  following are fitted on one seeded half of HumanEval / IFEval and tested on
  the other half (``fold`` 0 or 1).
"""

from __future__ import annotations

import codecs
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from .errors import EmptyInputError, IR3DEError, is_blank, require_file

__all__ = [
    "FORMATS",
    "JSONL_SUFFIXES",
    "corpus_texts",
    "decode_lines",
    "default_data_dir",
    "local_path",
    "missing_data",
    "parse_jsonl",
    "parse_numbered_jsonl",
    "read_corpus",
    "read_jsonl",
    "read_numbered_jsonl",
    "read_records",
    "reasoning_records",
    "reasoning_split",
    "record_id",
    "refuse_repeated_paths",
    "require_format",
    "seeded_split",
    "text_lines",
]

FORMATS = ("jsonl", "text", "parquet")
CorpusFormat = Literal["jsonl", "text", "parquet"]

_SUFFIX_FORMATS: dict[str, CorpusFormat] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text",
    ".parquet": "parquet", ".pq": "parquet"}
# File suffixes read as JSONL (compared in lower case: ``.JSONL`` is JSONL too).
JSONL_SUFFIXES = tuple(s for s, f in _SUFFIX_FORMATS.items() if f == "jsonl")

REASONING_TEST = {"math": ["gsm8k/test"], "multilingual": ["m_arc/test"],
                  "coding": ["humaneval/test"], "instruction_following": ["ifeval/test"]}
REASONING_FIT = {"math": ["gsm8k/train"], "multilingual": ["m_arc/train"],
                 "coding": ["mbpp/train", "mbpp/validation", "mbpp/prompt"],
                 "instruction_following": ["alpaca/train"]}
_TWO_FOLD = ("coding", "instruction_following")


def default_data_dir() -> Path:
    """``$IR3DE_DATA`` if set and not empty, else ``../shared/data`` relative to the working
    directory (an empty variable is unset, as for the tests, not the working directory)."""
    return Path(os.environ.get("IR3DE_DATA") or "../shared/data")


def missing_data(data_dir: Path, given: bool, needs: str | None = None) -> IR3DEError:
    """The error for a data folder that is missing, or lacks the subfolder ``needs``,
    saying where the path came from when the caller did not give it (``given``): a stale
    ``$IR3DE_DATA``, or ``../shared/data`` taken from the wrong working directory."""
    origin = ("" if given else " (from $IR3DE_DATA)" if os.environ.get("IR3DE_DATA") else
              f" (the default, relative to the working directory {Path.cwd()})")
    what = "no such data folder" if not data_dir.is_dir() else f"no {needs} folder in it"
    return IR3DEError(f"{data_dir}{origin}: {what}; point --data (or $IR3DE_DATA) at the "
                      "shared data folder")


def require_format(fmt: str) -> None:
    """Refuse a corpus format ``fmt`` that is not one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise IR3DEError(f"unknown corpus format {fmt!r}; choose one of {', '.join(FORMATS)}")


def infer_format(path: Path) -> CorpusFormat:
    """Corpus format from the file suffix."""
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IR3DEError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                         f"pass --format ({', '.join(FORMATS)})")
    return fmt


def parse_jsonl(lines: Iterable[str], where: str, *,
                text_field: str | None = None) -> Iterator[dict]:
    """JSON objects of JSONL lines (blank lines skipped); errors say ``where:line``.

    With ``text_field``, a record without a string in that field is an error too (named by
    its line, which blank lines make differ from its record number).
    """
    for _, record in parse_numbered_jsonl(lines, where, text_field=text_field):
        yield record


def parse_numbered_jsonl(lines: Iterable[str], where: str, *,
                         text_field: str | None = None) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each record of JSONL lines: :func:`parse_jsonl` for
    callers that check the records themselves and should name the line of a bad one."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "\\ud" in line or "\\uD" in line:
                # an escaped unpaired surrogate ("\\ud800") parses, but no tokenizer takes
                # it; paired ones (escaped emoji) parse into one character and pass
                json.dumps(record, ensure_ascii=False).encode("utf-8")
        except json.JSONDecodeError as exc:
            raise IR3DEError(f"{where}:{lineno}: invalid JSON ({exc.msg})") from None
        except RecursionError:  # valid JSON, but nested deeper than Python's parser goes
            raise IR3DEError(f"{where}:{lineno}: JSON nested too deeply to read") from None
        except UnicodeEncodeError:
            raise IR3DEError(f"{where}:{lineno}: holds an unpaired surrogate (\\ud800-"
                             "\\udfff), which is not text") from None
        except ValueError as exc:  # an integer of more digits than Python converts
            raise IR3DEError(f"{where}:{lineno}: invalid JSON ({str(exc).split(':')[0]})"
                             ) from None
        if not isinstance(record, dict):
            raise IR3DEError(f"{where}:{lineno}: expected a JSON object")
        if text_field is not None and not isinstance(record.get(text_field), str):
            raise IR3DEError(f"{where}:{lineno}: record has no string field {text_field!r}")
        yield lineno, record


def _utf8_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file; bytes that are not UTF-8 are an error naming the
    line (a gzip file with a .jsonl name ends here too)."""
    with path.open("rb") as fh:
        yield from decode_lines(fh, str(path))


def decode_lines(lines: Iterable[bytes], where: str) -> Iterator[str]:
    """Byte lines decoded as UTF-8; bytes that are not UTF-8 are an error naming
    ``where:line`` (what the local reader and the Ray engine's workers both say). A UTF-8
    byte-order mark at the very start (Windows editors write one) is dropped: JSON would
    refuse the line and plain text would count it as a token; elsewhere it is text. A NUL
    byte, which no text file holds, is an error too: UTF-16 without a byte-order mark is
    valid UTF-8, every other byte NUL (counted as text, "W\\x00h\\x00a\\x00t")."""
    for lineno, raw in enumerate(lines, 1):
        if lineno == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IR3DEError(f"{where}:{lineno}: not valid UTF-8 (byte "
                             f"0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                             "is the file compressed or in another encoding?") from None
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise IR3DEError(f"{where}:{lineno}: holds a NUL byte (column {nul + 1}), which "
                             "no text file holds; is the file UTF-16 or binary?")
        yield line


def read_jsonl(path: str | os.PathLike[str], *, text_field: str | None = None) -> Iterator[dict]:
    """JSON objects of a JSONL file, with the line number in every error (``text_field``: as
    in :func:`parse_jsonl`)."""
    path = Path(path)
    require_file(path)
    yield from parse_jsonl(_utf8_lines(path), str(path), text_field=text_field)


def read_numbered_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each record of a JSONL file, for callers that check
    the records themselves and should name the line of a bad one."""
    path = Path(path)
    require_file(path)
    yield from parse_numbered_jsonl(_utf8_lines(path), str(path))


def record_id(record: dict, default: str, where: str) -> str | int:
    """A JSONL record's id as ir3de names records (``ir3de eval``, ``ir3de route``): its
    ``id`` field, a string or an integer, else ``default`` (``<file stem>-<n>``); ``where``
    (``file:line``) names the record in the error. ``str(id)`` is the key callers keep ids
    unique by, so 7 and "7" are one id."""
    ident = record.get("id", default)
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        raise IR3DEError(f"{where}: 'id' must be a string or an integer, got "
                         f"{json.dumps(ident)}")
    if ident == "":  # printed as "id": "", no name to find the decision by
        raise IR3DEError(f"{where}: empty 'id'; give a non-empty string or an integer, or "
                         f"leave 'id' out ({default} then)")
    return ident


def refuse_repeated_paths(paths: Iterable[str]) -> None:
    """Refuse a corpus file named twice (under any spelling of a local path or of a
    ``file://`` URL, a symbolic or hard link to it included; other URLs and paths that do
    not exist as given): it would be counted twice."""
    seen: dict[Any, str] = {}
    for p in paths:
        key = _file_identity(p)
        if key in seen:
            raise IR3DEError(f"{p} is given twice (also as {seen[key]}); it would be "
                             "counted twice")
        seen[key] = p


def _file_identity(path: str) -> Any:
    """The identity (device, inode) of the local file ``path`` names (see
    :func:`local_path`); else ``path`` itself (another URL, a glob, a missing file, a NUL in
    the name).

    A hard link has no other spelling in common with the file it links to, so resolving
    the path would not tell them apart.
    """
    local = local_path(path)
    if local is None:
        return path
    try:
        st = os.stat(local)
    except (OSError, ValueError):
        return path
    return (st.st_dev, st.st_ino)


def local_path(path: str) -> str | None:
    """The local path a corpus argument names: itself, or a ``file://`` URL's decoded path
    (as pyarrow reads it for the Ray engine); None for a URL of another filesystem
    (``s3://``), which is no local file."""
    if "://" not in path:  # what the Ray engine takes as a URL
        return path
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    parts = urlsplit(path)
    return url2pathname(parts.path) if parts.scheme == "file" else None


def read_corpus(path: str | os.PathLike[str], *, fmt: CorpusFormat | None = None,
                text_field: str = "text") -> Iterator[str]:
    """Stream the prompts of a corpus file (see the module docs for formats)."""
    path = Path(path)
    require_file(path)
    fmt = fmt or infer_format(path)
    require_format(fmt)
    if fmt == "parquet":
        yield from _parquet_texts(path, str(path), text_field)
    else:
        with path.open("rb") as fh:
            yield from _line_texts(fh, str(path), fmt, text_field)


def corpus_texts(data: bytes, name: str, fmt: CorpusFormat,
                 text_field: str = "text") -> Iterator[str]:
    """The prompts of a corpus file's bytes, read as :func:`read_corpus` reads the file
    (the same readers, so the same ``name:line: …`` errors): what the Ray engine's
    workers do with the files they are given."""
    require_format(fmt)
    if fmt == "parquet":
        import pyarrow as pa

        return _parquet_texts(pa.BufferReader(data), name, text_field)
    return _line_texts(io.BytesIO(data), name, fmt, text_field)


def _line_texts(fh: BinaryIO, name: str, fmt: str, text_field: str) -> Iterator[str]:
    """The prompts of a JSONL or (any other ``fmt``) text file open in binary mode."""
    lines = decode_lines(fh, name)
    if fmt == "jsonl":
        return (record[text_field] for record in parse_jsonl(lines, name,
                                                             text_field=text_field))
    return (text for line in lines for text in text_lines(line) if not is_blank(text))


def text_lines(line: str) -> list[str]:
    """The prompts of one line of a plain text file as read in binary mode (up to and
    including a \\n): lines end at \\n, \\r\\n or a lone \\r. A file with old Mac line
    endings (\\r only) read as one line would be one prompt, cut at the token cap."""
    return line.rstrip("\r\n").split("\r")


def _arrow_text_types(pa: Any) -> list[Callable[[Any], bool]]:
    """pyarrow's tests for the string types a text column may have (string_view: 16+)."""
    tests = [pa.types.is_string, pa.types.is_large_string]
    return [*tests, pa.types.is_string_view] if hasattr(pa.types, "is_string_view") else tests


def _parquet_texts(source: Any, name: str, text_field: str) -> Iterator[str]:
    """The non-null strings of a Parquet file's ``text_field`` column; ``source`` is a path
    or a pyarrow buffer reader, ``name`` what errors call it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IR3DEError(f"{name}: not a readable Parquet file ({exc})") from None
    if text_field not in pf.schema_arrow.names:
        raise IR3DEError(f"{name}: no column {text_field!r} (columns: "
                         f"{', '.join(pf.schema_arrow.names)})")
    kind = pf.schema_arrow.field(text_field).type
    if pa.types.is_dictionary(kind):  # pandas' category dtype; to_pylist decodes it
        kind = kind.value_type
    if not any(is_text(kind) for is_text in _arrow_text_types(pa)):
        raise IR3DEError(f"{name}: column {text_field!r} is not a string column ({kind})")
    rows = 0
    try:
        for batch in pf.iter_batches(columns=[text_field]):
            try:
                texts = batch.column(0).to_pylist()
            except UnicodeDecodeError:  # (a writer that does not check its strings' bytes)
                _refuse_undecodable(batch.column(0), rows, name, text_field)
                raise
            rows += len(texts)
            yield from (t for t in texts if t is not None)
    except (pa.ArrowInvalid, OSError) as exc:  # (damaged pages; a dictionary's bad UTF-8)
        raise IR3DEError(f"{name}: column {text_field!r} cannot be read after row {rows} "
                         f"({exc})") from None


def _refuse_undecodable(column: Any, rows: int, name: str, text_field: str) -> None:
    """Name the first value of a Parquet string ``column`` (a batch after ``rows`` rows)
    that is not UTF-8: found only on failure, so reading pays nothing for it."""
    import pyarrow as pa

    for row, value in enumerate(column.cast(pa.large_binary()).to_pylist()):
        try:
            if value is not None:
                value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IR3DEError(
                f"{name}: row {rows + row + 1}: column {text_field!r} is not valid UTF-8 "
                f"(byte {value[exc.start]:#04x} at byte {exc.start + 1}); is the file in "
                "another encoding?") from None


def read_records(path: str | os.PathLike[str], seen: dict[str, str] | None = None, *,
                 default_id: str | None = None,
                 check: Callable[[dict, str], None] | None = None) -> list[dict]:
    """The records of a JSONL file of prompts with ids, checked as ``ir3de eval`` checks
    its data: each has a non-blank string ``text`` and an ``id``, a string or an integer
    (kept as its decimal string, so 7 and "7" are one id and mixed ids sort), unique within
    the file and among ``seen`` (id -> ``file:line`` that has it; updated). A record
    without an id is refused, or with ``default_id`` named ``<default_id>-<n>``, ``n`` its
    1-based record number. ``check(record, "file:line")``, when given, checks more of
    each record, after its text. Errors name ``file:line``: the seeded splits sort and draw
    ids and the splits read ``text``, so a record without them would otherwise fail there
    with a bare KeyError.
    """
    seen = {} if seen is None else seen
    records = []
    for n, (lineno, record) in enumerate(read_numbered_jsonl(path), 1):
        here = f"{path}:{lineno}"
        text = record.get("text")
        if not isinstance(text, str) or is_blank(text):
            raise IR3DEError(f"{here}: record has no non-empty string field 'text'")
        if check is not None:
            check(record, here)
        if default_id is None and "id" not in record:
            raise IR3DEError(f"{here}: record has no 'id' (a string or an integer)")
        record["id"] = str(record_id(record, f"{default_id}-{n}", here))
        if record["id"] in seen:
            raise IR3DEError(f"{here}: repeats id {record['id']!r} of {seen[record['id']]}; "
                             "ids must be unique")
        seen[record["id"]] = here
        records.append(record)
    return records


def reasoning_records(data_dir: str | os.PathLike[str], names: Iterable[str], *,
                      seen: dict[str, str] | None = None) -> list[dict]:
    """Records (``id``, ``text``, …) of Reasoning sets such as ``"gsm8k/test"``, in order,
    checked by :func:`read_records` (ids unique across the sets, and among ``seen``, which
    is updated, as read_records takes it)."""
    data_dir = Path(data_dir)
    names = list(names)
    records: list[dict] = []
    seen = {} if seen is None else seen
    for name in names:
        path = data_dir / "reasoning" / f"{name}.jsonl"
        if not path.is_file():
            raise IR3DEError(f"{path}: missing; is {data_dir} the shared data folder?")
        records.extend(read_records(path, seen))
    if not records:
        raise EmptyInputError(f"{', '.join(names)}: no records")
    return records


def seeded_split(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split records by a seeded shuffle of their sorted ``id``s: ``fraction`` go first.

    Sorting first makes the split independent of file order; both parts keep file order.
    """
    ids = sorted(r["id"] for r in records)
    perm = np.random.default_rng(seed).permutation(len(ids))
    first = {ids[i] for i in perm[: int(len(ids) * fraction)]}
    return ([r for r in records if r["id"] in first],
            [r for r in records if r["id"] not in first])


def reasoning_split(data_dir: str | os.PathLike[str] | None = None, *,
                    protocol: Literal["xdata", "2fold"] = "xdata", fold: int = 0,
                    seed: int = 0) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(fit, test)`` prompts per domain for a leakage-free Reasoning protocol."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    fit = {d: [r["text"] for r in reasoning_records(data_dir, n)]
           for d, n in REASONING_FIT.items()}
    test = {d: [r["text"] for r in reasoning_records(data_dir, n)]
            for d, n in REASONING_TEST.items()}
    if protocol == "2fold":
        if fold not in (0, 1):
            raise IR3DEError(f"fold must be 0 or 1, got {fold}")
        for domain in _TWO_FOLD:
            halves = [[r["text"] for r in part] for part in
                      seeded_split(reasoning_records(data_dir, REASONING_TEST[domain]), 0.5, seed)]
            fit[domain], test[domain] = halves[fold], halves[1 - fold]
    elif protocol != "xdata":
        raise IR3DEError(f"unknown protocol {protocol!r}; choose 'xdata' or '2fold'")
    return fit, test
