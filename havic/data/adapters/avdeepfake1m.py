"""AV-Deepfake1M: labels and fake segments from the per-split metadata JSON; SSR-DFD split CSVs on request.

Layout (ROOT holds the split folders and their metadata)::

    train_metadata.json   train/<voxceleb id>/<youtube id>/<clip>/<kind>.mp4
    val_metadata.json     val/...
    test_files.txt        test/...        (labels withheld: not listed)

* Each metadata JSON is a list with one dict per video: ``file`` (relative to the split folder),
  ``split``, ``modify_type``, ``fake_segments``, ``audio_fake_segments``,
  ``visual_fake_segments`` ([start, end] seconds), ``video_frames``, ...
* Without ``<split>_metadata.json``, the per-file layout of the SDK loader is read: one such dict
  per video in ``<split>_metadata/<voxceleb id>/<youtube id>/<clip>/<kind>.json``, the video's
  path relative to the split folder with ``.json`` for ``.mp4`` (its ``file``, when present, wins).
* Labels come from the segment lists (``audio_label`` = audio segments non-empty, ``video_label``
  = visual segments non-empty), as the SDK's own flags test a misspelt ``modify_type``; only
  where the lists are absent is ``modify_type`` read.
* ``category``: RVRA / RVFA / FVRA / FVFA; ``group``: the VoxCeleb identity (first path part);
  extras ``fake_segments`` (JSON), ``video_frames``, ``modify_type``.
* Splits: the official test labels are withheld, so the official validation split is the test
  subset (as SSR-DFD does) and the official train split is ``train``; a validation subset is
  carved out of it by the probe protocols. With ``split_csv`` (``SPLIT=CSV`` items, e.g. the
  SSR-DFD lists a user has) only the listed videos are kept, with the split of their list.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from havic.data.adapters._common import AdapterResult, SkippedFile
from havic.data.adapters.split_lists import SplitLists
from havic.data.manifest import Manifest, ManifestRow

__all__ = ["OFFICIAL_TO_SPLIT", "avdeepfake1m"]

log = logging.getLogger(__name__)

OFFICIAL_TO_SPLIT = {"train": "train", "val": "test"}
_CATEGORY = {(0, 0): "RVRA", (1, 0): "RVFA", (0, 1): "FVRA", (1, 1): "FVFA"}
_MODIFY_TYPE = {"real": (0, 0), "audio_modified": (1, 0), "visual_modified": (0, 1), "both_modified": (1, 1)}


def _labels(item: Mapping[str, Any]) -> tuple[int, int, int]:
    """(label, audio_label, video_label) of one metadata entry."""
    if "audio_fake_segments" in item and "visual_fake_segments" in item:
        a, v = int(bool(item["audio_fake_segments"])), int(bool(item["visual_fake_segments"]))
        if (a, v) == (0, 0) and item.get("fake_segments"):
            return 1, -1, -1  # a fake whose modality the metadata does not say
        return int(a or v), a, v
    a, v = _MODIFY_TYPE.get(str(item.get("modify_type", "")), (-1, -1))
    if a < 0:
        raise ValueError(f"{item.get('file')!r}: neither segment lists nor a known modify_type")
    return int(a or v), a, v


def _metadata_entries(root: Path, official: str) -> tuple[str, list[Any]] | None:
    """``(source name, entries)`` of one official split: its list JSON, else the per-file JSONs of
    ``<split>_metadata/``; None when it has neither.

    Raises:
        ValueError: a list JSON that is not a list, or a per-file JSON that is not a dict (named).
    """
    single = root / f"{official}_metadata.json"
    if single.is_file():
        entries = json.loads(single.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError(f"{single}: expected a list of video entries, got {type(entries).__name__}")
        return single.name, entries
    folder = root / f"{official}_metadata"
    if not folder.is_dir():
        return None
    entries = []
    for path in sorted(folder.rglob("*.json")):
        item = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(item, dict):
            raise ValueError(f"{path}: expected one video's metadata (a dict), got {type(item).__name__}")
        entries.append({**item, "file": item.get("file") or path.relative_to(folder).with_suffix(".mp4").as_posix()})
    return f"{folder.name}/", entries


def avdeepfake1m(root: str | Path, split_csv: Sequence[str] | Mapping[str, str | Path] | None = None) -> AdapterResult:
    """Lists AV-Deepfake1M videos of the official train and val splits with labels and fake segments.

    Args:
        root: the folder holding ``train_metadata.json`` / ``val_metadata.json`` (or the per-file
            ``train_metadata/`` / ``val_metadata/`` folders) and the split folders.
        split_csv: ``SPLIT=CSV`` items; when given, only the listed videos are kept.

    Returns:
        Rows; listed files missing on disk and list entries that match no video are in ``skipped``.

    Raises:
        FileNotFoundError: no metadata JSON under `root`, or a split CSV is missing.
        ValueError: a metadata file that is not a list of dicts with ``file``.
    """
    root = Path(root)
    present = {s: found for s in OFFICIAL_TO_SPLIT if (found := _metadata_entries(root, s)) is not None}
    if not present:
        raise FileNotFoundError(f"{root}: no train_metadata.json or val_metadata.json (nor train_metadata/ or "
                                "val_metadata/); ROOT must be the folder that holds them and the train/ and val/ "
                                "folders")
    lists = SplitLists(split_csv, 4) if split_csv else None
    result = AdapterResult(Manifest())
    rows: list[ManifestRow] = []
    for official, (source, entries) in present.items():
        for item in entries:
            if not isinstance(item, dict) or not item.get("file"):
                raise ValueError(f"{root / source}: entry without 'file': {str(item)[:120]}")
            file = str(item["file"]).replace("\\", "/")
            rel = file if file.startswith(f"{official}/") else f"{official}/{file}"
            split = OFFICIAL_TO_SPLIT[official] if lists is None else lists.split_of(rel, result)
            if split is None:
                continue
            if not (root / rel).is_file():
                result.skipped.append(SkippedFile(rel, f"listed in {source} but missing"))
                continue
            label, audio_label, video_label = _labels(item)
            segments = item.get("fake_segments") or []
            rows.append(ManifestRow(
                path=rel, label=label, audio_label=audio_label, video_label=video_label,
                group=PurePosixPath(rel).parts[1] if len(PurePosixPath(rel).parts) > 2 else "",
                category=_CATEGORY.get((audio_label, video_label), "fake"), split=split,
                extra={"fake_segments": json.dumps([[float(s), float(e)] for s, e in segments]),
                       "video_frames": str(item.get("video_frames", "")),
                       "modify_type": str(item.get("modify_type", ""))},
            ))
    if lists is not None:
        lists.report_unmatched(result, "not in the metadata")
    if (root / "test_files.txt").is_file():
        result.ignored["official test videos (labels withheld)"] += sum(
            1 for line in (root / "test_files.txt").read_text().splitlines() if line.strip())
    result.manifest = Manifest(rows, ("fake_segments", "video_frames", "modify_type"))
    return result
