"""AVLips (LipFD, NeurIPS 2024): lip-sync fakes against real videos; a test-only set in SSR-DFD.

Layout (ROOT is the ``AVLips`` folder)::

    0_real/<name>.mp4      real
    1_fake/<name>.mp4      lip-sync fake: the video is re-driven, the audio is real
    wav/0_real/, wav/1_fake/   the extracted audio tracks (not listed; the mp4 files carry the audio)

Rows: real (0, 0, 0), category ``real``; fake label 1, ``audio_label`` 0, ``video_label`` 1,
category ``lipsync``. No identities are published, so ``group`` is empty. Every row is in the
``test`` split (the SSR-DFD protocol only tests on AVLips) unless ``split_csv`` lists assign them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from havic.data.adapters._common import AdapterResult, SkippedFile, classify_file, rel_posix, walk_files
from havic.data.adapters.split_lists import SplitLists
from havic.data.manifest import Manifest, ManifestRow

__all__ = ["FOLDERS", "avlips"]

# folder -> (label, audio_label, video_label, category)
FOLDERS = {"0_real": (0, 0, 0, "real"), "1_fake": (1, 0, 1, "lipsync")}


def avlips(root: str | Path, split_csv: Sequence[str] | Mapping[str, str | Path] | None = None) -> AdapterResult:
    """Lists AVLips videos with labels from their folder.

    Args:
        root: the folder holding ``0_real`` and ``1_fake``.
        split_csv: ``SPLIT=CSV`` items; when given, only the listed videos are kept.

    Raises:
        FileNotFoundError: neither ``0_real`` nor ``1_fake`` is under `root`.
    """
    root = Path(root)
    if not any((root / f).is_dir() for f in FOLDERS):
        raise FileNotFoundError(f"{root}: neither 0_real/ nor 1_fake/; ROOT must be the AVLips folder")
    lists = SplitLists(split_csv, 2) if split_csv else None
    result = AdapterResult(Manifest())
    rows: list[ManifestRow] = []
    for folder, (label, audio_label, video_label, category) in FOLDERS.items():
        if not (root / folder).is_dir():
            continue
        for f in walk_files(root / folder):
            rel = rel_posix(f, root)
            reason = classify_file(f, (".mp4",))
            if reason is not None:
                result.skipped.append(SkippedFile(rel, reason))
                continue
            split = "test" if lists is None else lists.split_of(rel, result)
            if split is None:
                continue
            rows.append(ManifestRow(path=rel, label=label, audio_label=audio_label, video_label=video_label,
                                    category=category, split=split))
    if (root / "wav").is_dir():
        result.ignored["audio files under wav/ (the mp4 files carry the audio)"] += sum(
            1 for p in (root / "wav").rglob("*") if p.is_file())
    if lists is not None:
        lists.report_unmatched(result, "not found")
    result.manifest = Manifest(rows)
    return result
