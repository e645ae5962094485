"""Scoring jobs over many videos: the inputs, a resumable predictions file, the report and a summary.

A job turns command-line inputs (files, folders, manifests: :func:`collect_inputs`) into one
:class:`~havic.predictions.VideoPrediction` per input with a :class:`~havic.inference.scorer.VideoScorer`
(:func:`run_inference`), so that every listed video has exactly one row, failed ones included.
Every finished row goes to the job's journal at once (:mod:`havic.inference.journal`), so no
signal loses one.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havic.data.manifest import read_manifest
from havic.inference.journal import Journal, journal_path, previous_rows, scoring_settings, settings_id
from havic.inference.scorer import VideoScorer
from havic.predictions import VideoPrediction, write_predictions_csv, write_predictions_json
from havic.report import write_index, write_video_report
from havic.utils.io import remove_stale_temps

__all__ = [
    "InferenceItem",
    "VIDEO_EXTENSIONS",
    "collect_inputs",
    "infer_overrides",
    "run_inference",
    "score_items",
    "summary_text",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp",
                    ".m2ts", ".mts", ".m2t", ".ogv", ".vob", ".mxf", ".f4v", ".m2v", ".asf", ".dv", ".qt", ".y4m")


@dataclass(frozen=True)
class InferenceItem:
    """One video to score: ``path`` as reported, ``file`` as read, and its manifest fields if any."""

    path: str
    file: Path
    label: int | None = None
    category: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


def _listing(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _folder_videos(folder: Path) -> list[Path]:
    """The video files under `folder` (recursively, by extension); warns with every file left out."""
    videos, skipped, hidden = [], [], []
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):  # e.g. macOS "._x.mp4" companions, temp files
            hidden.append(str(rel))
        elif f.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(f)
        else:
            skipped.append(str(rel))
    if skipped:
        kinds = Counter(Path(s).suffix.lower() or "(none)" for s in skipped)
        log.warning("%s: skipped %d file(s) whose extension is not a video's (%s): %s; name a file directly to "
                    "score it anyway", folder, len(skipped), ", ".join(f"{k} {n}" for k, n in kinds.most_common()),
                    _listing(skipped))
    if hidden:
        log.warning("%s: skipped %d hidden file(s): %s", folder, len(hidden), _listing(hidden))
    if not videos:
        log.warning("%s: no video files in this folder", folder)
    return videos


def collect_inputs(inputs: Sequence[str | os.PathLike], root: str | os.PathLike | None = None) -> list[InferenceItem]:
    """Expand files, folders (recursively, :data:`VIDEO_EXTENSIONS`) and manifest CSVs into items.

    Every file named directly becomes one item whether or not it is a video (it then gets an
    error row); so does a path that does not exist. In folders, files with other extensions and
    hidden files are left out with a warning that lists them. Manifest rows keep their labels,
    category and other columns; their relative paths start at `root` (default: the manifest's
    folder). A file reached twice (listed twice, or by two paths such as ``d/x.mp4`` and
    ``d/../d/x.mp4`` or a link) is kept once, under its first path, with a warning.

    Raises:
        havic.data.manifest.ManifestError: a CSV that is not a valid manifest.
    """
    items: list[InferenceItem] = []
    for entry in inputs:
        p = Path(entry)
        if p.is_dir():
            items += [InferenceItem(str(f), f) for f in _folder_videos(p)]
        elif p.suffix.lower() == ".csv" and p.is_file():
            manifest = read_manifest(p)
            base = Path(root) if root is not None else p.parent
            for r in manifest:
                file = Path(r.path) if Path(r.path).is_absolute() else base / r.path
                extra = {"group": r.group, "split": r.split, "audio_label": str(r.audio_label),
                         "video_label": str(r.video_label), **dict(r.extra)}
                items.append(InferenceItem(r.path, file, int(r.label), r.category, extra))
        else:
            items.append(InferenceItem(str(p), p))
    first: dict[Path, InferenceItem] = {}
    unique = []
    for it in items:
        key = it.file.resolve()
        if key in first:
            same = "listed more than once" if first[key].path == it.path else f"the same file as {first[key].path}"
            log.warning("%s: %s; scored once", it.path, same)
            continue
        first[key] = it
        unique.append(it)
    return unique


def infer_overrides(**settings: object) -> list[str]:
    """``infer.<name>=<value>`` configuration overrides for the scoring settings given (None: not given).

    Command-line flags become overrides this way, so a flag and ``infer.<name>=...`` are one setting.

    >>> infer_overrides(hop_s=0.8, aggregate=None)
    ['infer.hop_s=0.8']
    """
    return [f"infer.{name}={value}" for name, value in settings.items() if value is not None]


def score_items(scorer: VideoScorer, items: Iterable[InferenceItem]) -> Iterator[VideoPrediction]:
    """:meth:`VideoScorer.score` of each item, in order, with its manifest fields in the row."""
    for it in items:
        yield scorer.score(it.file, path=it.path, label=it.label, category=it.category, extra=it.extra)


def _json_info(scorer: VideoScorer, rows: Sequence[VideoPrediction], this_id: str,
               known: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON header: the settings of every id the rows carry, and this job's settings when no row differs."""
    ids = sorted({p.settings for p in rows} | {this_id})
    info: dict[str, Any] = {}
    if ids == [this_id]:
        info.update(aggregate=scorer.aggregate, window_s=scorer.window_s, hop_s=scorer.hop_s, fps=scorer.fps,
                    max_seconds=scorer.max_seconds, precision=scorer.precision)
    info.update(settings_id=this_id, settings={i: known.get(i) for i in ids})
    return info


def run_inference(
    scorer: VideoScorer,
    items: Sequence[InferenceItem],
    out_csv: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    resume_mixed: bool = False,
    progress: bool = True,
    flush_every: int = 20,
    threshold: float | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[VideoPrediction]:
    """Score `items` into a predictions CSV (and JSON, and a picture report), resumably.

    Every finished row is appended to ``<out>.journal.jsonl`` and flushed to disk before the next
    video (:class:`~havic.inference.journal.Journal`); the CSV (and JSON) are rewritten atomically
    from the rows at the start, every `flush_every` videos and when the job ends or is interrupted.
    Temporary files that killed writes left beside the outputs are removed first. With `resume`
    the rows of the CSV and journal are kept and their paths are not scored again; rows made with
    other settings are refused unless `resume_mixed`. Rows carry their settings id. `threshold` is
    the decision line of the report (default: ``infer.threshold`` of the scorer's configuration).

    Args:
        settings: what the rows depend on (default:
            :func:`~havic.inference.journal.scoring_settings` of the scorer's configuration and model).

    Returns:
        All rows: those of `items` in input order (kept or new), then kept rows of other paths.

    Raises:
        havic.inference.journal.ResumeError: resuming rows made with other settings (nothing is written).
    """
    from tqdm import tqdm

    threshold = float(scorer.cfg.infer.threshold if threshold is None else threshold)
    settings = scoring_settings(scorer.cfg, scorer.model) if settings is None else dict(settings)
    this_id = settings_id(settings)
    old: dict[str, VideoPrediction] = {}
    known: dict[str, dict[str, Any]] = {}
    if resume:
        old, known = previous_rows(out_csv, settings, mixed=resume_mixed)
        if old:
            log.info("%s: resuming, %d videos already done", out_csv, len(old))
    known[this_id] = settings
    for folder in {Path(out_csv).parent, *([Path(json_path).parent] if json_path else []),
                   *([Path(report_dir)] if report_dir else [])}:
        remove_stale_temps(folder)
    todo = [it for it in items if it.path not in old]
    new: dict[str, VideoPrediction] = {}

    def rows() -> list[VideoPrediction]:
        listed = [new.get(it.path) or old.get(it.path) for it in items]
        paths = {it.path for it in items}
        return [p for p in listed if p is not None] + [p for k, p in old.items() if k not in paths]

    def write_files() -> list[VideoPrediction]:
        everything = rows()
        write_predictions_csv(everything, out_csv)
        if json_path is not None:
            write_predictions_json(everything, json_path, **_json_info(scorer, everything, this_id, known))
        return everything

    if report_dir is not None:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
    journal = Journal(journal_path(out_csv), settings, append=resume)
    write_files()
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True)
    counts = {"scored": 0, "failed": 0}

    def show_windows(done: int, planned: int) -> None:
        bar.set_postfix(counts, windows=f"{done}/{planned}", refresh=False)
        bar.update(0)  # redraws at most every mininterval

    scorer.progress = show_windows if progress else None
    try:
        for k, pred in enumerate(score_items(scorer, todo), start=1):
            pred.settings = this_id
            journal.add(pred)
            if report_dir is not None:
                write_video_report(pred, report_dir, threshold)
            pred.sample_crops = []              # pictures are written; do not keep crops of every video
            new[pred.path] = pred
            counts["failed" if pred.error else "scored"] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update()
            if k % max(1, flush_every) == 0:
                write_files()
    finally:
        scorer.progress = None
        bar.close()
        journal.close()
        everything = write_files()
    if report_dir is not None:
        write_index(everything, report_dir, threshold=threshold)
    return everything


def summary_text(preds: Sequence[VideoPrediction]) -> str:
    """Two lines: scored / failed by reason, and flag counts with the mean time per video."""
    reasons = Counter(p.error for p in preds if p.error)
    flags = Counter(f for p in preds if not p.error for f in p.flags)
    n_failed = sum(reasons.values())
    line = f"scored {len(preds) - n_failed} of {len(preds)} videos, failed {n_failed}"
    if reasons:
        line += " (" + ", ".join(f"{r} {n}" for r, n in reasons.most_common()) + ")"
    timed = [p.seconds for p in preds if p.seconds > 0]
    extra = ", ".join(f"{f} {n}" for f, n in flags.most_common()) or "none"
    mean = f"; {sum(timed) / len(timed):.2f} s per video" if timed else ""
    return f"{line}\nflags of scored videos: {extra}{mean}"
