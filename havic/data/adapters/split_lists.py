"""User-supplied split lists (``SPLIT=CSV`` items), as SSR-DFD distributes them for AV-Deepfake1M and AVLips.

A list names the videos of one split; an adapter keeps only the listed videos, takes their split from
the list, and reports list entries that match no video. Entries are matched on the last path parts
without extension (:func:`split_key`), so absolute paths, other prefixes and feature-file names match.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from havic.data.adapters._common import AdapterResult, SkippedFile
from havic.data.manifest import SPLITS

__all__ = ["SplitLists", "parse_split_csv_items", "read_split_csvs", "split_key"]


def parse_split_csv_items(items: Sequence[str] | Mapping[str, str | Path]) -> dict[str, Path]:
    """``["train=a.csv", "test=b.csv"]`` (or a mapping) -> ``{split: path}``; splits must be train/val/test."""
    pairs = items.items() if isinstance(items, Mapping) else [str(i).partition("=")[::2] for i in items]
    out: dict[str, Path] = {}
    for split, path in pairs:
        if split not in SPLITS or not str(path):
            raise ValueError(f"split CSV item {split}={path}: expected SPLIT=CSV with SPLIT one of {SPLITS}")
        out[split] = Path(path)
    return out


def split_key(path: str, depth: int) -> str:
    """The last `depth` parts of a path, without the file extension: how list entries meet manifest paths."""
    parts = PurePosixPath(path.replace("\\", "/")).with_suffix("").parts
    return "/".join(parts[-depth:])


def read_split_csvs(items: Sequence[str] | Mapping[str, str | Path], depth: int) -> dict[str, tuple[str, str]]:
    """``{key: (split, csv name)}`` from split lists (a ``path`` column, or the first column).

    Entries may be absolute paths, paths with another prefix or feature files (any extension):
    they are matched on their last `depth` parts (see :func:`split_key`).

    Raises:
        FileNotFoundError: a list is missing. ValueError: a video listed in two splits.
    """
    out: dict[str, tuple[str, str]] = {}
    for split, path in parse_split_csv_items(items).items():
        if not path.is_file():
            raise FileNotFoundError(f"split CSV not found: {path}")
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        header = [h.strip() for h in rows[0]]
        column = header.index("path") if "path" in header else 0
        body = rows[1:] if "path" in header or not Path(header[0]).suffix else rows
        for fields in body:
            if len(fields) <= column or not fields[column].strip():
                continue
            key = split_key(fields[column].strip(), depth)
            if key in out and out[key][0] != split:
                raise ValueError(f"{path}: {fields[column]!r} is also listed in {out[key][1]}")
            out[key] = (split, path.name)
    return out


class SplitLists:
    """The split lists of one adapter run: the split of each listed video, and the entries never matched.

    Args:
        items: ``SPLIT=CSV`` items or a ``{split: csv}`` mapping.
        depth: path parts (from the end) that identify a video (:func:`split_key`).
    """

    def __init__(self, items: Sequence[str] | Mapping[str, str | Path], depth: int) -> None:
        self.depth = depth
        self.entries = read_split_csvs(items, depth)
        self.matched: set[str] = set()

    def split_of(self, rel: str, result: AdapterResult) -> str | None:
        """The listed split of the video at `rel`, or None (counted in ``result.ignored``) if not listed."""
        key = split_key(rel, self.depth)
        hit = self.entries.get(key)
        if hit is None:
            result.ignored["videos not in the split CSVs"] += 1
            return None
        self.matched.add(key)
        return hit[0]

    def report_unmatched(self, result: AdapterResult, why: str) -> None:
        """Every list entry no video matched, as a skipped item ``listed in <csv> but <why>``."""
        for key, (_, name) in sorted(self.entries.items()):
            if key not in self.matched:
                result.skipped.append(SkippedFile(key, f"listed in {name} but {why}"))
