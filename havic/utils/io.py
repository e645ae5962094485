"""Atomic file writing: readers never see a half-written file, and a failure keeps the old one.

Everything havic writes (configs, manifests, cache entries, markers, weights, videos) goes through
:func:`atomic_path`: write to a temporary name in the destination's folder, then ``os.replace``.

A process killed while writing leaves its temporary file behind. The names are recognisable
(``.<stem>.<8 hex>.tmp<suffix>``, :data:`TEMP_NAME`) and the writer holds an exclusive ``flock`` on
the file for as long as it exists, so :func:`remove_stale_temps` (run by the commands on their
output folders when they start) removes exactly the ones that no live process is writing.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: temporary files are written unlocked, and never judged stale
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TEMP_NAME", "atomic_path", "atomic_write_bytes", "atomic_write_csv", "atomic_write_json", "atomic_write_text",
    "remove_stale_temps",
]

log = logging.getLogger(__name__)

# The temporary names of atomic_path: ".<stem>.<8 hex digits>.tmp<suffix>".
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^./]+)?$")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    For writers that take a file name (safetensors, PyAV, numpy). The temporary file exists (empty)
    when the block starts and is locked (``flock``) until it is renamed or removed, so that
    :func:`remove_stale_temps` leaves it alone; it is removed if the block raises. It is created
    with ordinary umask permissions and keeps ``path``'s suffix (some writers pick the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)  # releases the lock, after the name is gone


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """JSON (indent 1, sorted keys unless overridden), atomically."""
    kwargs = {"indent": 1, "sort_keys": True, **dumps_kwargs}
    return atomic_write_text(path, json.dumps(obj, **kwargs))


def atomic_write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV with ``header`` and ``rows`` (``\\n`` line ends), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def _is_abandoned(path: Path) -> bool:
    """Whether no process holds the lock of a temporary file (taking and dropping it to find out)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone meanwhile
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def remove_stale_temps(folder: str | os.PathLike, *, recursive: bool = False, min_age_s: float = 2.0) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` that a killed process left in `folder`.

    A file is removed when its name matches :data:`TEMP_NAME`, it was last modified at least
    `min_age_s` ago (a writer locks its file just after creating it) and no process holds its
    lock: a writer still at work, in this process or another, keeps its file.

    Args:
        folder: where to look (nothing happens if it does not exist).
        recursive: also look in its subfolders.
        min_age_s: the youngest file considered.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    newest = time.time() - min_age_s
    removed = []
    for p in candidates:
        if not TEMP_NAME.match(p.name):
            continue
        try:
            if not p.is_file() or p.stat().st_mtime > newest:
                continue
        except OSError:
            continue
        if _is_abandoned(p):
            p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes in %s: %s", len(removed), folder,
                 ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed
