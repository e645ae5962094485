"""LRS2-BBC and LRS3-TED: real talking faces for pretraining.

LRS2 (ROOT = ``mvlrs_v1/``)::

    main/<programme_id>/<NNNNN>.mp4 (+ .txt transcript)     clips of train.txt, val.txt, test.txt
    pretrain/<programme_id>/<NNNNN>.mp4 (+ .txt)            clips of pretrain.txt
    pretrain.txt  train.txt  val.txt  test.txt              one ``<programme_id>/<NNNNN>`` per line

The official split of ``main/`` exists only in the list files (a directory walk cannot recover it),
so ``split`` comes from train.txt / val.txt / test.txt (first token of each line: test.txt lines
carry an extra tag). ``pretrain/`` clips have no official split (empty ``split``). A clip on disk
that no list names is kept with an empty split and logged; a listed clip missing on disk is
reported as skipped.

LRS3 (ROOT holds ``pretrain/``, ``trainval/``, ``test/``, each ``<YouTube id>/<NNNNN>.mp4``):
``trainval`` -> train, ``test`` -> test, ``pretrain`` -> empty split.

Every row is real (labels 0). ``group`` is the programme (LRS2) or YouTube video (LRS3) folder:
the datasets name no speakers, and one folder is the closest proxy for one speaker. Extra column
``subset`` = the top folder. ``category`` = "real".
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from havic.data.adapters._common import AdapterResult, SkippedFile, classify_file, is_sidecar, rel_posix, walk_files
from havic.data.manifest import Manifest, ManifestRow

__all__ = ["LRS2_LISTS", "LRS2_SUBSETS", "LRS3_SUBSETS", "lrs2", "lrs3", "read_clip_list"]

log = logging.getLogger(__name__)

LRS2_SUBSETS = ("main", "pretrain")
# list file -> (subset folder, split)
LRS2_LISTS = {"train.txt": ("main", "train"), "val.txt": ("main", "val"), "test.txt": ("main", "test"),
              "pretrain.txt": ("pretrain", "")}
LRS3_SUBSETS = {"pretrain": "", "trainval": "train", "test": "test"}


def read_clip_list(path: Path) -> list[str]:
    """Clip keys ``<folder>/<clip>`` of an LRS list file: first token per line, no extension."""
    keys = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        if tokens:
            keys.append(tokens[0].removesuffix(".mp4"))
    return keys


def _walk_subset(root: Path, subset: str, split_of: Mapping[str, str], result: AdapterResult,
                 rows: list[ManifestRow], default_split: str = "") -> set[str]:
    """Adds one row per clip of ``root/subset/<folder>/<clip>.<ext>``; returns the clip keys seen.

    The split of a clip is ``split_of[<folder>/<clip>]``, else `default_split`.
    """
    seen: set[str] = set()
    unlisted = 0
    for f in walk_files(root / subset):
        rel = rel_posix(f, root)
        if is_sidecar(f):
            result.ignored["transcript .txt sidecars"] += 1
            continue
        reason = classify_file(f)
        parts = f.relative_to(root / subset).parts
        if reason is None and len(parts) != 2:
            reason = f"unexpected location (expected {subset}/<folder>/<clip>.<ext>)"
        if reason is not None:
            result.skipped.append(SkippedFile(rel, reason))
            continue
        key = f"{parts[0]}/{f.stem}"
        seen.add(key)
        if split_of and key not in split_of:
            unlisted += 1
        rows.append(ManifestRow(path=rel, label=0, audio_label=0, video_label=0, group=parts[0],
                                category="real", split=split_of.get(key, default_split), extra={"subset": subset}))
    if unlisted:
        log.warning("%s/%s: %d clip(s) on disk are in no list file; kept with an empty split", root, subset, unlisted)
    return seen


def lrs2(root: str | Path, subsets: Sequence[str] = LRS2_SUBSETS) -> AdapterResult:
    """Lists LRS2 clips with the official split of ``main/`` from the list files.

    Args:
        root: ``mvlrs_v1/``.
        subsets: which of "main" and "pretrain" to list.

    Returns:
        Real rows; listed clips missing on disk are in ``skipped``.

    Raises:
        FileNotFoundError: a requested subset folder is missing.
        ValueError: an unknown subset name.
    """
    root = Path(root)
    unknown = [s for s in subsets if s not in LRS2_SUBSETS]
    if unknown:
        raise ValueError(f"unknown LRS2 subsets {unknown}; choose from {LRS2_SUBSETS}")
    result, rows = AdapterResult(Manifest()), []
    for subset in subsets:
        if not (root / subset).is_dir():
            raise FileNotFoundError(f"{root}: LRS2 folder {subset}/ not found (ROOT must be mvlrs_v1/)")
        listed: dict[str, tuple[str, str]] = {}  # clip key -> (list file, split)
        for name, (folder, split) in LRS2_LISTS.items():
            if folder != subset:
                continue
            if not (root / name).is_file():
                log.warning("%s: %s not found; %s/ clips it would list get no split from it", root, name, subset)
                continue
            for key in read_clip_list(root / name):
                if key in listed and listed[key][1] != split:
                    log.warning("%s: clip %s is in both %s and %s; keeping %s", root, key, listed[key][0], name,
                                listed[key][0])
                    continue
                listed.setdefault(key, (name, split))
        seen = _walk_subset(root, subset, {k: s for k, (_, s) in listed.items()}, result, rows)
        for key, (name, _) in listed.items():
            if key not in seen:
                result.skipped.append(SkippedFile(f"{subset}/{key}.mp4", f"listed in {name} but missing on disk"))
    result.manifest = Manifest(rows, ("subset",))
    return result


def lrs3(root: str | Path, subsets: Sequence[str] = tuple(LRS3_SUBSETS)) -> AdapterResult:
    """Lists LRS3-TED clips: ``trainval`` -> train, ``test`` -> test, ``pretrain`` -> no split.

    Args:
        root: the folder holding ``pretrain/``, ``trainval/``, ``test/``.
        subsets: which of those folders to list.

    Raises:
        FileNotFoundError: a requested subset folder is missing.
        ValueError: an unknown subset name.
    """
    root = Path(root)
    unknown = [s for s in subsets if s not in LRS3_SUBSETS]
    if unknown:
        raise ValueError(f"unknown LRS3 subsets {unknown}; choose from {tuple(LRS3_SUBSETS)}")
    result, rows = AdapterResult(Manifest()), []
    for subset in subsets:
        if not (root / subset).is_dir():
            raise FileNotFoundError(f"{root}: LRS3 folder {subset}/ not found")
        _walk_subset(root, subset, {}, result, rows, default_split=LRS3_SUBSETS[subset])
    result.manifest = Manifest(rows, ("subset",))
    return result
