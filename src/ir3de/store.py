"""Persistence: atomic writes, safetensors with JSON metadata, memory-mapped tensors.

Arrays are stored with safetensors and metadata as JSON inside the safetensors
header (or beside it), never with pickle, so a file from an untrusted party can
be opened safely. Every write goes to a temporary file in the target folder and
is renamed into place, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import stat
import struct
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as _st_save

from .errors import (
    IR3DEError,
    OutputExistsError,
    StatsFormatError,
    require_creatable,
    require_file,
    require_readable,
    shown_path,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "check_finite",
    "claim_folder",
    "locked_for_update",
    "read_safetensors",
    "refuse_special_file",
    "safetensors_names",
    "safetensors_tensor",
    "write_safetensors",
]

# safetensors dtype names -> numpy dtypes we can memory-map directly. BF16 has no
# numpy dtype: it is mapped as uint16 and widened by the reader (Embedder.rows).
_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
}

# The dtypes read_safetensors reads: what ir3de writes (F64 floats, I64 counts) and what
# numpy holds exactly that casts to them. safetensors' numpy loader fails with a TypeError
# or AttributeError on BF16 and the F8 kinds (numpy has no such dtype), and BOOL or C64
# would be cast silently (a complex A losing its imaginary part), so they are refused first.
_READ_DTYPES = ("F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8")

# How deeply JSON in a file may nest lists and objects. ir3de's own metadata and a
# safetensors header nest 3 levels; a file nested near the parser's limit (about 1,000, past
# which json.loads raises RecursionError) would be read, and then fail with a RecursionError
# wherever it is written out again (a router saving an expert's signature or recipe).
_MAX_DEPTH = 64
# A router holds each expert's statistics metadata (its embedder recipe, its signature) two
# levels deeper than a statistics file does (meta → experts → [i]): statistics nest two
# levels less, so that every router made of them can be read again.
STATS_DEPTH = _MAX_DEPTH - 2

# The longest file name (bytes) where the file system does not say (os.pathconf), and
# what mkstemp adds to a temporary file's prefix: 8 random characters, then the suffix.
_NAME_MAX = 255
_TEMP_SUFFIX = ".tmp"
_TEMP_ADDED = 8 + len(_TEMP_SUFFIX)


@functools.cache
def _umask() -> int:
    # The umask can only be read by setting it; read once (it is a process setting, and
    # setting it briefly in a threaded gateway would be a race).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *,
                       mode: int | None = None, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    With ``overwrite=False`` an existing ``path`` is never replaced, also one that another
    process creates while this one writes (a check before a long job cannot see that):
    :class:`OutputExistsError` then, and nothing is written.

    The file gets permissions ``mode``; by default those of the file it replaces, else
    what ``open()`` would give a new file (0o666 minus the umask): the temporary file is
    created 0o600, which would make every router, statistics file and report private to
    its writer. A symbolic link is followed: its target gets the new content and the link
    stays (a deployment path linked to a versioned file keeps pointing where it did). A
    named pipe, device or socket at ``path``, also behind a link, is refused whatever
    ``overwrite`` says (:func:`refuse_special_file`).
    Raises :class:`IR3DEError` naming ``path`` and the reason when it cannot be written;
    the temporary file is removed then.
    """
    path = Path(path)
    tmp = None
    try:
        # In the try too: is_symlink and is_dir raise OSError for a name too long for the
        # file system or a folder that cannot be searched, which is reported like any other.
        refuse_special_file(path)
        if path.is_symlink():
            # os.replace onto the link would replace the link itself with a regular file; the
            # temporary file goes beside the target, as the rename must not cross file systems.
            try:
                path = path.resolve(strict=False)
            except (OSError, RuntimeError) as exc:  # a loop of links (3.13: OSError)
                raise IR3DEError(f"cannot write {path}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        if path.is_dir():  # os.replace would report the temporary file's name
            raise IR3DEError(f"{path} is a directory")
        require_creatable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX,
                                   dir=path.parent)
        # Closed before the cleanup below removes the file, on any error: Windows cannot
        # remove a file that is open.
        with os.fdopen(fd, "wb") as fh:
            replaced = path.stat() if path.is_file() else None
            if mode is None:
                mode = stat.S_IMODE(replaced.st_mode) if replaced else 0o666 & ~_umask()
            # before any byte is written: a private key is never exposed
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            else:  # Windows before Python 3.13 (where only the read-only flag exists)
                os.chmod(tmp, mode)
            if replaced is not None and hasattr(os, "fchown"):  # (not on Windows)
                # The owner too: root replacing a service user's 0600 router (sudo ir3de
                # experts add) left it root's, unreadable by the gateway. Only root may
                # give a file away; anyone else keeps what the file system gives (EPERM
                # ignored).
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, replaced.st_uid, replaced.st_gid)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_new(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # its own message would name the temporary file
            raise IR3DEError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def locked_for_update(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``path`` for a read-modify-write (``ir3de experts add`` in place): a second
    update of the same file waits until the first is written, then reads what it wrote.
    Two such commands run at once each reported success, and one expert was lost.

    The lock is the file's own (``flock`` on its inode: no lock file beside it). A write
    replaces the file with a new inode, so the lock is taken again until the path still
    names the locked file. A missing or unreadable ``path`` is not locked: reading it
    reports that. Where there is no ``flock`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    print(f"{shown_path(path)}: waiting for another ir3de that is updating it",
                          file=sys.stderr)
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except OSError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                yield
                return
        finally:
            os.close(fd)  # (releases the lock)


def claim_folder(folder: str | os.PathLike[str], what: str) -> int:
    """Make ``folder`` (created if missing) this process's alone while the returned
    descriptor is open, proving that it can be written: the gateway's ``state_dir``. Two
    gateways sharing one each saved over the other's admin changes, and a read-only one
    was found at the first change. ``what`` names the folder in the errors
    (:class:`IR3DEError`): one in use by another process, or that cannot be written.
    Where there is no ``flock`` (Windows) the folder is only checked, not claimed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise IR3DEError(f"{what} {folder} exists and is not a folder")
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): held open, but not claimed
        fcntl = None  # type: ignore[assignment]
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # (see ir3de.serve._persist)
        # Windows cannot open a folder as a file: a file in it stands for it there.
        fd = os.open(folder, os.O_RDONLY) if fcntl is not None else \
            os.open(folder / ".ir3de-claim", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise IR3DEError(f"{what} {folder}: cannot create or open it "
                         f"({exc.strerror or exc})") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IR3DEError(f"{what} {folder} is in use by another process (another "
                                 "gateway?): two would save over each other's changes; "
                                 f"give each its own {what}") from None
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise IR3DEError(f"{what} {folder} cannot be written ({exc.strerror or exc})") \
                from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _temp_prefix(path: Path) -> str:
    """The prefix of the temporary file that becomes ``path``: ``.NAME.``, with NAME cut so
    that the temporary name fits the file system's longest name (NAME_MAX, in bytes): a
    legal target name of 242 to 255 bytes failed as "File name too long" only when it was
    written, after all the work. Cut at a character's start (UTF-8), so the temporary
    file still shows which file it was to become."""
    try:
        name_max = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        # no such setting here, or not for this folder; no pathconf at all (Windows)
        name_max = -1
    if name_max <= 0:  # (-1: no limit given)
        name_max = _NAME_MAX
    raw = os.fsencode(path.name)
    room = max(name_max - len(b"..") - _TEMP_ADDED, 0)
    if len(raw) > room:
        cut = room
        while cut > 0 and raw[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            cut -= 1
        raw = raw[:cut]
    return f".{os.fsdecode(raw)}."


def refuse_special_file(path: Path) -> None:
    """Raise :class:`IR3DEError` if ``path`` (followed through symbolic links) exists as
    something other than a regular file or a directory: a named pipe, a device, a socket.
    The rename that writes a file would put a regular file in its place (``-o /dev/null
    --force`` run as root replaced /dev/null), so no overwrite permission covers it."""
    try:
        mode = path.stat().st_mode
    except (OSError, RuntimeError):  # missing or unreachable: writing reports what it must
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else
            "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a special file")
    shown = f"{path} (a link to {os.path.realpath(path)})" if path.is_symlink() else str(path)
    raise IR3DEError(f"{shown} is {kind}, not a regular file; it is never replaced, even "
                     "with --force (overwrite=True), and nothing was written")


def _rename_new(tmp: str, path: Path) -> None:
    """Rename ``tmp`` to ``path`` unless ``path`` exists (OutputExistsError): a hard link is
    atomic and fails on an existing name, where a rename would replace it. File systems
    without hard links get a check and a rename (a narrow race)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:
        if os.path.lexists(path):
            raise _exists(path) from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


def _exists(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{path} exists now; it was left as it is and nothing was "
                             "written (--force, or overwrite=True, replaces it)")


def atomic_write_text(path: str | os.PathLike[str], text: str, *,
                      mode: int | None = None) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (``mode``: as :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def check_finite(name: str, array: np.ndarray, source: str) -> None:
    """Raise :class:`StatsFormatError` if ``array`` holds NaN or Inf."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise StatsFormatError(f"{source}: tensor {name!r} holds {bad} NaN/Inf value(s)")


def write_safetensors(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any],
    *, overwrite: bool = True, depth: int = _MAX_DEPTH,
) -> None:
    """Save ``tensors`` with ``meta`` (JSON) in the header, atomically (``overwrite``: see
    :func:`atomic_write_bytes`). ``meta`` nested more than ``depth`` levels deep is
    refused: :func:`read_safetensors` would refuse the file (a router of an expert whose
    recipe nested deeply replaced a good router with one no command could load)."""
    if _nests_deeper(meta, depth):
        raise StatsFormatError(f"{path}: not written: its metadata would nest more than "
                               f"{depth} levels deep, which ir3de does not read (an embedder "
                               "recipe or signature nested that deeply)")
    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    data = _st_save(contiguous, metadata={"ir3de": json.dumps(meta, sort_keys=True)})
    atomic_write_bytes(path, data, overwrite=overwrite)


def read_safetensors(path: str | os.PathLike[str], *, depth: int = _MAX_DEPTH,
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load every tensor of an ir3de safetensors file and its JSON metadata (nested at most
    ``depth`` levels deep).

    Raises :class:`StatsFormatError` for a missing, unreadable, truncated, corrupt or
    foreign file, and for a tensor of a dtype ir3de does not read (:data:`_READ_DTYPES`).
    """
    path = Path(path)
    require_file(path, StatsFormatError)
    try:
        with safe_open(str(path), framework="np") as fh:
            header = fh.metadata() or {}
            # Each dtype from the header, before any tensor is read (see _READ_DTYPES).
            dtypes = {name: fh.get_slice(name).get_dtype() for name in fh.keys()}  # noqa: SIM118
            refused = [name for name, dtype in dtypes.items() if dtype not in _READ_DTYPES]
            tensors = {} if refused else {name: fh.get_tensor(name) for name in dtypes}
    except (SafetensorError, OSError, ValueError) as exc:
        # (safetensors says "No such file or directory" of a file it may not read)
        require_readable(path, StatsFormatError)
        raise StatsFormatError(f"{path}: not a readable safetensors file ({exc})") from None
    if refused:
        raise StatsFormatError(
            f"{path}: tensor {refused[0]!r} has dtype {dtypes[refused[0]]}, which ir3de does "
            "not read: its files hold floating-point tensors as F64, F32 or F16 and counts "
            "as integers (I64, I32, I16, I8, U64, U32, U16 or U8)")
    if "ir3de" not in header:
        raise StatsFormatError(f"{path}: safetensors file without ir3de metadata")
    meta = _parse_json(header["ir3de"], path, "ir3de metadata", depth)
    if not isinstance(meta, dict):
        raise StatsFormatError(f"{path}: ir3de metadata is not a JSON object")
    return tensors, meta


def _parse_json(raw: str | bytes, path: Path, what: str, depth: int = _MAX_DEPTH) -> Any:
    """``raw`` parsed as JSON, else :class:`StatsFormatError` "PATH: corrupt WHAT (why)".
    Beyond malformed JSON, json.loads raises RecursionError for nesting past about 1,000
    levels and a bare ValueError for an integer of more than 4,300 digits (by default:
    Python's guard against quadratic int parsing); both are a damaged or hostile file here."""
    try:
        value = json.loads(raw)
    except RecursionError:
        reason = "JSON nested too deeply"
    except json.JSONDecodeError as exc:
        reason = str(exc)
    except UnicodeDecodeError:  # (a ValueError too) bytes that are not UTF-8 text
        reason = "not UTF-8 text"
    except ValueError:
        reason = ("an integer too long to read, of more than "
                  f"{sys.get_int_max_str_digits()} digits")
    else:
        if not _nests_deeper(value, depth):
            return value
        reason = f"JSON nested more than {depth} levels deep"
    raise StatsFormatError(f"{path}: corrupt {what} ({reason})")


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests lists and objects more than ``limit`` deep.
    Walked with a stack of iterators, not recursion (which would fail where the parser did
    not) and not a stack of items (one per element of a long list)."""
    stack = [iter([value])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, (dict, list)):
                if len(stack) > limit:
                    return True
                stack.append(iter(item.values() if isinstance(item, dict) else item))
                break
        else:
            stack.pop()
    return False


def _header(path: Path) -> tuple[dict[str, Any], int]:
    # A named pipe or a device in a model folder would be read without end.
    require_file(path, StatsFormatError)
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise StatsFormatError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            if head + fh.read(len(_LFS_POINTER) - 8) == _LFS_POINTER:
                raise StatsFormatError(f"{path}: a Git LFS pointer, not the file itself (a "
                                       "clone without LFS): fetch it with git lfs pull")
            raise StatsFormatError(f"{path}: not a safetensors file (implausible header "
                                   f"size {n})")
        raw = fh.read(n)
    header = _parse_json(raw, path, "safetensors header")
    if not isinstance(header, dict):
        raise StatsFormatError(f"{path}: corrupt safetensors header (a JSON "
                               f"{type(header).__name__}, not an object of tensor entries)")
    # The entries are read by name later (which tensor is the embedding, its dtype, shape
    # and byte range): a malformed one is refused here, named, not met as an AttributeError.
    for name, info in header.items():
        if name != "__metadata__":
            _check_entry(path, name, info)
    return header, 8 + n


# How a file that Git LFS did not fetch begins (its pointer text, a few lines)
_LFS_POINTER = b"version https://git-lfs"


def _check_entry(path: Path, name: str, info: object) -> None:
    """Refuse a header entry that is not ``{"dtype": str, "shape": [int ≥ 0, …],
    "data_offsets": [begin, end]}`` with ``0 ≤ begin ≤ end`` (the safetensors format)."""
    def natural(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def shown(value: object) -> str:  # a damaged entry can be long: show its start
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "…"

    if not isinstance(info, dict):
        problem = f"is {shown(info)}, not an object"
    elif not isinstance(info.get("dtype"), str):
        problem = f"has dtype {shown(info.get('dtype'))}, not a string"
    elif not isinstance(info.get("shape"), list) or not all(map(natural, info["shape"])):
        problem = f"has shape {shown(info.get('shape'))}, not a list of sizes"
    elif not (isinstance(offsets := info.get("data_offsets"), list) and len(offsets) == 2
              and all(map(natural, offsets)) and offsets[0] <= offsets[1]):
        problem = (f"has data_offsets {shown(info.get('data_offsets'))}, not "
                   "[begin, end] with 0 ≤ begin ≤ end")
    else:
        return
    raise StatsFormatError(f"{path}: malformed safetensors header: tensor {name!r} {problem}")


def safetensors_names(path: str | os.PathLike[str]) -> list[str]:
    """Names of the tensors in a safetensors file, read from its header only."""
    header, _ = _header(Path(path))
    return [k for k in header if k != "__metadata__"]


def safetensors_tensor(path: str | os.PathLike[str], name: str) -> np.ndarray:
    """Memory-map one tensor of a safetensors file without reading the others.

    safetensors' own numpy loader copies whole tensors and cannot represent
    bfloat16; model shards are often several GB of bf16, of which we need only
    the embedding table, so we map the bytes ourselves from the documented
    header (8-byte length, JSON, raw little-endian data). BF16 comes back as
    ``uint16`` raw bits, which :meth:`ir3de.embedding.Embedder.rows` widens (to float64,
    as it returns every table's rows).
    """
    path = Path(path)
    header, start = _header(path)
    if name not in header or name == "__metadata__":
        raise StatsFormatError(f"{path}: no tensor named {name!r}")
    info = header[name]
    dtype = _ST_DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise StatsFormatError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')}")
    begin, end = info["data_offsets"]
    shape = tuple(int(s) for s in info["shape"])
    # math.prod, not np.prod: int64 would wrap for a crafted shape ([2**32, 2**32] gives 0,
    # which matches an empty byte range) and memmap would then fail with its own error.
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if end - begin != expected or start + end > path.stat().st_size:
        raise StatsFormatError(f"{path}: tensor {name!r} is truncated or malformed")
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r",
                     offset=start + begin, shape=shape)
