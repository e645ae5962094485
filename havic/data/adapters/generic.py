"""Any other dataset: ``real/`` and ``fake/`` folders, or a CSV of paths and labels.

Folder mode (ROOT holds ``real/`` and/or ``fake/``, videos at any depth): reals are (0, 0, 0);
fakes are label 1 with unknown modalities (-1). ``category`` = "real", or for a fake the first
folder below ``fake/`` when the video is nested (e.g. ``fake/wav2lip/x.mp4`` -> "wav2lip"), else
"fake". ``group`` = the path itself (no identities are known: a split by group is a split by
video).

CSV mode (``labels_csv``): columns ``path`` (or ``video_path``, relative to ROOT or absolute) and
``label`` (or ``overall_label``); optional ``audio_label``, ``video_label`` (or ``visual_label``),
``group``, ``category``, ``split``; any other column is kept as an extra column. Missing
modality labels are 0 for reals and -1 for fakes; a missing group is the path; a missing category
is "real" / "fake". The HAVIC evaluation CSV (``video_path,overall_label[,audio_label,
visual_label]``) is read as is. Listed files missing on disk are reported as skipped.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from havic.data.adapters._common import (AdapterResult, SkippedFile, classify_file, parse_label, rel_posix,
                                         walk_files)
from havic.data.manifest import COLUMNS, Manifest, ManifestRow

__all__ = ["generic"]

log = logging.getLogger(__name__)

_ALIASES = {"path": ("path", "video_path"), "label": ("label", "overall_label"), "audio_label": ("audio_label",),
            "video_label": ("video_label", "visual_label"), "group": ("group",), "category": ("category",),
            "split": ("split",)}


def _from_folders(root: Path) -> AdapterResult:
    present = [(d, d == "fake") for d in ("real", "fake") if (root / d).is_dir()]
    if not present:
        raise FileNotFoundError(f"{root}: neither real/ nor fake/ found (or pass a labels CSV)")
    result, rows = AdapterResult(Manifest()), []
    for folder, is_fake in present:
        for f in walk_files(root / folder):
            rel = rel_posix(f, root)
            reason = classify_file(f)
            if reason is not None:
                result.skipped.append(SkippedFile(rel, reason))
                continue
            parts = f.relative_to(root / folder).parts
            category = (parts[0] if len(parts) > 1 else "fake") if is_fake else "real"
            modal = -1 if is_fake else 0
            rows.append(ManifestRow(path=rel, label=int(is_fake), audio_label=modal, video_label=modal,
                                    group=rel, category=category))
    result.manifest = Manifest(rows)
    return result


def _from_csv(root: Path, labels_csv: Path) -> AdapterResult:
    result, rows = AdapterResult(Manifest()), []
    with labels_csv.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        cols = {k: next((c for c in names if c in header), None) for k, names in _ALIASES.items()}
        if cols["path"] is None or cols["label"] is None:
            raise ValueError(f"{labels_csv}: need a path (or video_path) and a label (or overall_label) column, "
                             f"header is {header}")
        used = {c for c in cols.values() if c is not None}
        extra_columns = [c for c in header if c not in used and c not in COLUMNS]
        for record in reader:
            where = f"{labels_csv}: line {reader.line_num}"
            if None in record or None in record.values():
                raise ValueError(f"{where}: the number of fields differs from the header's {len(header)}")
            p = Path(record[cols["path"]].strip().replace("\\", "/"))
            if p.is_absolute() and p.is_relative_to(root):
                p = p.relative_to(root)
            rel = p.as_posix()
            if not Manifest.resolve(rel, root).is_file():
                result.skipped.append(SkippedFile(rel, f"listed in {labels_csv.name} but missing on disk"))
                continue
            label = parse_label(record[cols["label"]], (0, 1), f"{where}, column {cols['label']!r}")
            modal = [parse_label(record[cols[k]], (-1, 0, 1), f"{where}, column {cols[k]!r}")
                     if cols[k] is not None and record[cols[k]].strip() else (0 if label == 0 else -1)
                     for k in ("audio_label", "video_label")]
            text = {k: record[cols[k]].strip() if cols[k] is not None else "" for k in ("group", "category", "split")}
            rows.append(ManifestRow(path=rel, label=label, audio_label=modal[0], video_label=modal[1],
                                    group=text["group"] or rel,
                                    category=text["category"] or ("fake" if label else "real"),
                                    split=text["split"], extra={c: record[c] or "" for c in extra_columns}))
    result.manifest = Manifest(rows, tuple(extra_columns))
    return result


def generic(root: str | Path, labels_csv: str | Path | None = None) -> AdapterResult:
    """Lists a dataset laid out as ``real/`` + ``fake/`` folders, or given by a labels CSV.

    Args:
        root: dataset root (paths in the manifest are relative to it).
        labels_csv: optional CSV of paths and labels; when given, folders are not walked.

    Raises:
        FileNotFoundError: no real/ or fake/ folder (folder mode) or no CSV.
        ValueError: a CSV without path/label columns or with a bad label (names the line).
    """
    root = Path(root)
    if labels_csv is None:
        return _from_folders(root)
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise FileNotFoundError(f"labels CSV not found: {labels_csv}")
    return _from_csv(root, labels_csv)
