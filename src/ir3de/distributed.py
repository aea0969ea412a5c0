"""Statistics of corpora too large for one machine, counted on a Ray cluster.

``ir3de stats --engine ray [--address ...]`` (extra ``ir3de[ray]``) counts JSONL, Parquet or
text files given as local paths, local globs, or URLs of any filesystem pyarrow understands
(``s3://``, ``gs://``, ``file://``, fsspec ones; a glob in a URL's last path component is
expanded too, with ``*`` and ``[…]``: in a URL ``?`` begins the query). Ray Data hands
each file to one task, which reads it whole, its bytes as stored (a ``.gz`` file is not
decompressed, as the local engine does not either), parses it with the local engine's own
readers (:mod:`ir3de.data`), tokenizes its prompts and counts token ids; the driver sums
the counts (and the token-pair tables) and forms ``b_d``. A corpus should
therefore be many files, each well within a worker's memory, which is how such corpora are
stored. Token counts are integers and their sum does not depend on how the corpus was
split, so the result is the same statistics file, bit for bit, as the local engine on the
same files.

Files are taken and read as the local engine takes and reads them: a path that exists is
taken as it is (``corpus[1].jsonl``) and only a missing one is expanded as a glob; a folder
is refused; each file's format is ``fmt`` or else its suffix's; the JSONL text field, the
Parquet text column, or one prompt per non-blank line of a text file; blank prompts are
skipped and each prompt is capped at ``max_tokens``. A bad file fails with the local
engine's one-line error (``file:line: …``); when several files are bad, the first one a
worker reports is named.

Without ``--address`` a local Ray instance is started (and stopped) for the run; with one,
the job joins that cluster, after a probe that the address answers Ray's protocol (ray.init
itself would retry for minutes against a port of another server).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import posixpath
import re
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import numpy as np

from . import errors
from .data import (
    FORMATS,
    CorpusFormat,
    corpus_texts,
    infer_format,
    refuse_repeated_paths,
    require_format,
)
from .embedding import DEFAULT_MAX_TOKENS, Embedder, load_embedder
from .errors import (
    FingerprintMismatchError,
    IR3DEError,
    refuse_lone_text,
    require_file,
    told_apart,
)
from .statistics import (
    DomainStats,
    TokenCounts,
    _max_tokens,
    _tfidf_buckets,
    empty_corpus,
    stats_from_counts,
    sum_pairs,
    token_counts,
    validate_domain_name,
)
from .tfidf import TfidfCounts, sum_counts, tfidf_counts

__all__ = ["ray_stats"]

_WILDCARDS = "*?["
# In a URL ``?`` begins the query (pyarrow's S3 options live there): not a wildcard.
_URL_WILDCARDS = "*["
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "KeyError: 'x'", "pyarrow.lib.ArrowInvalid: …" at the start of a traceback's line
_EXCEPTION_LINE = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Invalid): ")
# How long the address probe waits to connect and for each answer.
_PROBE_SECONDS = 5.0

# What Ray prints of its own in a quiet run, muted while ray_stats runs (levels restored).
_QUIET_LEVELS = {
    "ray.data": logging.WARNING,  # an INFO line per dataset execution
    # "Progress bars disabled": what a quiet run asked for
    "ray.data._internal.progress": logging.ERROR,
    # ray.init's token-authentication banner, about a cluster this call starts and stops
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
}


# The handlers ray.init must not take over (see _signal_handlers_kept); SIGHUP is POSIX only
_KEPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP")
                      if hasattr(signal, name))


def _ray() -> Any:
    try:
        import h2  # noqa: F401  (the address probe's; ships with the extra too)
        import ray
        import ray.data  # Ray Data ships with ray[data]
    except ImportError:
        raise IR3DEError("the Ray engine needs its extra: pip install 'ir3de[ray]'") from None
    return ray


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """The process's SIGTERM, SIGINT and SIGHUP handlers as they were before: ray.init
    replaces SIGTERM's with one that exits with status 15 (after its C++ logger prints a
    stack), which bypassed ``ir3de``'s cleanup (exit 143) and outlived the run. Handlers
    can only be set from the main thread; elsewhere Ray's stay."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in _KEPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:  # (None: set outside Python, cannot be put back)
                signal.signal(sig, handler)


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


def _is_url(path: str) -> bool:
    return "://" in path


def _expand(paths: Sequence[str]) -> list[str]:
    """The files ``paths`` name, globs expanded (sorted), each checked to be a regular file.
    A file named twice (also through overlapping globs) would be counted twice: refused."""
    files: list[str] = []
    for path in paths:
        files += _expand_url(path) if _is_url(path) else _expand_local(path)
    refuse_repeated_paths(files)
    return files


def local_matches(path: str) -> list[str]:
    """What the local ``path`` names for this engine: ``[path]`` if it exists
    (``corpus[1].jsonl`` is a file name, as for the local engine) or holds no wildcard,
    else its glob matches, sorted (maybe none)."""
    if os.path.exists(path) or not any(c in path for c in _WILDCARDS):
        return [path]
    return sorted(glob.glob(path))


def _expand_local(path: str) -> list[str]:
    """:func:`local_matches`, each checked to be a regular file."""
    matched = local_matches(path)
    if not matched:
        raise IR3DEError(f"{path}: no file matches")
    for file in matched:
        require_file(Path(file))  # the local engine's "is a directory", "no such file"
    return matched


def _url_filesystem(url: str) -> tuple[Any, str]:
    """pyarrow's filesystem of ``url`` and the path in it."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(url)
    except (ValueError, ImportError, OSError) as exc:
        raise IR3DEError(f"{url}: cannot open this URL ({_one_line(exc)})") from None


def _require_url_file(url: str, kind: Any) -> None:
    """:func:`~ir3de.errors.require_file` for a URL, given its pyarrow ``FileType``: Ray
    would read a folder recursively, whatever its files' formats."""
    from pyarrow import fs

    if kind != fs.FileType.File:
        reason = {fs.FileType.Directory: "is a directory",
                  fs.FileType.NotFound: "no such file"}.get(kind, "not a regular file")
        raise IR3DEError(f"{url}: {reason}")


def _expand_url(url: str) -> list[str]:
    """The URL of each file ``url`` names: itself, or the files of its folder whose names
    match its last path component, sorted (a name matching it literally is taken as it is,
    as for a local path)."""
    from pyarrow import fs

    parts = urlsplit(url)
    if not any(c in parts.path for c in _URL_WILDCARDS):
        filesystem, inner = _url_filesystem(url)
        try:
            kind = filesystem.get_file_info(inner).type
        except OSError as exc:
            raise IR3DEError(f"{url}: {_one_line(exc)}") from None
        _require_url_file(url, kind)
        return [url]
    folder, _, pattern = parts.path.rpartition("/")
    if any(c in folder for c in _URL_WILDCARDS):
        raise IR3DEError(f"{url}: a glob may only be in the last path component of a URL")
    filesystem, inner = _url_filesystem(urlunsplit(parts._replace(path=folder or "/",
                                                                  fragment="")))
    try:
        listed = filesystem.get_file_info(fs.FileSelector(inner, allow_not_found=True))
    except OSError as exc:
        raise IR3DEError(f"{url}: cannot list its folder ({_one_line(exc)})") from None
    # The listing's names are decoded, the URL's path is not: matched against the pattern
    # decoded, and put back percent-encoded ("law%41.jsonl" was read as lawA.jsonl, "a
    # b.parquet" failed on a worker). As glob.glob: a wildcard does not match a leading dot.
    literal, glob = unquote(pattern), _decoded_glob(pattern)
    matched = [info for info in listed if info.base_name == literal] or \
        [info for info in listed if fnmatchcase(info.base_name, glob)
         and (literal.startswith(".") or not info.base_name.startswith("."))]
    if not matched:
        raise IR3DEError(f"{url}: no file matches")
    out = []
    for info in sorted(matched, key=lambda info: info.base_name):
        name = quote(info.base_name, safe="")
        file = urlunsplit(parts._replace(path=posixpath.join(folder or "/", name),
                                         fragment=""))
        _require_url_file(file, info.type)
        out.append(file)
    return out


def _decoded_glob(pattern: str) -> str:
    """The fnmatch pattern of a URL's percent-encoded last path component: its wildcards
    as written, every other character decoded and matched as itself (``%2A`` is a ``*``
    in the file's name, not a wildcard)."""
    return "".join(piece if piece in ("*", "[", "]", "?") else
                   re.sub(r"([*?\[])", r"[\1]", unquote(piece))
                   for piece in re.split(r"([*\[\]?])", pattern))


def _file_format(name: str, fmt: CorpusFormat | None) -> CorpusFormat:
    """The format ``name`` is read in, as the local engine decides it: ``fmt`` if given,
    else the suffix's (of a URL's path: its query is no suffix)."""
    if fmt is not None:
        return fmt
    if not _is_url(name):
        return infer_format(Path(name))
    try:
        return infer_format(Path(urlsplit(name).path))
    except IR3DEError:
        raise IR3DEError(f"{name}: cannot tell the format from its suffix; pass --format "
                         f"({', '.join(FORMATS)})") from None


def _check_reachable(address: str | None, origin: str = "") -> None:
    """Fail fast when ``address`` is ``[ray://]host:port`` and nothing there speaks Ray's
    protocol: ``ray.init`` would retry for ever against a closed port, and as long against
    a server of another kind (a mistyped port, the dashboard's HTTP). ``origin`` says where
    the address came from, for the messages (``" (from $RAY_ADDRESS)"``)."""
    scheme, _, hostport = address.rpartition("://") if address else ("", "", "")
    if scheme not in ("", "ray") or hostport in ("", "auto", "local"):
        return  # (ray.init refuses other schemes itself, at once)
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        sock = socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                        timeout=_PROBE_SECONDS)
    except OSError as exc:
        raise IR3DEError(f"cannot reach the Ray cluster at {hostport}{origin} "
                         f"({exc.strerror or exc})") from None
    # Ray's GCS and its Ray Client server both speak gRPC, which is HTTP/2; with TLS on
    # (Ray's own switch) the first bytes would be a TLS handshake, which this probe does
    # not speak, so it is left to ray.init.
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        if not _answers_http2(sock):
            raise IR3DEError(
                f"cannot join the Ray cluster at {hostport}{origin}: what listens there does "
                "not speak Ray's protocol (gRPC); give the head node's GCS address (port "
                "6379 by default) or ray://host:10001 for Ray Client")


def _answers_http2(sock: socket.socket) -> bool:
    """Whether the server behind ``sock`` opens an HTTP/2 connection: RFC 9113 makes a
    SETTINGS frame the first thing a server sends after the client's preface."""
    import h2.connection
    import h2.events
    import h2.exceptions

    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    try:
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):  # (until a whole frame; b"": the server closed)
            events = conn.receive_data(data)
            if events:
                return isinstance(events[0], h2.events.RemoteSettingsChanged)
    except (OSError, h2.exceptions.ProtocolError):  # (a timeout is an OSError)
        return False
    return False


def _one_line(exc: BaseException) -> str:
    """The gist of ``exc`` on one line, without ANSI colour codes: a Ray error's text is the
    whole coloured traceback of a task, chained causes first, so its first exception line
    that is not Ray's own names the root cause; another error is its type and first line."""
    text = _ANSI.sub("", str(exc))
    lines = [line for line in text.splitlines() if line.strip()]
    gist = next((line for line in lines
                 if _EXCEPTION_LINE.match(line) and not line.startswith("ray.")), None)
    if gist is None:
        gist = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return gist if len(gist) <= 300 else gist[:299] + "…"


@contextmanager
def _quiet_ray(quiet: bool) -> Iterator[None]:
    """Ray's own log lines of :data:`_QUIET_LEVELS` muted while the block runs, when
    ``quiet``; the loggers' levels are restored after it."""
    muted = {logging.getLogger(name): level for name, level in _QUIET_LEVELS.items()} \
        if quiet else {}
    saved = {logger: logger.level for logger in muted}
    for logger, level in muted.items():
        logger.setLevel(max(level, logger.getEffectiveLevel()))  # never louder
    try:
        yield
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)


def _count_block(batch: Any, *, spec: dict[str, Any], fingerprint: str,
                 fmt: CorpusFormat | None, text_field: str, max_tokens: int,
                 vocab_size: int, tfidf_buckets: int | None,
                 skip_pairs: bool) -> dict[str, np.ndarray]:
    """Ray Data map_batches task: the token counts of one block of files.

    A task, not an actor pool: the embedder is cached per worker process by
    ``load_embedder``, so an actor would keep nothing that a task does not.
    """
    try:
        counted = _count_files(batch, spec=spec, fingerprint=fingerprint, fmt=fmt,
                               text_field=text_field, max_tokens=max_tokens,
                               tfidf_buckets=tfidf_buckets, skip_pairs=skip_pairs)
    except IR3DEError as exc:
        # Returned, not raised: Ray does not carry a task's exception (its cause) back to
        # the driver, only a traceback text. The driver re-raises it with its own message.
        empty = np.empty(1, dtype=object)
        empty[0] = np.zeros(0, dtype=np.int64)
        return {"counts": np.zeros((1, vocab_size), dtype=np.int64),
                "doc_counts": np.zeros((1, vocab_size), dtype=np.int64),
                "n_prompts": np.array([0]), "pairs": empty, "tfidf": empty,
                "error": np.array([f"{type(exc).__name__}:{exc}"])}
    # The block's pair table is ragged: one object cell holding keys then counts, which Ray
    # Data carries as a variable-shaped tensor column.
    pairs = np.empty(1, dtype=object)
    pairs[0] = np.concatenate(counted.pairs)
    # So are the TF-IDF statistics: bucket frequencies, then keys, then values.
    tfidf = np.empty(1, dtype=object)
    tfidf[0] = np.zeros(0, dtype=np.int64) if counted.tfidf is None \
        else np.concatenate(counted.tfidf)
    return {"counts": counted.counts[None, :], "doc_counts": counted.doc_counts[None, :],
            "n_prompts": np.array([counted.n_prompts]), "pairs": pairs, "tfidf": tfidf,
            "error": np.array([""])}


def _count_files(batch: Any, *, spec: dict[str, Any], fingerprint: str,
                 fmt: CorpusFormat | None, text_field: str, max_tokens: int,
                 tfidf_buckets: int | None, skip_pairs: bool) -> TokenCounts:
    """The token counts of a block of ``(name, path)`` rows, each a whole file."""
    embedder = load_embedder(spec)
    if embedder.fingerprint != fingerprint:
        # A worker with other package versions would count with another table.
        worker, driver = told_apart(embedder.fingerprint, fingerprint)
        raise FingerprintMismatchError(
            f"a Ray worker loaded embedder {embedder.name} with fingerprint "
            f"{worker}, the driver has {driver}: "
            "install the same ir3de and embedding packages on every node")

    def texts() -> Iterator[str]:
        for name, path in zip(batch.column("name").to_pylist(),
                              batch.column("path").to_pylist(), strict=True):
            yield from corpus_texts(_read_file(path, name), name, _file_format(name, fmt),
                                    text_field)

    return token_counts(embedder, texts(), max_tokens=max_tokens, tfidf_buckets=tfidf_buckets,
                        skip_pairs=skip_pairs)


def _read_file(path: str, name: str) -> bytes:
    """The bytes of the file at ``path`` (absolute, or a URL) as stored, as the local
    engine reads them: Ray Data's ``read_binary_files`` would decompress a ``.gz`` or
    ``.bz2`` file by its suffix, and its ``arrow_open_stream_args={"compression": None}``
    means "detect" there (Ray 2.60). Errors name the file as ``name``."""
    from pyarrow import fs

    try:
        if not _is_url(path):
            return Path(path).read_bytes()
        filesystem, inner = fs.FileSystem.from_uri(path)
        with filesystem.open_input_stream(inner, compression=None) as stream:
            return stream.readall()
    except OSError as exc:  # gone or unreadable since the driver checked it
        raise IR3DEError(f"{name}: {exc.strerror or _one_line(exc)}") from None


def _run(ray: Any, files: list[str], embedder: Embedder, *,
         fmt: CorpusFormat | None, text_field: str, max_tokens: int,
         workers: int | None, tfidf_buckets: int | None, skip_pairs: bool
         ) -> tuple[np.ndarray, np.ndarray, int, list[np.ndarray], list[np.ndarray],
                    TfidfCounts | None]:
    """The Ray Data job: counts, document counts, prompt count, pair-table parts and the
    TF-IDF statistics (None unless ``tfidf_buckets``)."""
    # One block per file: each is read and parsed whole by one task. Named as the caller
    # named it (a URL, or the local path as read_corpus says it); a worker may run in
    # another folder, so it reads a local file by its absolute path.
    ds = ray.data.from_items(
        [{"name": file if _is_url(file) else str(Path(file)),
          "path": file if _is_url(file) else os.path.abspath(file)} for file in files],
        override_num_blocks=len(files))
    pool = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    counted = ds.map_batches(
        _count_block, batch_size=None, batch_format="pyarrow",
        # no more tasks than files: Ray warns of a pool it cannot fill
        compute=ray.data.TaskPoolStrategy(size=min(pool, len(files))),
        fn_kwargs={"spec": embedder.spec, "fingerprint": embedder.fingerprint, "fmt": fmt,
                   "text_field": text_field, "max_tokens": max_tokens,
                   "vocab_size": embedder.vocab_size, "tfidf_buckets": tfidf_buckets,
                   "skip_pairs": skip_pairs})
    counts = np.zeros(embedder.vocab_size, dtype=np.int64)
    doc_counts = np.zeros(embedder.vocab_size, dtype=np.int64)
    n_prompts = 0
    keys, pair_counts = [], []
    tfidf = None if tfidf_buckets is None else tfidf_counts([], tfidf_buckets)
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
        if tfidf is not None:
            for cell in batch["tfidf"]:
                cell = np.asarray(cell, dtype=np.int64)
                B, half = tfidf.buckets, (len(cell) - tfidf.buckets) // 2
                tfidf = sum_counts([tfidf, TfidfCounts(cell[:B], cell[B:B + half],
                                                       cell[B + half:])])
    return counts, doc_counts, n_prompts, keys, pair_counts, tfidf


def ray_stats(paths: Sequence[str | os.PathLike[str]], embedder: Embedder, *, domain: str,
              fmt: CorpusFormat | None = None, text_field: str = "text",
              max_tokens: int = DEFAULT_MAX_TOKENS, address: str | None = None,
              workers: int | None = None, progress: bool = True,
              tfidf_buckets: int | None = None, skip_pairs: bool = False) -> DomainStats:
    """One domain's statistics, counted on Ray; equal to :func:`~ir3de.compute_stats`.

    ``workers`` is the number of counting tasks at a time (default: one per cluster CPU);
    without ``address`` and with Ray not yet initialised, a local instance with
    ``workers`` CPUs is started for the call and shut down after it. ``progress=False``
    also mutes Ray's own log lines for the call. ``tfidf_buckets``: also count the
    TF-IDF statistics (:mod:`ir3de.tfidf`), summed exactly over the tasks; ``skip_pairs``:
    also the skip pairs (as :func:`~ir3de.compute_stats`).

    >>> ray_stats(["corpus/*.jsonl"], load_embedder(), domain="math")  # doctest: +SKIP
    """
    validate_domain_name(domain)
    max_tokens = _max_tokens(max_tokens)
    tfidf_buckets = _tfidf_buckets(tfidf_buckets)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers <= 0):
        raise IR3DEError(f"workers must be a positive integer, got {workers!r}")
    if fmt is not None:
        require_format(fmt)
    files = _expand(_paths(paths))
    for file in files:  # a suffix that means no format fails now, not on a worker
        _file_format(file, fmt)
    ray = _ray()
    with _quiet_ray(not progress):
        started = not ray.is_initialized()
        if started:
            # Without an address ray.init joins $RAY_ADDRESS: probed as well (a stale one
            # hung the run), and no worker count is passed to a cluster that exists.
            target = address or os.environ.get("RAY_ADDRESS") or None
            origin = " (from $RAY_ADDRESS)" if target is not None and address is None else ""
            _check_reachable(target, origin)
            try:
                with _signal_handlers_kept():
                    # "local" without an address: ray.init(address=None) also joins the
                    # cluster /tmp/ray/ray_current_cluster names, which `ray start` writes
                    # and only `ray stop` removes (a stale one hung the run for minutes)
                    ray.init(address="local" if target is None else address,
                             num_cpus=workers if target in (None, "local") else None,
                             include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
            except ConnectionError as exc:
                at = f" at {target}{origin}" if target else ""
                raise IR3DEError(f"cannot reach the Ray cluster{at} ({exc})") from None
            except (ValueError, RuntimeError) as exc:
                # What ray.init raises for an address it cannot use (the one given, or
                # else $RAY_ADDRESS): a malformed or HTTP address, or ray:// without the
                # ray[client] package (ValueError); a scheme naming no Ray client module
                # (RuntimeError). Its text may span lines.
                what = f"join the Ray cluster at {target}{origin}" if target else "start Ray"
                raise IR3DEError(f"cannot {what} ({' '.join(str(exc).split())})") from None
            except BaseException:
                # interrupted while starting (Ctrl-C): what ray.init had started goes too
                # (two of its agents outlived the command by a minute)
                with contextlib.suppress(Exception):
                    ray.shutdown()
                raise
        context = ray.data.DataContext.get_current()
        bars = context.enable_progress_bars
        context.enable_progress_bars = progress
        try:
            counts, doc_counts, n_prompts, keys, pair_counts, tfidf = _run(
                ray, files, embedder, fmt=fmt, text_field=text_field,
                max_tokens=max_tokens, workers=workers, tfidf_buckets=tfidf_buckets,
                skip_pairs=skip_pairs)
        except ray.exceptions.RayError as exc:
            # Not one of ours (those come back as rows): Ray's own
            raise IR3DEError(f"Ray job failed: {_one_line(exc)}") from None
        finally:
            context.enable_progress_bars = bars
            if started:
                ray.shutdown()
    if counts.sum() == 0:
        raise empty_corpus(domain)
    return stats_from_counts(embedder, counts, domain=domain, n_prompts=n_prompts,
                             max_tokens=max_tokens, doc_counts=doc_counts,
                             pairs=sum_pairs(np.concatenate(keys), np.concatenate(pair_counts)),
                             tfidf=tfidf)
