"""Scoring jobs over many videos: the inputs, a resumable predictions file, the report and a summary.

A job turns command-line inputs (files, folders, manifests: :func:`collect_inputs`) into one
:class:`~havic.predictions.VideoPrediction` per input with a :class:`~havic.inference.scorer.VideoScorer`
(:func:`run_inference`), so that every listed video has exactly one row, failed ones included.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from havic.data.manifest import read_manifest
from havic.inference.scorer import VideoScorer
from havic.predictions import VideoPrediction, read_predictions, write_predictions_csv, write_predictions_json
from havic.report import write_index, write_video_report

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

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp")


@dataclass(frozen=True)
class InferenceItem:
    """One video to score: ``path`` as reported, ``file`` as read, and its manifest fields if any."""

    path: str
    file: Path
    label: int | None = None
    category: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


def collect_inputs(inputs: Sequence[str | os.PathLike], root: str | os.PathLike | None = None) -> list[InferenceItem]:
    """Expand files, folders (recursively, :data:`VIDEO_EXTENSIONS`) and manifest CSVs into items.

    Every file named directly becomes one item whether or not it is a video (it then gets an
    error row); so does a path that does not exist. Manifest rows keep their labels, category and
    other columns; their relative paths start at `root` (default: the manifest's folder). A path
    listed twice is kept once.

    Raises:
        havic.data.manifest.ManifestError: a CSV that is not a valid manifest.
    """
    items: list[InferenceItem] = []
    for entry in inputs:
        p = Path(entry)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                log.warning("%s: no video files (%s) in this folder", p, ", ".join(VIDEO_EXTENSIONS))
            items += [InferenceItem(str(f), f) for f in found]
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
    seen: set[str] = set()
    unique = []
    for it in items:
        if it.path in seen:
            log.warning("%s listed more than once; scored once", it.path)
            continue
        seen.add(it.path)
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


def run_inference(
    scorer: VideoScorer,
    items: Sequence[InferenceItem],
    out_csv: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    flush_every: int = 20,
    threshold: float | None = None,
) -> list[VideoPrediction]:
    """Score `items` into a predictions CSV (and JSON, and a picture report), resumably.

    The CSV is rewritten atomically every `flush_every` videos and when the job ends or is
    interrupted, so an interrupted job keeps what it scored; with `resume` the rows of an existing
    CSV are kept and their paths are not scored again. `threshold` is the decision line of the
    report (default: ``infer.threshold`` of the scorer's configuration).

    Returns:
        All rows: those of `items` in input order (kept or new), then kept rows of other paths.
    """
    from tqdm import tqdm

    threshold = float(scorer.cfg.infer.threshold if threshold is None else threshold)
    old: dict[str, VideoPrediction] = {}
    if resume and Path(out_csv).is_file():
        old = {p.path: p for p in read_predictions(out_csv)}
        log.info("%s: resuming, %d videos already done", out_csv, len(old))
    todo = [it for it in items if it.path not in old]
    new: dict[str, VideoPrediction] = {}

    def rows() -> list[VideoPrediction]:
        listed = [new.get(it.path) or old.get(it.path) for it in items]
        paths = {it.path for it in items}
        return [p for p in listed if p is not None] + [p for k, p in old.items() if k not in paths]

    if report_dir is not None:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True)
    n_failed = 0
    try:
        for k, pred in enumerate(score_items(scorer, todo), start=1):
            if report_dir is not None:
                write_video_report(pred, report_dir, threshold)
            pred.sample_crops = []              # pictures are written; do not keep crops of every video
            new[pred.path] = pred
            n_failed += pred.error is not None
            bar.update()
            bar.set_postfix(scored=k - n_failed, failed=n_failed, refresh=False)
            if k % max(1, flush_every) == 0:
                write_predictions_csv(rows(), out_csv)
    finally:
        bar.close()
        everything = rows()
        write_predictions_csv(everything, out_csv)
    if json_path is not None:
        write_predictions_json(everything, json_path, aggregate=scorer.aggregate, window_s=scorer.window_s,
                               hop_s=scorer.hop_s, fps=scorer.fps, max_seconds=scorer.max_seconds,
                               precision=scorer.precision)
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
