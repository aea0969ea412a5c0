"""Statistics of corpora too large for one machine, counted on a Ray cluster.

``ir3de stats --engine ray [--address ...]`` (extra ``ir3de[ray]``) reads JSONL, Parquet or
text files (local paths, globs, or any filesystem pyarrow/fsspec understands, such as
``s3://``) with Ray Data, tokenizes and counts token ids per block on the workers, and
sums the counts (and the blocks' token-pair tables) on the driver, which then forms ``A_d``
and ``b_d``. Token counts are
integers and their sum does not depend on how the corpus was split, so the result is the
same statistics file, bit for bit, as the single-process path on the same texts.

Without ``--address`` a local Ray instance is started (and stopped) for the run; with one,
the job joins that cluster. Texts are read as the local path reads them: the JSONL or
Parquet ``text`` field, or one prompt per non-blank line of a text file (with Windows line
ends normalised); blank prompts are skipped and each prompt is capped at ``max_tokens``.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import errors
from .data import FORMATS, CorpusFormat, decode_lines, infer_format, refuse_repeated_paths
from .embedding import DEFAULT_MAX_TOKENS, Embedder, load_embedder
from .errors import EmptyInputError, FingerprintMismatchError, IR3DEError, refuse_lone_text
from .statistics import (
    DomainStats,
    _max_tokens,
    stats_from_counts,
    sum_pairs,
    token_counts,
    validate_domain_name,
)

__all__ = ["ray_stats"]

_BATCH = 1024


def _ray() -> Any:
    try:
        import ray
        import ray.data  # Ray Data ships with ray[data]
    except ImportError:
        raise IR3DEError("the Ray engine needs its extra: pip install 'ir3de[ray]'") from None
    return ray


def _paths(paths: Any) -> list[str]:
    """``paths`` as a non-empty list of strings (``os.PathLike`` taken too)."""
    refuse_lone_text(paths, "paths")
    out = []
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise IR3DEError(f"paths must be strings or os.PathLike, not {type(path).__name__}")
        out.append(os.fspath(path))
    if not out:
        raise IR3DEError("no corpus file given")
    return out


def _expand(paths: Sequence[str]) -> list[str]:
    """Local globs expanded (sorted); URLs and plain paths passed to Ray as they are. A file
    named twice (also through overlapping globs) would be counted twice: refused."""
    out: list[str] = []
    for path in paths:
        if "://" not in path and any(c in path for c in "*?["):
            matched = sorted(glob.glob(path))
            if not matched:
                raise IR3DEError(f"{path}: no file matches")
            out += matched
        elif "://" not in path and not os.path.exists(path):
            raise IR3DEError(f"{path}: no such file")
        else:
            out.append(path)
    refuse_repeated_paths(out)
    return out


def _format(files: Sequence[str], fmt: str | None) -> CorpusFormat:
    """The one format of all ``files``: each file's suffix must imply the same one (an
    explicit ``fmt`` is taken for files whose suffix implies none)."""
    if fmt is not None and fmt not in FORMATS:
        raise IR3DEError(f"unknown corpus format {fmt!r}; choose one of {', '.join(FORMATS)}")
    first: tuple[str, str] | None = None
    for file in files:
        path = Path(file.split("?")[0])
        try:
            implied = infer_format(path)
        except IR3DEError:
            if fmt is None:
                raise
            continue
        if fmt is not None and implied != fmt:
            raise IR3DEError(f"{file}: its suffix {path.suffix!r} means {implied}, not the "
                             f"--format {fmt} (the Ray engine reads all files in one format)")
        if first is not None and implied != first[1]:
            raise IR3DEError(f"{first[0]} is {first[1]} but {file} is {implied}: the Ray "
                             "engine reads all files in one format; count them separately "
                             "and merge the statistics")
        first = first or (file, implied)
    return fmt or first[1]  # type: ignore[index,return-value]


def _check_reachable(address: str | None) -> None:
    """Fail fast when ``address`` is ``[ray://]host:port`` and nothing listens there
    (``ray.init`` would retry for ever)."""
    if address is None or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=5).close()
    except OSError as exc:
        raise IR3DEError(f"cannot reach the Ray cluster at {hostport} "
                         f"({exc.strerror or exc})") from None


def _user_error(exc: BaseException) -> IR3DEError | None:
    """The IR3DEError a Ray error wraps (through ``cause``/``__cause__``), if any."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, IR3DEError):
            return err
        todo += [getattr(err, "cause", None), err.__cause__, err.__context__]
    return None


def _text_lines(data: bytes, path: str) -> list[str]:
    """The prompts of a text file's bytes, as :func:`ir3de.data.read_corpus` reads them:
    lines end at ``\n`` only, a trailing ``\r`` is dropped, blank lines are skipped."""
    return [line.rstrip("\r") for line in decode_lines(data.split(b"\n"), path)
            if line.strip()]


def _count_block(batch: Any, *, spec: dict[str, Any], fingerprint: str, column: str, fmt: str,
                 max_tokens: int, vocab_size: int) -> dict[str, np.ndarray]:
    """Ray Data map_batches task: the token counts of one block of texts.

    A task, not an actor pool: actors would hold every CPU of a small cluster and starve
    the read tasks. The embedder is cached per worker process by ``load_embedder``.
    """
    try:
        counted = _count_texts(batch, spec=spec, fingerprint=fingerprint, column=column,
                               fmt=fmt, max_tokens=max_tokens)
    except IR3DEError as exc:
        # Returned, not raised: Ray does not carry a task's exception (its cause) back to
        # the driver, only a traceback text. The driver re-raises it with its own message.
        empty = np.empty(1, dtype=object)
        empty[0] = np.zeros(0, dtype=np.int64)
        return {"counts": np.zeros((1, vocab_size), dtype=np.int64),
                "doc_counts": np.zeros((1, vocab_size), dtype=np.int64),
                "n_prompts": np.array([0]), "pairs": empty,
                "error": np.array([f"{type(exc).__name__}:{exc}"])}
    # The block's pair table is ragged: one object cell holding keys then counts, which Ray
    # Data carries as a variable-shaped tensor column.
    pairs = np.empty(1, dtype=object)
    pairs[0] = np.concatenate(counted.pairs)
    return {"counts": counted.counts[None, :], "doc_counts": counted.doc_counts[None, :],
            "n_prompts": np.array([counted.n_prompts]), "pairs": pairs,
            "error": np.array([""])}


def _count_texts(batch: Any, *, spec: dict[str, Any], fingerprint: str, column: str,
                 fmt: str, max_tokens: int) -> Any:
    embedder = load_embedder(spec)
    if embedder.fingerprint != fingerprint:
        # A worker with other package versions would count with another table.
        raise FingerprintMismatchError(
            f"a Ray worker loaded embedder {embedder.name} with fingerprint "
            f"{embedder.fingerprint[:12]}, the driver has {fingerprint[:12]}: "
            "install the same ir3de and embedding packages on every node")
    if fmt == "text":
        texts = [line for path, data in zip(batch.column("path").to_pylist(),
                                            batch.column("bytes").to_pylist(), strict=True)
                 for line in _text_lines(data, path)]
    else:
        texts = batch.column(column).to_pylist()
        if any(t is not None and not isinstance(t, str) for t in texts) or \
                (fmt == "jsonl" and any(t is None for t in texts)):
            raise IR3DEError(f"a record has no string field {column!r}")
    return token_counts(embedder, [t for t in texts if t is not None], max_tokens=max_tokens)


def ray_stats(paths: Sequence[str | os.PathLike[str]], embedder: Embedder, *, domain: str,
              fmt: CorpusFormat | None = None, text_field: str = "text",
              max_tokens: int = DEFAULT_MAX_TOKENS, address: str | None = None,
              workers: int | None = None, progress: bool = True) -> DomainStats:
    """One domain's statistics, counted on Ray; equal to :func:`~ir3de.compute_stats`.

    ``workers`` is the number of counting tasks at a time (default: one per cluster CPU);
    without ``address`` and with Ray not yet initialised, a local instance with
    ``workers`` CPUs is started for the call and shut down after it.

    >>> ray_stats(["corpus/*.jsonl"], load_embedder(), domain="math")  # doctest: +SKIP
    """
    validate_domain_name(domain)
    max_tokens = _max_tokens(max_tokens)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers <= 0):
        raise IR3DEError(f"workers must be a positive integer, got {workers!r}")
    files = _expand(_paths(paths))
    fmt = _format(files, fmt)
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        _check_reachable(address)
        try:
            ray.init(address=address, num_cpus=workers if address is None else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise IR3DEError(f"cannot reach the Ray cluster at {address} ({exc})") from None
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        if not progress:  # quiet runs stay quiet: Ray Data logs every execution at INFO
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Suffixes were checked above: let Ray's extension filter pass them all (.ndjson, .pq)
        suffixes = sorted({Path(f.split("?")[0]).suffix.lower() for f in files} - {""}
                          | {".json", ".jsonl", ".ndjson", ".parquet", ".pq"})
        if fmt == "jsonl":
            ds = ray.data.read_json(files, file_extensions=suffixes)
        elif fmt == "parquet":
            ds = ray.data.read_parquet(files, file_extensions=suffixes)
        else:  # whole files, split into lines as the local reader does (\n only)
            ds = ray.data.read_binary_files(files, include_paths=True)
        column = "text" if fmt == "text" else text_field
        columns = ds.columns()
        if not columns:  # only empty or blank files: Ray found no record, hence no schema
            raise EmptyInputError(f"domain {domain!r}: the corpus holds no countable token "
                                  "(0 prompt(s) read)")
        if fmt != "text" and column not in columns:
            raise IR3DEError(f"{', '.join(files)}: no field {column!r} (fields: "
                             f"{', '.join(columns)})")
        if fmt == "parquet":
            ds = ds.select_columns([column])
        pool = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        counted = ds.map_batches(
            _count_block, batch_size=None if fmt == "text" else _BATCH, batch_format="pyarrow",
            compute=ray.data.TaskPoolStrategy(size=pool),
            fn_kwargs={"spec": embedder.spec, "fingerprint": embedder.fingerprint,
                       "column": column, "fmt": fmt, "max_tokens": max_tokens,
                       "vocab_size": embedder.vocab_size})
        counts = np.zeros(embedder.vocab_size, dtype=np.int64)
        doc_counts = np.zeros(embedder.vocab_size, dtype=np.int64)
        n_prompts = 0
        keys, pair_counts = [], []
        for batch in counted.iter_batches(batch_size=1, batch_format="numpy"):
            if batch["error"][0]:
                name, _, message = str(batch["error"][0]).partition(":")
                raise getattr(errors, name, IR3DEError)(message)
            counts += batch["counts"].sum(axis=0, dtype=np.int64)
            doc_counts += batch["doc_counts"].sum(axis=0, dtype=np.int64)
            n_prompts += int(batch["n_prompts"].sum())
            for cell in batch["pairs"]:
                half = len(cell) // 2
                keys.append(np.asarray(cell[:half], dtype=np.int64))
                pair_counts.append(np.asarray(cell[half:], dtype=np.int64))
    except ray.exceptions.RayError as exc:
        # A worker's IR3DEError arrives wrapped (in a UserCodeException): re-raise it.
        cause = _user_error(exc)
        if cause is not None:
            raise type(cause)(str(cause)) from None
        raise IR3DEError(f"Ray job failed: {exc}") from None
    finally:
        if started:
            ray.shutdown()
    if counts.sum() == 0:
        raise EmptyInputError(f"domain {domain!r}: the corpus holds no countable token "
                              f"({n_prompts} prompt(s) read)")
    return stats_from_counts(embedder, counts, domain=domain, n_prompts=n_prompts,
                             max_tokens=max_tokens, doc_counts=doc_counts,
                             pairs=sum_pairs(np.concatenate(keys), np.concatenate(pair_counts)))
