"""Video predictions: the one row per scored video, and its CSV and JSON files.

:class:`VideoPrediction` is what whole-video scoring (:mod:`havic.inference`) produces and what
reports (:mod:`havic.report`) and evaluation (:mod:`havic.evaluation`) consume; keeping it apart from
the scorer lets them read prediction files without loading any model code.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from havic.metrics import sigmoid
from havic.utils.io import atomic_write_csv, atomic_write_json

__all__ = [
    "CSV_COLUMNS",
    "VideoPrediction",
    "read_predictions",
    "write_predictions_csv",
    "write_predictions_json",
]


@dataclass
class VideoPrediction:
    """The outcome of scoring one video; failed videos are reported, never dropped.

    Attributes:
        path: the input as listed (manifest path or file path).
        score: fake probability, sigmoid(logit); None on failure.
        logit: aggregate of the window logits (``aggregate``); None on failure.
        label: 1 fake / 0 real when known (manifest input), else None.
        n_windows: windows scored.
        window_starts: (W,) their start times in seconds.
        window_logits: (W,) their logits.
        flags: ``no_audio``, ``audio_corrupt`` (with ``no_audio``: the track has packets but none
            decodes), ``padded``, ``filled_frames``, ``skipped_windows``, ``corrupt_packets``,
            ``read_error``, ``audio_padded``, ``truncated``, ``untrained_heads`` (scored by a detector
            whose heads were never trained: the score means nothing).
        error: None, or the failure reason ("no_face", "not_found", "unreadable", ...).
        error_detail: free text for people.
        seconds: wall time spent on the video.
        duration_s: the video's duration (probe), when known.
        window_s: window length in seconds.
        aggregate: the aggregation rule used.
        preset: the scoring preset (``infer.preset``): "corrected", this project's pipeline, or
            "official", the official script's windows (:mod:`havic.inference.official_mode`).
        category: the manifest category, when known.
        extra: other manifest columns (``group``, ``split``, dataset-specific ones).
        settings: the id of the scoring settings that made the row (weights, windows, aggregation,
            precision: :func:`havic.inference.journal.settings_id`); empty when unknown.
        sample_crops: a few face crops spread over the video (for reports; not serialised).
        sample_times: their times in seconds.
    """

    path: str
    score: float | None = None
    logit: float | None = None
    label: int | None = None
    n_windows: int = 0
    window_starts: list[float] = field(default_factory=list)
    window_logits: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    error: str | None = None
    error_detail: str = ""
    seconds: float = 0.0
    duration_s: float | None = None
    window_s: float = 3.2
    aggregate: str = "mean"
    preset: str = "corrected"
    category: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    settings: str = ""
    sample_crops: list[np.ndarray] = field(default_factory=list, repr=False)
    sample_times: list[float] = field(default_factory=list)

    @property
    def window_scores(self) -> list[float]:
        """(W,) fake probability of each window."""
        return [sigmoid(x) for x in self.window_logits]

    def to_json(self) -> dict[str, Any]:
        """Every field but the crops, JSON-ready."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "sample_crops"}


CSV_COLUMNS = ("path", "label", "category", "score", "logit", "n_windows", "duration_s", "window_s", "aggregate",
               "preset", "flags", "error", "error_detail", "seconds", "window_starts", "window_logits", "settings")


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def write_predictions_csv(predictions: Sequence[VideoPrediction], path: str | os.PathLike) -> Path:
    """One row per video (columns :data:`CSV_COLUMNS`, then the manifest's extra columns), atomically.

    Lists are ``;``-joined; unknown values are empty.
    """
    extra: dict[str, None] = {}
    for p in predictions:
        extra.update(dict.fromkeys(k for k in p.extra if k not in CSV_COLUMNS))
    rows = [[
        p.path, "" if p.label is None else int(p.label), p.category, _num(p.score), _num(p.logit), p.n_windows,
        _num(p.duration_s), _num(p.window_s), p.aggregate, p.preset, ";".join(p.flags), p.error or "", p.error_detail,
        f"{p.seconds:.3f}", ";".join(repr(float(s)) for s in p.window_starts),
        ";".join(repr(float(x)) for x in p.window_logits), p.settings, *(p.extra.get(k, "") for k in extra),
    ] for p in predictions]
    return atomic_write_csv(path, [*CSV_COLUMNS, *extra], rows)


def write_predictions_json(predictions: Sequence[VideoPrediction], path: str | os.PathLike,
                           **info: Any) -> Path:
    """``{"predictions": [...], **info}`` with lists as JSON lists, atomically."""
    return atomic_write_json(path, {**info, "predictions": [p.to_json() for p in predictions]}, sort_keys=False)


def _opt_float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(";") if x != ""]


def read_predictions(path: str | os.PathLike) -> list[VideoPrediction]:
    """Read predictions written by :func:`write_predictions_csv` or :func:`write_predictions_json`.

    A CSV only needs ``path`` and ``score`` (and ``label`` for metrics); ``error`` marks failures.

    Raises:
        ValueError: the file lacks a ``path`` or ``score`` column, or a value does not parse; the
            message names the file and the row.
    """
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        items = data["predictions"] if isinstance(data, dict) else data
        names = {f for f in VideoPrediction.__dataclass_fields__ if f != "sample_crops"}
        return [VideoPrediction(**{k: v for k, v in item.items() if k in names}) for item in items]
    out = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "score"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: predictions need the columns {sorted(missing)}")
        extra_cols = [c for c in reader.fieldnames or () if c not in CSV_COLUMNS]
        for i, r in enumerate(reader, start=1):
            try:
                out.append(VideoPrediction(
                    path=r["path"], score=_opt_float(r["score"]), logit=_opt_float(r.get("logit")),
                    label=int(r["label"]) if r.get("label", "") not in ("", None) else None,
                    n_windows=int(r.get("n_windows") or 0),
                    window_starts=_floats(r.get("window_starts") or ""),
                    window_logits=_floats(r.get("window_logits") or ""),
                    flags=[f for f in (r.get("flags") or "").split(";") if f],
                    error=r.get("error") or None, error_detail=r.get("error_detail") or "",
                    seconds=float(r.get("seconds") or 0.0), duration_s=_opt_float(r.get("duration_s")),
                    window_s=float(r.get("window_s") or 3.2), aggregate=r.get("aggregate") or "mean",
                    preset=r.get("preset") or "corrected",
                    category=r.get("category") or "", extra={c: r[c] for c in extra_cols if r[c]},
                    settings=r.get("settings") or "",
                ))
            except ValueError as err:
                raise ValueError(f"{path}: row {i} ({r.get('path')!r}): {err}") from None
    return out
