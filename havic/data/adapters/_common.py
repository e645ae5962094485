"""Pieces shared by the dataset adapters: the result type, skipped-file records, a sorted file walk."""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from havic.data.manifest import Manifest
from havic.utils.io import atomic_write_csv

__all__ = ["AdapterResult", "SkippedFile", "VIDEO_EXTENSIONS", "walk_files", "write_skipped"]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class SkippedFile:
    """A file (or a listed entry) that did not become a manifest row, and why.

    Attributes:
        path: relative to the dataset root, POSIX separators.
        reason: one line for people, e.g. "not a video (.json)" or "listed in test.txt but missing".
    """

    path: str
    reason: str


@dataclass
class AdapterResult:
    """What an adapter found under a dataset root.

    Attributes:
        manifest: one row per usable video; ``split`` holds the dataset's official split where it
            has one, else it is empty.
        skipped: files under the dataset folders that are not rows, and listed entries that are
            missing on disk.
        ignored: counts of files left out on purpose and not worth listing one by one (e.g.
            transcript sidecars next to each video, videos outside a user subset list).
    """

    manifest: Manifest
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)

    def log_summary(self, dataset: str) -> None:
        """Logs a warning per skip reason and an info line per ignored kind."""
        for reason, n in sorted(Counter(s.reason for s in self.skipped).items()):
            log.warning("%s: skipped %d file(s): %s", dataset, n, reason)
        for kind, n in sorted(self.ignored.items()):
            log.info("%s: ignored %d %s", dataset, n, kind)


def rel_posix(path: Path, root: Path) -> str:
    """`path` relative to `root`, with '/' separators."""
    return path.relative_to(root).as_posix()


def walk_files(base: Path) -> Iterator[Path]:
    """Every file under `base`, in sorted order, following directory links once each.

    Hidden directories (name starting with '.') are not entered; hidden files are yielded so the
    caller can record them as skipped.
    """
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            yield Path(dirpath) / name


def classify_file(path: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> str | None:
    """None for a usable video, else the reason to skip it (hidden, not a video, empty)."""
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in extensions:
        return f"not a video ({path.suffix or 'no extension'})"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError as err:
        return f"cannot stat ({err.strerror})"
    return None


def is_sidecar(path: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> bool:
    """True for a .txt next to a video with the same stem (LRS transcripts, FakeAVCeleb real info)."""
    return path.suffix.lower() == ".txt" and any(path.with_suffix(e).is_file() for e in extensions)


def parse_label(value: str, allowed: tuple[int, ...], where: str) -> int:
    """`value` as an int in `allowed`; else a ValueError that starts with `where` (file, line, column)."""
    try:
        out = int(value.strip())
    except ValueError:
        out = None
    if out not in allowed:
        raise ValueError(f"{where}: expected one of {allowed}, got {value!r}")
    return out


def write_skipped(skipped: Sequence[SkippedFile], path: str | os.PathLike) -> Path:
    """Writes ``path,reason`` rows atomically (header only when nothing was skipped)."""
    return atomic_write_csv(path, ("path", "reason"), ((s.path, s.reason) for s in skipped))
