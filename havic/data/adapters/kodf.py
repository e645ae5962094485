"""KoDF (Korean deepfakes; evaluation only in HAVIC), optionally restricted to a subset list.

Accepted layouts (ROOT holds one real and one fake folder)::

    original_videos/...                        real        (release layout)
    synthesized_videos/<method>/...            fake, method = dffs | dfl | fo | fsgan | audio-driven
    real_set/[pycrop/]...   fake_set/[pycrop/]...          (face-tracked crops, .avi or .mp4)

Labels: KoDF never manipulates the audio (every clip carries real speech), so a fake is
``(audio 0, video 1)`` and a real ``(0, 0)``. ``category`` = "real" or the method folder
(``fake`` where the layout has no method folders); extra column ``method``.

``group`` is the first folder below the class (or method) folder when the videos are nested, else
the file stem. The release metadata that maps videos to subject UUIDs is not read, so a split by
group is only identity-disjoint when the folder layout is per subject.

The subset list (HAVIC, AVAD and AVFF use an unpublished subset) is a text file with one path
relative to ROOT per line (blank lines and lines starting with '#' are ignored), or a CSV whose
first line has a ``path`` field. Only listed videos become rows; listed paths missing on disk are
reported as skipped, and the number of unlisted videos is logged.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from havic.data.adapters._common import AdapterResult, SkippedFile, classify_file, rel_posix, walk_files
from havic.data.manifest import Manifest, ManifestRow

__all__ = ["FAKE_FOLDERS", "REAL_FOLDERS", "kodf", "read_subset_list"]

log = logging.getLogger(__name__)

REAL_FOLDERS = ("original_videos", "real_set")
FAKE_FOLDERS = ("synthesized_videos", "fake_set")


def read_subset_list(path: str | Path, root: str | Path) -> list[str]:
    """Paths of a subset list, relative to `root` with '/' separators, in file order.

    Absolute paths under `root` are made relative; a leading "./" is dropped.

    Raises:
        ValueError: an absolute path outside `root`.
    """
    path, root = Path(path), Path(root)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = [h.strip() for h in next(csv.reader(lines[:1]), [])]
    if "path" in header:  # a CSV with a header; otherwise one path per line
        entries = [r["path"].strip() for r in csv.DictReader(lines[1:], fieldnames=header) if r["path"]]
    else:
        entries = [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]
    out = []
    for i, entry in enumerate(entries, 1):
        p = Path(entry.replace("\\", "/"))
        if p.is_absolute():
            try:
                p = p.relative_to(root)
            except ValueError:
                raise ValueError(f"{path}: entry {i} ({entry}) is outside the dataset root {root}") from None
        out.append(p.as_posix())
    return out


def _group(parts: tuple[str, ...]) -> str:
    """First folder below the class/method folder (skipping a SyncNet 'pycrop'), else the stem."""
    parts = parts[1:] if parts and parts[0] == "pycrop" else parts
    return parts[0] if len(parts) > 1 else Path(parts[-1]).stem


def kodf(root: str | Path, subset_list: str | Path | None = None) -> AdapterResult:
    """Lists KoDF videos (or the videos of a subset list) with method and labels.

    Args:
        root: the folder holding the real and fake folders.
        subset_list: optional list of paths relative to `root` to keep.

    Returns:
        Rows with empty ``split``.

    Raises:
        FileNotFoundError: no real and no fake folder under `root`.
    """
    root = Path(root)
    real = [d for d in REAL_FOLDERS if (root / d).is_dir()]
    fake = [d for d in FAKE_FOLDERS if (root / d).is_dir()]
    if not real and not fake:
        raise FileNotFoundError(f"{root}: no KoDF folders; expected one of {REAL_FOLDERS} and one of {FAKE_FOLDERS}")
    if not real or not fake:
        log.warning("%s: only %s found; the manifest holds one class", root, real or fake)
    wanted = None
    if subset_list is not None:
        wanted = dict.fromkeys(read_subset_list(subset_list, root))
    result, rows, found = AdapterResult(Manifest()), [], set()
    for folder, is_fake in [(d, False) for d in real] + [(d, True) for d in fake]:
        for f in walk_files(root / folder):
            rel = rel_posix(f, root)
            if wanted is not None and rel not in wanted:
                result.ignored["videos and files outside the subset list"] += 1
                continue
            reason = classify_file(f)
            if reason is not None:
                result.skipped.append(SkippedFile(rel, reason))
                continue
            found.add(rel)
            parts = f.relative_to(root / folder).parts
            method = ""
            if is_fake and folder == "synthesized_videos" and len(parts) > 1:
                method, parts = parts[0], parts[1:]
            rows.append(ManifestRow(
                path=rel, label=int(is_fake), audio_label=0, video_label=int(is_fake), group=_group(parts),
                category=(method or "fake") if is_fake else "real", extra={"method": method if is_fake else "real"},
            ))
    if wanted is not None:
        skipped = {s.path for s in result.skipped}
        for rel in wanted:
            if rel not in found and rel not in skipped:
                result.skipped.append(SkippedFile(rel, "listed in the subset list but not a video under the "
                                                       "real/fake folders"))
    result.manifest = Manifest(rows, ("method",))
    return result
