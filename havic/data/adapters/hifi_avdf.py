"""HiFi-AVDF: one folder per generator, each holding real source videos and their generated fakes.

Expected layout (from third-party use of the hub release; the adapter globs folders rather than
hard-coding generator names)::

    <generator>/<name>.mp4              real source video
    <generator>/<name>_generated.mp4    its fake, made by <generator>
    <generator>.csv                     optional: video_path, audio_label, visual_label, overall_label

* With ``<generator>.csv`` the labels come from it (``video_path`` relative to ROOT or to the
  generator folder; ``path`` / ``label`` / ``video_label`` are accepted as column names too), and
  videos the CSV does not list are reported as skipped. Without it, ``_generated`` marks a fake.
* Per-modality provenance is not published per generator, so without a CSV a fake gets
  ``audio_label = video_label = -1``; reals are (0, 0).
* ``category`` = the generator for fakes, "real" for reals; extra column ``generator`` on every row.
* ``group`` = ``<generator>/<name>``, shared by a real video and its fake, so a split by group keeps
  each pair (one person) together.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from havic.data.adapters._common import (AdapterResult, SkippedFile, classify_file, parse_label, rel_posix,
                                         walk_files)
from havic.data.manifest import Manifest, ManifestRow

__all__ = ["FAKE_SUFFIX", "hifi_avdf", "read_label_csv"]

log = logging.getLogger(__name__)

FAKE_SUFFIX = "_generated"
_ALIASES = {"path": ("video_path", "path"), "label": ("overall_label", "label"),
            "audio_label": ("audio_label",), "video_label": ("visual_label", "video_label")}


def read_label_csv(path: Path, root: Path, generator: str) -> dict[str, tuple[int, int, int]]:
    """``{path relative to root: (label, audio_label, video_label)}`` from a per-generator CSV.

    Raises:
        ValueError: no path or label column, or a bad label value (the message names the line).
    """
    out: dict[str, tuple[int, int, int]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        cols = {k: next((c for c in names if c in header), None) for k, names in _ALIASES.items()}
        if cols["path"] is None or cols["label"] is None:
            raise ValueError(f"{path}: need a video_path (or path) and an overall_label (or label) column, "
                             f"header is {header}")
        reader.fieldnames = header
        for record in reader:
            where = f"{path}: line {reader.line_num}"
            if None in record or None in record.values():
                raise ValueError(f"{where}: the number of fields differs from the header's {len(header)}")
            p = Path(record[cols["path"]].strip().replace("\\", "/"))
            if p.is_absolute():
                try:
                    p = p.relative_to(root)
                except ValueError:
                    raise ValueError(f"{where}: {p} is outside the dataset root {root}") from None
            elif p.parts[:1] != (generator,) and (root / generator / p).exists():
                p = Path(generator) / p
            label = parse_label(record[cols["label"]], (0, 1), f"{where}, column {cols['label']!r}")
            modal = [parse_label(record[cols[k]], (-1, 0, 1), f"{where}, column {cols[k]!r}")
                     if cols[k] is not None and record[cols[k]].strip() else (0 if label == 0 else -1)
                     for k in ("audio_label", "video_label")]
            out[p.as_posix()] = (label, modal[0], modal[1])
    return out


def hifi_avdf(root: str | Path) -> AdapterResult:
    """Lists HiFi-AVDF videos of every generator folder under `root`.

    Returns:
        Rows with empty ``split``.

    Raises:
        FileNotFoundError: `root` has no sub-folders.
        ValueError: a malformed per-generator CSV.
    """
    root = Path(root)
    generators = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")) \
        if root.is_dir() else []
    if not generators:
        raise FileNotFoundError(f"{root}: no generator folders (expected e.g. veo3.1/, kling2.5/ ...)")
    for extra_csv in sorted(root.glob("*.csv")):
        if extra_csv.stem not in generators:
            log.warning("%s: %s matches no generator folder; not read", root, extra_csv.name)
    result, rows = AdapterResult(Manifest()), []
    disagree = 0
    for gen in generators:
        csv_path = root / f"{gen}.csv"
        labels = read_label_csv(csv_path, root, gen) if csv_path.is_file() else None
        for f in walk_files(root / gen):
            rel = rel_posix(f, root)
            reason = classify_file(f)
            if reason is None and labels is not None and rel not in labels:
                reason = f"not listed in {csv_path.name}"
            if reason is not None:
                result.skipped.append(SkippedFile(rel, reason))
                continue
            generated = f.stem.endswith(FAKE_SUFFIX)
            if labels is not None:
                label, audio_label, video_label = labels.pop(rel)
                disagree += label != int(generated)
            else:
                label = int(generated)
                audio_label = video_label = -1 if generated else 0
            pair = f.relative_to(root / gen).with_name(f.stem.removesuffix(FAKE_SUFFIX)).as_posix()
            rows.append(ManifestRow(path=rel, label=label, audio_label=audio_label, video_label=video_label,
                                    group=f"{gen}/{pair}", category=gen if label else "real",
                                    extra={"generator": gen}))
        for rel in labels or {}:
            result.skipped.append(SkippedFile(rel, f"listed in {csv_path.name} but missing on disk"))
    if disagree:
        log.warning("%s: %d label(s) from the CSVs disagree with the '%s' file-name rule; the CSV labels are kept",
                    root, disagree, FAKE_SUFFIX)
    result.manifest = Manifest(rows, ("generator",))
    return result
