"""FakeAVCeleb v1.2: labels from the category folder, methods from meta_data.csv, protocol splits.

Layout (ROOT is the folder that holds the four category folders and ``meta_data.csv``)::

    <Type>/<race>/<gender>/<idNNNNN>/<file>.mp4      Type in RealVideo-RealAudio, RealVideo-FakeAudio,
                                                     FakeVideo-RealAudio, FakeVideo-FakeAudio

* The folder alone decides the labels (as the official split script does): RVRA (0, 0),
  RVFA audio fake, FVRA video fake, FVFA both; ``label`` = audio fake OR video fake.
* File names repeat across folders (``id00460/00005.mp4`` exists under RVRA and FVRA), so a row is
  keyed by its full relative path, and meta_data.csv rows are matched on (type folder, race,
  gender, identity, file name), never on the file name alone.
* Race folders are accepted in both spellings (``Asian (East)`` and ``Asian_East``); the ``race``
  column always holds the official spelling.
* meta_data.csv: both header variants are read (the shipped ``...,gender,path,`` whose 9th field
  is the file name and unnamed 10th the directory, and the corrected ``...,filename,path``). Rows
  listed twice with the same method are merged; the 22 rows listed twice with conflicting methods
  keep both (``method`` = ``"a|b"``) and an unresolved category.
* ``category`` is the paper sub-category of (folder, method): RVRA, RVFA, FVRA-FS, FVRA-GAN,
  FVRA-WL, FVFA-FS, FVFA-GAN, FVFA-WL; a fake whose method is unknown, conflicting or impossible
  for its folder keeps the bare folder code (FVRA / FVFA) and is logged.
* ``group`` is the identity folder (= the metadata ``source``). Extra columns: ``method``,
  ``race``, ``gender``, ``source``, ``target1``, ``target2``.
"""
from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from havic.data.adapters._common import AdapterResult, SkippedFile, classify_file, is_sidecar, rel_posix, walk_files
from havic.data.manifest import Manifest, ManifestRow, leave_one_out_folds, split_by_group, split_by_video

__all__ = [
    "CROSS_MANIPULATION_HELD_OUT",
    "RACES",
    "SUBCATEGORIES",
    "TYPES",
    "cross_manipulation_folds",
    "fakeavceleb",
    "read_meta_data",
]

log = logging.getLogger(__name__)

# folder -> (short code, audio_label, video_label); labels from the folder
# (docs/official-differences.md#fakeavceleb-split-and-labels).
TYPES = {
    "RealVideo-RealAudio": ("RVRA", 0, 0),
    "RealVideo-FakeAudio": ("RVFA", 1, 0),
    "FakeVideo-RealAudio": ("FVRA", 0, 1),
    "FakeVideo-FakeAudio": ("FVFA", 1, 1),
}
RACES = ("African", "Asian (East)", "Asian (South)", "Caucasian (American)", "Caucasian (European)")
# The 8 (folder, method) pairs that occur in v1.2 and their paper sub-categories (AVAD naming).
SUBCATEGORIES = {
    ("RVRA", "real"): "RVRA",
    ("RVFA", "rtvc"): "RVFA",
    ("FVRA", "faceswap"): "FVRA-FS",
    ("FVRA", "fsgan"): "FVRA-GAN",
    ("FVRA", "wav2lip"): "FVRA-WL",
    ("FVFA", "faceswap-wav2lip"): "FVFA-FS",
    ("FVFA", "fsgan-wav2lip"): "FVFA-GAN",
    ("FVFA", "wav2lip"): "FVFA-WL",
}
# Leave-one-out categories of AVAD / AVFF / HAVIC; FVRA-FS and FVRA-GAN are never held out.
CROSS_MANIPULATION_HELD_OUT = ("RVFA", "FVRA-WL", "FVFA-FS", "FVFA-GAN", "FVFA-WL")
# The real-video folders have a single possible method.
_IMPLIED_METHOD = {"RVRA": "real", "RVFA": "rtvc"}


def _race_key(name: str) -> str:
    """'Asian (East)', 'Asian_East' and 'asian-east' all give 'asianeast'."""
    return re.sub(r"[^a-z]", "", name.lower())


_RACE_BY_KEY = {_race_key(r): r for r in RACES}
MetaKey = tuple[str, str, str, str, str]  # (short type, race key, gender, identity, file name)


@dataclass
class MetaRecord:
    """meta_data.csv information for one file (merged over duplicate rows)."""

    methods: list[str] = field(default_factory=list)
    target1: str = ""
    target2: str = ""


def _meta_key(parts: Sequence[str]) -> MetaKey | None:
    """Key of a path given as parts that contain ``<Type>/<race>/<gender>/<id>/<file>``."""
    for i, part in enumerate(parts):
        if part in TYPES and len(parts) - i == 5:
            race, gender, ident, name = parts[i + 1 :]
            return TYPES[part][0], _race_key(race), gender.lower(), ident, name
    return None


def read_meta_data(path: str | Path) -> dict[MetaKey, MetaRecord]:
    """Reads FakeAVCeleb's meta_data.csv in either header variant.

    Args:
        path: the CSV.

    Returns:
        ``{(short type, race key, gender, identity, file name): MetaRecord}``; duplicate rows are
        merged, conflicting methods are all kept (in file order).

    Raises:
        ValueError: the header has no ``method`` column or neither ``filename`` nor ``path``.
    """
    path = Path(path)
    records: dict[MetaKey, MetaRecord] = {}
    n_rows = n_bad = n_dup = 0
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if "method" not in header or not {"filename", "path"} & set(header):
            raise ValueError(f"{path}: not a FakeAVCeleb meta_data.csv header (need 'method' and "
                             f"'path' or 'filename'): {header}")
        if "filename" in header:  # corrected header: filename + directory
            name_i, dir_i = header.index("filename"), header.index("path")
        else:  # shipped header: 9th field file name, unnamed 10th field directory
            name_i = header.index("path")
            dir_i = name_i + 1
        method_i = header.index("method")
        t1_i = header.index("target1") if "target1" in header else None
        t2_i = header.index("target2") if "target2" in header else None
        for fields in reader:
            if not any(x.strip() for x in fields):
                continue
            n_rows += 1
            fields = [x.strip() for x in fields]
            get = lambda i: fields[i] if i is not None and i < len(fields) else ""  # noqa: E731
            full = "/".join(x for x in (get(dir_i), get(name_i)) if x).replace("\\", "/")
            key = _meta_key([p for p in full.split("/") if p])
            method = get(method_i).lower()
            if key is None or not method:
                n_bad += 1
                continue
            record = records.get(key)
            if record is None:
                records[key] = MetaRecord([method], get(t1_i), get(t2_i))
                continue
            n_dup += 1
            if method not in record.methods:
                record.methods.append(method)
    if n_bad:
        log.warning("%s: %d of %d rows have no parsable <Type>/<race>/<gender>/<id>/<file> path or "
                    "no method; ignored", path, n_bad, n_rows)
    if n_dup:
        log.info("%s: %d duplicate rows merged by full path", path, n_dup)
    return records


def fakeavceleb(root: str | Path, meta_csv: str | Path | None = None) -> AdapterResult:
    """Lists FakeAVCeleb v1.2 videos with labels from their folder and methods from the metadata.

    Args:
        root: the folder holding the four category folders.
        meta_csv: meta_data.csv (default ``root/meta_data.csv``); without it, every fake keeps the
            bare folder code as its category.

    Returns:
        Rows with empty ``split``; .txt sidecars of real clips are counted in ``ignored``, other
        non-video files and misplaced videos are in ``skipped``.

    Raises:
        FileNotFoundError: none of the four category folders is under `root`.
    """
    root = Path(root)
    present = [t for t in TYPES if (root / t).is_dir()]
    if not present:
        raise FileNotFoundError(f"{root}: none of the FakeAVCeleb folders {tuple(TYPES)}; ROOT must be the "
                                "folder that holds them (and meta_data.csv)")
    for t in TYPES:
        if t not in present:
            log.warning("%s: folder %s is missing; its videos are not listed", root, t)
    meta_path = Path(meta_csv) if meta_csv is not None else root / "meta_data.csv"
    if meta_path.is_file():
        meta = read_meta_data(meta_path)
    else:
        if meta_csv is not None:
            raise FileNotFoundError(f"meta_data.csv not found: {meta_path}")
        log.warning("%s: no meta_data.csv; fake videos get the bare folder category (FVRA / FVFA)", root)
        meta = {}

    result = AdapterResult(Manifest())
    rows: list[ManifestRow] = []
    used: set[MetaKey] = set()
    unresolved: Counter = Counter()
    odd_races: set[str] = set()
    for t in present:
        short, audio_label, video_label = TYPES[t]
        for f in walk_files(root / t):
            rel = rel_posix(f, root)
            if is_sidecar(f, (".mp4",)):
                result.ignored[".txt sidecars next to a video"] += 1
                continue
            reason = classify_file(f, (".mp4",))
            if reason is None and len(f.relative_to(root / t).parts) != 4:
                reason = "unexpected location (expected <Type>/<race>/<gender>/<id>/<file>.mp4)"
            if reason is not None:
                result.skipped.append(SkippedFile(rel, reason))
                continue
            race, gender, ident, name = f.relative_to(root / t).parts
            if _race_key(race) not in _RACE_BY_KEY:
                odd_races.add(race)
            key = (short, _race_key(race), gender.lower(), ident, name)
            record = meta.get(key)
            if record is not None:
                used.add(key)
                method = "|".join(sorted(record.methods))
            else:
                record = MetaRecord()
                method = _IMPLIED_METHOD.get(short, "")
            category = short if short in _IMPLIED_METHOD else SUBCATEGORIES.get((short, method), short)
            if category == short and short not in _IMPLIED_METHOD:
                why = ("conflicting methods" if "|" in method else
                       "method not valid for its folder" if method else "not in meta_data.csv")
                unresolved[f"{short}: {why}"] += 1
            rows.append(ManifestRow(
                path=rel, label=int(audio_label or video_label), audio_label=audio_label,
                video_label=video_label, group=ident, category=category,
                extra={"method": method, "race": _RACE_BY_KEY.get(_race_key(race), race), "gender": gender,
                       "source": ident, "target1": record.target1, "target2": record.target2},
            ))
    for what, n in sorted(unresolved.items()):
        log.warning("%s: %d fake video(s) with an unresolved sub-category (%s)", root, n, what)
    if odd_races:
        log.warning("%s: unrecognised race folder(s) %s", root, sorted(odd_races))
    if meta and len(used) < len(meta):
        log.warning("%s: %d meta_data.csv entries name files that are not on disk", meta_path, len(meta) - len(used))
    result.manifest = Manifest(rows, ("method", "race", "gender", "source", "target1", "target2"))
    return result


def cross_manipulation_folds(
    rows: Sequence[ManifestRow],
    fractions: Sequence[float] = (0.7, 0.3),
    seed: int = 0,
    by: str = "group",
) -> tuple[list[ManifestRow], dict[str, list[ManifestRow]]]:
    """The leave-one-category-out protocol (held out: RVFA, FVRA-WL, FVFA-FS, FVFA-GAN, FVFA-WL).

    A single seeded base split is shared by all folds, so every fold tests on the same reals:
    fold ``c`` trains on the base train (and val) rows of all categories but ``c`` (FVRA-FS and
    FVRA-GAN stay in training) and tests on the base test reals plus the base test rows of ``c``.
    Fakes whose sub-category is unresolved are left out of every fold, since they may belong to
    the held-out category.

    Args:
        rows: FakeAVCeleb rows from :func:`fakeavceleb`.
        fractions: base split, ``(train, test)`` or ``(train, val, test)``.
        seed: base split seed.
        by: "group" for an identity-disjoint base split (stratified by race and gender) or "video"
            for a per-video one (stratified by category).

    Returns:
        ``(base rows with split set, {held-out category: fold rows})``.
    """
    if by == "group":
        base = split_by_group(rows, fractions, seed, stratify_by=("race", "gender"))
    elif by == "video":
        base = split_by_video(rows, fractions, seed, stratify_by=("category",))
    else:
        raise ValueError(f"by must be 'group' or 'video', got {by!r}")
    known = set(SUBCATEGORIES.values())
    unresolved = sorted({r.category for r in base if r.category not in known})
    if unresolved:
        n = sum(r.category in unresolved for r in base)
        log.warning("cross-manipulation: %d video(s) of unresolved categories %s are left out of every fold",
                    n, unresolved)
    return base, leave_one_out_folds(base, CROSS_MANIPULATION_HELD_OUT, exclude=unresolved)
