"""Manifest CSV schema, validation, atomic writing and seeded, order-independent splits.

A manifest is a plain CSV file (UTF-8, one header line, no comment lines) that lists one video per
row. Its columns, in this order, are the seven schema columns followed by any dataset-specific extra
columns (kept as strings, e.g. ``method``, ``generator``, ``race``, ``gender``, ``source``):

======================  =========================================================================
``path``                file path relative to the dataset root, POSIX separators; unique key
``label``               overall label, 1 = fake, 0 = real (= audio fake OR video fake)
``audio_label``         1 fake / 0 real / -1 unknown
``video_label``         1 fake / 0 real / -1 unknown
``group``               identity or speaker; identity-disjoint splits never share a group
``category``            e.g. ``RVRA``, ``FVFA-WL``, a generator name, ``real``
``split``               ``train``, ``val``, ``test`` or empty (no subset assigned)
======================  =========================================================================

The dataset root is not stored in the file: it is passed alongside (the data configuration or the
``root`` argument of :func:`read_manifest` / :meth:`Manifest.resolve`), so one manifest works on
every machine that holds a copy of the dataset. An absolute ``path`` is allowed and used as is.

One extra column has a meaning: ``fake_segments`` (optional; AV-Deepfake1M writes it) holds the
manipulated spans of the video as a JSON list of ``[start, end]`` seconds (``[]`` for a real
video); it is checked when present and read with :func:`fake_segments`.

Only ``path`` and ``label`` are required when reading; a missing ``audio_label`` / ``video_label``
reads as -1 and a missing ``group`` / ``category`` / ``split`` as empty. Written files always carry
all seven columns.

Splits are decided by a keyed hash of (seed, key), never by the order of the input rows, so the
same seed gives the same split on every machine and Python version. With three fractions the test
subset is cut first and the validation subset is then carved out of the remainder, so the test
subset does not depend on the validation fraction.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path


from havic.utils.io import atomic_write_csv
__all__ = [
    "COLUMNS",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "Problem",
    "SPLITS",
    "fake_segments",
    "leave_one_out_folds",
    "read_manifest",
    "split_by_group",
    "split_by_video",
    "summarize",
    "validate",
    "write_manifest",
]

COLUMNS = ("path", "label", "audio_label", "video_label", "group", "category", "split")
REQUIRED_COLUMNS = ("path", "label")
SPLITS = ("train", "val", "test")
_SPLIT_VALUES = SPLITS + ("",)
_MAX_LISTED_PROBLEMS = 10


@dataclass(frozen=True)
class ManifestRow:
    """One video of a manifest.

    Attributes:
        path: relative to the dataset root (POSIX separators), or absolute.
        label: 1 = fake, 0 = real.
        audio_label: 1 / 0 / -1 (unknown).
        video_label: 1 / 0 / -1 (unknown).
        group: identity or speaker key used by identity-disjoint splits.
        category: dataset category (``RVRA``, ``FVFA-WL``, a generator, ``real``, ...).
        split: ``train`` / ``val`` / ``test`` or empty.
        extra: dataset-specific columns, all strings.
    """

    path: str
    label: int
    audio_label: int = -1
    video_label: int = -1
    group: str = ""
    category: str = ""
    split: str = ""
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)

    def get(self, column: str) -> str:
        """The value of a schema or extra column as written in the CSV (missing extras read as "")."""
        if column in COLUMNS:
            return str(getattr(self, column))
        return self.extra.get(column, "")


@dataclass(frozen=True)
class Problem:
    """One validation problem: the 1-based data row, its file line, the column and what is wrong."""

    row: int | None
    line: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row} (line {self.line})")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ManifestError(ValueError):
    """A manifest that breaks the schema; the message names the file, the rows and the columns.

    Attributes:
        file: the manifest file, or "<manifest>" for one built in memory.
        problems: every problem found (the message lists the first ten).
    """

    def __init__(self, file: str | os.PathLike | None, problems: Sequence[Problem]) -> None:
        self.file = str(file) if file is not None else "<manifest>"
        self.problems = list(problems)
        super().__init__(self.file, self.problems)

    def __str__(self) -> str:
        shown = [f"  {p}" for p in self.problems[:_MAX_LISTED_PROBLEMS]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"  ... and {more} more")
        noun = "problem" if len(self.problems) == 1 else "problems"
        return f"{self.file}: {len(self.problems)} {noun}:\n" + "\n".join(shown)

    def __reduce__(self):
        return (type(self), (self.file, self.problems))


class Manifest(Sequence[ManifestRow]):
    """An ordered list of :class:`ManifestRow` with the names of its extra columns.

    Args:
        rows: the videos.
        extra_columns: order of the extra columns when written; by default the extra keys in
            first-seen order.
        source: the file the rows were read from (used in error messages), if any.
    """

    def __init__(
        self,
        rows: Iterable[ManifestRow] = (),
        extra_columns: Sequence[str] | None = None,
        source: str | os.PathLike | None = None,
    ) -> None:
        self.rows = list(rows)
        if extra_columns is None:
            seen: dict[str, None] = {}
            for row in self.rows:
                seen.update(dict.fromkeys(row.extra))
            extra_columns = tuple(seen)
        clash = [c for c in extra_columns if c in COLUMNS]
        if clash:
            raise ValueError(f"extra columns {clash} clash with the schema columns {COLUMNS}")
        self.extra_columns = tuple(extra_columns)
        self.source = str(source) if source is not None else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return Manifest(self.rows[index], self.extra_columns, self.source)
        return self.rows[index]

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return f"Manifest({len(self.rows)} rows, extra_columns={self.extra_columns}, source={self.source!r})"

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names in file order."""
        return COLUMNS + self.extra_columns

    def with_rows(self, rows: Iterable[ManifestRow]) -> Manifest:
        """A manifest with other rows and the same extra columns (plus any new ones)."""
        rows = list(rows)
        extra = dict.fromkeys(self.extra_columns)
        for row in rows:
            extra.update(dict.fromkeys(row.extra))
        return Manifest(rows, tuple(extra), self.source)

    def subset(self, split: str) -> Manifest:
        """The rows whose ``split`` equals `split`."""
        return self.with_rows(r for r in self.rows if r.split == split)

    @staticmethod
    def resolve(path: str, root: str | os.PathLike | None) -> Path:
        """The file of a row: `path` joined to `root` (an absolute `path` is returned unchanged)."""
        p = Path(path)
        if p.is_absolute() or root is None:
            return p
        return Path(root) / p


# ----------------------------------------------------------------------------------------------
# Validation, reading, writing
# ----------------------------------------------------------------------------------------------


def _row_problems(row: ManifestRow, index: int, line: int) -> list[Problem]:
    """Schema problems of one row (duplicates and missing files are checked by the caller)."""
    out = []

    def bad(column: str, message: str) -> None:
        out.append(Problem(index + 1, line, column, message))

    if not isinstance(row.path, str) or not row.path.strip():
        bad("path", "empty path")
    elif "\\" in row.path:
        bad("path", f"backslash in {row.path!r}; use '/' separators")
    if row.label not in (0, 1) or isinstance(row.label, bool):
        bad("label", f"expected 0 (real) or 1 (fake), got {row.label!r}")
    for column in ("audio_label", "video_label"):
        value = getattr(row, column)
        if value not in (-1, 0, 1) or isinstance(value, bool):
            bad(column, f"expected -1 (unknown), 0 (real) or 1 (fake), got {value!r}")
    if row.label in (0, 1) and row.audio_label in (-1, 0, 1) and row.video_label in (-1, 0, 1):
        if row.label == 0 and 1 in (row.audio_label, row.video_label):
            bad("label", f"label 0 but audio_label={row.audio_label}, video_label={row.video_label} "
                "(label must be audio fake OR video fake)")
        if row.label == 1 and row.audio_label == 0 and row.video_label == 0:
            bad("label", "label 1 but audio_label and video_label are both 0")
    if row.split not in _SPLIT_VALUES:
        bad("split", f"expected one of {SPLITS} or empty, got {row.split!r}")
    for key, value in row.extra.items():
        if not isinstance(value, str):
            bad(key, f"extra columns hold strings, got {type(value).__name__}")
    if isinstance(row.extra.get("fake_segments"), str) and row.extra["fake_segments"].strip():
        try:
            fake_segments(row)
        except ValueError as err:
            bad("fake_segments", str(err))
    return out


def fake_segments(row: ManifestRow) -> list[tuple[float, float]]:
    """The row's ``fake_segments`` as ``[(start_s, end_s), ...]`` ([] when the column is absent or empty).

    Raises:
        ValueError: not a JSON list of [start, end] pairs with 0 <= start <= end.
    """
    text = row.extra.get("fake_segments", "").strip()
    if not text:
        return []
    try:
        spans = json.loads(text)
        out = [(float(a), float(b)) for a, b in spans]
    except (ValueError, TypeError):
        raise ValueError(f"expected a JSON list of [start, end] seconds, got {text[:60]!r}") from None
    if any(not 0 <= a <= b for a, b in out):
        raise ValueError(f"segments need 0 <= start <= end, got {text[:60]!r}")
    return out


def validate(
    manifest: Manifest | Sequence[ManifestRow],
    root: str | os.PathLike | None = None,
    *,
    file: str | os.PathLike | None = None,
    lines: Sequence[int] | None = None,
) -> None:
    """Checks every row against the schema; raises one :class:`ManifestError` listing all problems.

    Args:
        manifest: the rows.
        root: when given, every file must exist under it (absolute paths are checked as is).
        file: the name used in the error (default: the manifest's source, else "<manifest>").
        lines: file line of each row (default: the line it has when written, row index + 2).

    Raises:
        ManifestError: bad label values, unknown split names, empty or duplicate paths, missing
            files.
    """
    rows = list(manifest)
    if file is None:
        file = getattr(manifest, "source", None)
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        line = lines[i] if lines is not None else i + 2
        problems.extend(_row_problems(row, i, line))
        if row.path in first_seen:
            problems.append(Problem(i + 1, line, "path",
                                    f"duplicate path {row.path!r} (first at row {first_seen[row.path]})"))
        else:
            first_seen[row.path] = i + 1
        if root is not None and isinstance(row.path, str) and row.path.strip():
            resolved = Manifest.resolve(row.path, root)
            if not resolved.is_file():
                problems.append(Problem(i + 1, line, "path", f"file not found: {resolved}"))
    if problems:
        raise ManifestError(file, problems)


def _parse_int(text: str, allowed: tuple[int, ...]) -> int | str:
    """`text` as an int in `allowed`, or the stripped text itself when it is not (reported later)."""
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        return text
    return value if value in allowed else text


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Manifest:
    """Reads and validates a manifest CSV.

    Args:
        path: the CSV file.
        root: dataset root; when given, every listed file must exist.

    Returns:
        The manifest, ``source`` set to `path`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ManifestError: a missing required column, a repeated column, a row with the wrong number of
            fields, a bad label, an unknown split, a duplicate path or (with `root`) a missing
            file; the message names the file, the row, its line and the column.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ManifestError(path, [Problem(None, None, None, "empty file (no header line)")])
        header = [h.strip() for h in header]
        repeated = sorted(c for c, n in Counter(header).items() if n > 1)
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        problems = [Problem(None, 1, c, "column missing from the header") for c in missing]
        problems += [Problem(None, 1, c, "column appears more than once in the header") for c in repeated]
        if "" in header:
            problems.append(Problem(None, 1, None, f"unnamed column at position {header.index('') + 1}"))
        if problems:
            raise ManifestError(path, problems)
        extra_columns = tuple(c for c in header if c not in COLUMNS)
        rows: list[ManifestRow] = []
        lines: list[int] = []
        for fields in reader:
            if not fields:
                continue  # blank line
            lines.append(reader.line_num)
            if len(fields) != len(header):
                problems.append(Problem(len(lines), reader.line_num, None,
                                        f"{len(fields)} fields, the header has {len(header)}"))
                continue
            if problems:
                continue  # the rows are misaligned: report the field counts alone
            record = dict(zip(header, fields))
            rows.append(ManifestRow(
                path=record["path"].strip(),
                label=_parse_int(record["label"], (0, 1)),  # type: ignore[arg-type]
                audio_label=_parse_int(record.get("audio_label", "-1"), (-1, 0, 1)),  # type: ignore[arg-type]
                video_label=_parse_int(record.get("video_label", "-1"), (-1, 0, 1)),  # type: ignore[arg-type]
                group=record.get("group", ""),
                category=record.get("category", ""),
                split=record.get("split", "").strip(),
                extra={c: record[c] for c in extra_columns},
            ))
    if problems:
        raise ManifestError(path, problems)
    manifest = Manifest(rows, extra_columns, source=path)
    validate(manifest, root, file=path, lines=lines)
    return manifest


def write_manifest(manifest: Manifest | Sequence[ManifestRow], path: str | os.PathLike) -> Path:
    """Validates `manifest` and writes it atomically (temporary file + rename).

    Args:
        manifest: a :class:`Manifest` or a list of rows.
        path: the CSV file to write; parent folders are created.

    Returns:
        The path written.

    Raises:
        ManifestError: the rows break the schema (nothing is written).
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest(manifest)
    validate(manifest, file=path)
    extra = manifest.extra_columns
    missing = sorted({k for row in manifest for k in row.extra} - set(extra))
    if missing:
        raise ValueError(f"rows carry extra columns {missing} that are not in extra_columns {extra}")
    return atomic_write_csv(path, manifest.columns,
                            ([r.path, r.label, r.audio_label, r.video_label, r.group, r.category, r.split]
                             + [r.extra.get(c, "") for c in extra] for r in manifest))


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """(train, test) or (train, val, test); non-negative, summing to 1, train and test positive."""
    fr = tuple(float(x) for x in fractions)
    if len(fr) not in (2, 3):
        raise ValueError(f"fractions must be (train, test) or (train, val, test), got {fractions!r}")
    if any(not math.isfinite(x) or x < 0 for x in fr) or fr[0] <= 0 or fr[-1] <= 0:
        raise ValueError(f"fractions must be finite, >= 0, with train and test > 0, got {fractions!r}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr)})")
    return fr


def _hash_key(seed: int, salt: str, key: str) -> int:
    """A 64-bit keyed hash; stable across platforms and Python versions (unlike hash())."""
    digest = hashlib.blake2b(f"{seed}\x1f{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _order(keys: Sequence[str], strata: Mapping[str, str], seed: int, salt: str) -> list[str]:
    """Keys in a seeded order where every prefix holds each stratum in proportion to its size.

    Within a stratum the keys are ranked by hash; a key's sort position is its fractional rank
    (rank + 0.5) / stratum size. Cutting the result at any count therefore takes about the same
    fraction of every stratum, while the total count stays exact.
    """
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        by_stratum[strata.get(k, "")].append(k)
    positions = []
    for members in by_stratum.values():
        members.sort(key=lambda k: (_hash_key(seed, salt, k), k))
        n = len(members)
        positions += [((r + 0.5) / n, _hash_key(seed, salt + "/tie", k), k) for r, k in enumerate(members)]
    positions.sort()
    return [k for _, _, k in positions]


def _assign(keys: Sequence[str], strata: Mapping[str, str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Split name per key: cut test off first, then carve val out of the rest (three fractions)."""
    fr = _check_fractions(fractions)
    keys = sorted(set(keys))
    order = _order(keys, strata, seed, "test")
    n_keep = math.floor(len(order) * (1.0 - fr[-1]) + 1e-9)
    out = dict.fromkeys(order[n_keep:], "test")
    rest = order[:n_keep]
    if len(fr) == 2:
        out.update(dict.fromkeys(rest, "train"))
        return out
    order = _order(rest, strata, seed, "val")
    n_train = math.floor(len(order) * fr[0] / (fr[0] + fr[1]) + 1e-9)
    out.update(dict.fromkeys(order[:n_train], "train"))
    out.update(dict.fromkeys(order[n_train:], "val"))
    return out


def _stratum(rows: Iterable[ManifestRow], columns: Sequence[str]) -> str:
    """Stratum label of a set of rows: the sorted distinct values of each column, joined."""
    rows = list(rows)
    return "\x1e".join("|".join(sorted({r.get(c) for r in rows})) for c in columns)


def split_by_video(
    rows: Sequence[ManifestRow],
    fractions: Sequence[float] = (0.7, 0.3),
    seed: int = 0,
    stratify_by: Sequence[str] = (),
) -> list[ManifestRow]:
    """Seeded sample-level split: every video goes to one subset, independently of its group.

    With ``(0.7, 0.3)`` this is the paper protocol for FakeAVCeleb (the official code shuffles
    without a seed and takes ``int(0.7 * N)`` for training; the train count here is the same).

    Args:
        rows: the videos (paths must be unique).
        fractions: ``(train, test)`` or ``(train, val, test)``, summing to 1. Train gets
            ``floor((1 - test) * N)`` videos; with three fractions val is then carved out of that.
        seed: any int; the same seed gives the same split whatever the input order.
        stratify_by: columns (schema or extra, e.g. ``("category",)``) whose values every subset
            should hold in proportion.

    Returns:
        The rows in input order with ``split`` set.
    """
    rows = list(rows)
    paths = [r.path for r in rows]
    if len(set(paths)) != len(paths):
        dup = next(p for p, n in Counter(paths).items() if n > 1)
        raise ValueError(f"split_by_video needs unique paths; {dup!r} appears more than once")
    strata = {r.path: _stratum([r], stratify_by) for r in rows} if stratify_by else {}
    split_of = _assign(paths, strata, fractions, seed)
    return [replace(r, split=split_of[r.path]) for r in rows]


def split_by_group(
    rows: Sequence[ManifestRow],
    fractions: Sequence[float] = (0.63, 0.07, 0.3),
    seed: int = 0,
    stratify_by: Sequence[str] = (),
) -> list[ManifestRow]:
    """Seeded identity-disjoint split: all videos of a group go to the same subset.

    The fractions count groups, not videos. Stratification is per group: a group's stratum is the
    set of values its rows take in each `stratify_by` column (e.g. ``("race", "gender")`` for
    FakeAVCeleb identities, or ``("label",)`` to balance groups that have fakes).

    Args:
        rows: the videos; every row needs a non-empty ``group``.
        fractions: ``(train, test)`` or ``(train, val, test)`` over groups. The default takes 30 %
            of the groups for test and 10 % of the rest for validation.
        seed: any int; the same seed gives the same split whatever the input order.
        stratify_by: columns to balance across subsets.

    Returns:
        The rows in input order with ``split`` set.

    Raises:
        ValueError: a row without a group.
    """
    rows = list(rows)
    members: dict[str, list[ManifestRow]] = defaultdict(list)
    for r in rows:
        if not r.group:
            raise ValueError(f"split_by_group needs a group for every row; {r.path!r} has none")
        members[r.group].append(r)
    strata = {g: _stratum(m, stratify_by) for g, m in members.items()} if stratify_by else {}
    split_of = _assign(list(members), strata, fractions, seed)
    return [replace(r, split=split_of[r.group]) for r in rows]


def leave_one_out_folds(
    rows: Sequence[ManifestRow],
    held_out: Sequence[str],
    is_real: Callable[[ManifestRow], bool] = lambda r: r.label == 0,
    exclude: Sequence[str] = (),
) -> dict[str, list[ManifestRow]]:
    """Leave-one-category-out folds from rows that already carry a base split.

    Fold ``c`` trains on the base train (and val) rows of every category except ``c`` and tests
    on the base test reals plus the base test rows of ``c``. The test reals are therefore the
    same in every fold, and ``c`` never appears in that fold's train or val subsets.

    Args:
        rows: videos with ``split`` in train/val/test (rows with an empty split are ignored).
        held_out: the categories to hold out, one fold each.
        is_real: which rows are the shared reals.
        exclude: categories left out of every fold (e.g. fakes whose sub-category is unknown and
            could belong to a held-out category).

    Returns:
        ``{category: rows of that fold}``; rows that take no part in a fold are left out of it.

    Raises:
        ValueError: a held-out category with no rows in the base test split.
    """
    folds: dict[str, list[ManifestRow]] = {}
    for c in held_out:
        fold = []
        for r in rows:
            if not r.split or r.category in exclude:
                continue
            if r.split == "test":
                if is_real(r) or r.category == c:
                    fold.append(r)
            elif r.category != c:
                fold.append(r)
        if not any(r.category == c and r.split == "test" for r in fold):
            raise ValueError(f"held-out category {c!r} has no rows in the test split")
        folds[c] = fold
    return folds


def summarize(manifest: Iterable[ManifestRow], by: Sequence[str] = ("split", "category", "label")) -> str:
    """A plain-text table of row counts per combination of the `by` columns, with a total."""
    counts = Counter(tuple(r.get(c) or "-" for c in by) for r in manifest)
    table = [list(by) + ["rows"]] + [list(k) + [str(n)] for k, n in sorted(counts.items())]
    table.append(["total"] + [""] * (len(by) - 1) + [str(sum(counts.values()))])
    widths = [max(len(row[i]) for row in table) for i in range(len(by) + 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
