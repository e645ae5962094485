"""Whole-video scoring with sliding windows (spec §14), without the official pipeline's losses.

Per video (:class:`VideoScorer`):

1. probe; plan windows of ``data.clip_seconds`` every ``hop_s`` seconds (:func:`plan_windows`)
   covering the whole video (the official code used only the first 10 s: ``max_seconds`` does
   that on request, and flags the video ``truncated``);
2. decode the video once, streaming, at the union of the windows' frame times (window start +
   k / ``data.fps``, the grid of the training clips); every decoded frame goes through the face
   detector once and is cropped once, however many windows share it, with the training crop rule
   (``data.face.*``, same margin); frames without a face borrow the box of the nearest detected
   frame in the whole video within ``data.face.max_gap_s`` (flag ``filled_frames``); a window
   with a frame beyond that gap is skipped (flag ``skipped_windows``) instead of dropping the
   video;
3. decode the audio once; its fbank is computed once for the whole track and sliced per window
   (:class:`WindowAudio`); a video without audio is scored by the auxiliary video head (paper
   D.2, flag ``no_audio``);
4. windows are scored in batches as soon as their frames are cropped, so only the crops of the
   windows in flight are held (never all frames of a long video); the video logit aggregates
   the window logits (:func:`havic.metrics.aggregate_windows`: ``mean`` official, ``max``,
   ``lse``) and the score is its sigmoid (1 = fake).

A video shorter than one window is not dropped (the official code skipped it): its frames are
repeated in order (frame times ``t_(k mod n)`` of the ``n`` frames it has) and its audio is looped
to one window (flag ``padded``). Failures never stop a batch job: the video gets an error row with
the :class:`~havic.data.errors.MediaError` reason (``not_found``, ``unreadable``,
``no_video_stream``, ``no_frames``, ``no_face`` ...) or ``error`` for an unexpected exception.
"""
from __future__ import annotations

import bisect
import csv
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor, nn

from havic.data.audio import AudioFeatures
from havic.data.errors import MediaError
from havic.data.face import FaceCropper, expand_boxes
from havic.metrics import AGGREGATIONS, aggregate_windows, sigmoid
from havic.precision import autocast, prepare_for_inference
from havic.utils.io import atomic_write_csv, atomic_write_json

__all__ = [
    "InferenceItem",
    "ScoreStats",
    "VIDEO_EXTENSIONS",
    "VideoPrediction",
    "VideoScorer",
    "WindowAudio",
    "audio_features",
    "build_cropper",
    "collect_inputs",
    "load_detector",
    "official_kind",
    "plan_windows",
    "read_predictions",
    "run_inference",
    "summary_text",
    "write_predictions_csv",
    "write_predictions_json",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp")
# Durations and window starts are floats from rationals; a microsecond absorbs their rounding.
_TIME_EPS = 1e-6


# --------------------------------------------------------------------------------------------------
# Loading a detector
# --------------------------------------------------------------------------------------------------


def official_kind(state_dict: Mapping[str, Any]) -> str | None:
    """"detector" / "pretrain" for an official HAVIC_FT / HAVIC_PT state dict (by its keys), else None."""
    if not any(k.startswith("AudioVisualInteractionModule.") for k in state_dict):
        return None
    if "classifier.output_layer.weight" in state_dict:
        return "detector"
    if any(k.startswith(("visual_decoder.", "audio_decoder.", "A2V.", "V2A.")) for k in state_dict):
        return "pretrain"
    return None


def _split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """YAML files (no ``=``) and ``key=value`` overrides."""
    return [i for i in items if "=" not in i], [i for i in items if "=" in i]


def _apply_overrides(cfg: DictConfig, items: Sequence[str]) -> DictConfig:
    """A stored configuration with YAML files and ``key=value`` items merged on top, validated."""
    from havic.config import from_container, to_container

    files, dotlist = _split_overrides(items)
    if not items:
        return cfg
    merged = OmegaConf.create(to_container(cfg))
    for f in files:
        merged = OmegaConf.merge(merged, OmegaConf.load(f))
    merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(dotlist)))
    out = from_container(OmegaConf.to_container(merged, resolve=True))
    OmegaConf.set_readonly(out, True)
    return out


def load_detector(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    official: bool | None = None,
    config_overrides: Sequence[str] = (),
) -> tuple[nn.Module, DictConfig]:
    """Load a detector for inference, in eval mode on `device`.

    Accepted files: this project's weights files and Lightning checkpoints
    (:func:`havic.checkpoints.read_weights`; the configuration stored with them is used), or an
    official HAVIC fine-tuned (HAVIC_FT) state dict, recognised by its keys or forced with
    ``official=True``: it is converted (:func:`havic.checkpoints.convert_official_havic`) into
    the ``official`` variant built from the defaults (full size) plus `config_overrides`, and
    loaded strictly.

    Args:
        path: the weights file.
        device: where the model runs.
        official: True forces the official reading, False forbids it, None detects it.
        config_overrides: YAML files and ``key=value`` items merged over the stored configuration
            (or over the defaults for an official file), e.g. ``data.face.detector=haar``.

    Returns:
        (model, resolved configuration).

    Raises:
        havic.checkpoints.CheckpointError: naming the file: unreadable, a pretraining checkpoint
            (no detection heads), an official pretraining state dict, or tensors that do not fit.
    """
    from havic.checkpoints import (
        CheckpointError,
        compare_fixed_tables,
        convert_official_havic,
        load_state_dict_file,
        load_with_report,
        read_weights,
    )
    from havic.config import load_config
    from havic.models import build_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    no_heads = "it has no detection heads; fine-tune it first (tools/train.py with train.stage=finetune)"
    not_ours: CheckpointError | None = None
    if official is not True:
        try:
            weights = read_weights(path)
        except CheckpointError as err:
            if official is False:
                raise
            not_ours = err
        else:
            if weights.kind != "detector":
                raise CheckpointError(f"{path}: a {weights.kind} checkpoint: {no_heads}")
            cfg = _apply_overrides(weights.config, config_overrides)
            model = build_model(cfg.model, "detector")
            load_with_report(model, weights.state_dict)
            return model.eval().to(device), cfg
    state_dict = load_state_dict_file(path)
    kind = official_kind(state_dict)
    if kind == "pretrain":
        raise CheckpointError(f"{path}: an official HAVIC pretraining (HAVIC_PT) state dict: {no_heads}")
    if kind is None and official is not True:
        raise CheckpointError(
            f"{path}: neither a havic weights file or checkpoint ({not_ours}) nor an official HAVIC fine-tuned "
            "state dict (no classifier.output_layer.weight and AudioVisualInteractionModule.* keys)")
    converted, ignored = convert_official_havic(state_dict, "detector")
    files, dotlist = _split_overrides(config_overrides)
    cfg = load_config(files, ["model.variant=official", *dotlist])
    model = build_model(cfg.model, "detector")
    try:
        load_with_report(model, converted)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: official state dict does not fit the official variant of this "
                              f"configuration (sizes in config_overrides?): {err}") from None
    tables = compare_fixed_tables(state_dict, model)
    bad = {k: v for k, v in tables.items() if v > 1e-3}
    if bad:
        raise CheckpointError(f"{path}: official fixed tables differ from ours ({bad}): wrong token layout or sizes")
    log.info("%s: official HAVIC detector, %d tensors loaded, %d ignored", path, len(converted), len(ignored))
    return model.eval().to(device), cfg


# --------------------------------------------------------------------------------------------------
# Windows, audio, faces
# --------------------------------------------------------------------------------------------------


def plan_windows(
    duration_s: float, window_s: float = 3.2, hop_s: float = 0.4, max_seconds: float | None = None
) -> list[float]:
    """Start times of the windows that cover a video.

    Windows start at 0, hop_s, 2 hop_s, ... while they fit; when that grid leaves a tail (the last
    window ends more than a microsecond before the end), a final window starting at
    ``end - window_s`` is added so the last seconds are scored too. A video shorter than one
    window gets the single start 0 (the scorer pads it, see the module docstring).

    Args:
        duration_s: video duration in seconds (> 0).
        window_s: window length.
        hop_s: distance between window starts.
        max_seconds: score only the first `max_seconds` seconds (None: all).

    Returns:
        Sorted window starts in seconds, rounded to microseconds.
    """
    if window_s <= 0 or hop_s <= 0:
        raise ValueError(f"window_s and hop_s must be positive, got {window_s}, {hop_s}")
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise ValueError(f"duration must be positive and finite, got {duration_s}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    end = min(duration_s, max_seconds) if max_seconds is not None else duration_s
    if end < window_s - _TIME_EPS:
        return [0.0]
    n = math.floor((end - window_s) / hop_s + _TIME_EPS) + 1
    starts = [round(k * hop_s, 6) for k in range(n)]
    if end - (starts[-1] + window_s) > _TIME_EPS:
        starts.append(round(end - window_s, 6))
    return starts


def audio_features(cfg: DictConfig) -> AudioFeatures:
    """The audio input transform of a configuration (``data.audio`` and ``model.audio``)."""
    a = cfg.data.audio
    return AudioFeatures(
        sample_rate=int(a.sample_rate), num_mel_bins=int(cfg.model.audio.num_mel_bins),
        frame_length_ms=float(a.frame_length_ms), frame_shift_ms=float(a.frame_shift_ms),
        n_frames=int(cfg.model.audio.num_frames), length_policy=a.length_policy,
        norm_mean=float(a.norm_mean), norm_std=float(a.norm_std),
    )


class WindowAudio:
    """Model audio inputs of the windows of one video, from one fbank of the whole track.

    The whole waveform's fbank is computed once (lazily) and sliced at each window's first frame,
    as :func:`havic.data.audio.window_fbanks` does with ``reuse_whole=True`` (identical values;
    it differs from a per-window fbank by float32 rounding only, see there). A window whose start
    is not on the fbank hop grid is computed from its own samples.

    Args:
        waveform: (S,) float32 mono, long enough for every window (pad it first).
        features: the feature parameters.
        window_s: window length in seconds.
    """

    def __init__(self, waveform: np.ndarray, features: AudioFeatures, window_s: float) -> None:
        self.wave = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
        self.features = features
        self.window_samples = round(window_s * features.sample_rate)
        self.window_frames = features.frames_for(window_s)
        self._whole: Tensor | None = None

    def inputs(self, starts_s: Sequence[float]) -> Tensor:
        """(W,) starts -> (W, n_frames, num_mel_bins) normalised model inputs."""
        f, hop = self.features, self.features.shift_samples
        out = []
        for s in starts_s:
            start = round(s * f.sample_rate)
            if start < 0 or start + self.window_samples > self.wave.numel():
                raise ValueError(f"window at {s:.3f} s needs samples up to {start + self.window_samples}, "
                                 f"the waveform has {self.wave.numel()}")
            if start % hop == 0 and abs(s * f.sample_rate - start) < 1e-6 * f.sample_rate:
                if self._whole is None:
                    self._whole = f.fbank(self.wave)
                fb = self._whole[start // hop: start // hop + self.window_frames]
            else:
                fb = f.fbank(self.wave[start: start + self.window_samples])
            out.append(f.finish(fb))
        return torch.stack(out)


def build_cropper(cfg: DictConfig) -> FaceCropper:
    """The face detector and cropper of ``data.face`` at ``model.video.image_size`` (as preprocessing)."""
    from havic.data.preprocess import PreprocessSettings

    return PreprocessSettings.from_config(cfg).build_cropper()


def _crop(frame: np.ndarray, box: np.ndarray, cropper: FaceCropper) -> np.ndarray:
    """One frame's face crop with the cropper's rule (same as :meth:`FaceCropper.crop`)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = expand_boxes(box[None], h, w, cropper.margin, cropper.square)[0]
    return np.asarray(Image.fromarray(frame[y1:y2, x1:x2]).resize((cropper.size, cropper.size), Image.BILINEAR))


class _FaceTrack:
    """Streaming face detection and cropping over the sorted frame times of one video.

    Frames are pushed in time order and detected in batches, each exactly once. A frame with a
    face is cropped at once; one without waits (full frame held) until the nearest detected frame
    in time is known: the nearer of the previous and the next detection, ties to the earlier, as
    :meth:`FaceCropper.crop` decides over a whole clip. With ``max_gap_s`` set, a frame waits at
    most that long, then has no crop (None); with ``max_gap_s=None`` it waits for the next
    detection, so memory grows with the longest stretch without a face.
    """

    def __init__(self, cropper: FaceCropper, times: np.ndarray, path: str, detect_batch: int,
                 keep: Iterable[int] = ()) -> None:
        self.cropper, self.times, self.path = cropper, times, path
        self.detect_batch = max(1, int(detect_batch))
        self.n = times.size
        self.boxes = np.full((self.n, 4), np.nan)
        self.detected: list[int] = []          # indices with their own detection, ascending
        self.n_known = 0                       # frames 0..n_known-1 went through the detector
        self.pending: list[tuple[int, np.ndarray]] = []
        self.waiting: dict[int, np.ndarray] = {}
        self.crops: dict[int, np.ndarray | None] = {}
        self.done = np.zeros(self.n, dtype=bool)
        self.prefix = 0                        # every frame before it is resolved
        self.n_filled = 0
        self.n_detector_calls = 0
        self.n_detected_frames = 0
        self.peak_held = 0
        self.keep = set(keep)
        self.samples: dict[int, np.ndarray] = {}

    def held(self) -> int:
        return len(self.pending) + len(self.waiting) + sum(c is not None for c in self.crops.values())

    def _note_peak(self) -> None:
        self.peak_held = max(self.peak_held, self.held())

    def push(self, j: int, frame: np.ndarray) -> None:
        self.pending.append((j, frame))
        self._note_peak()
        if len(self.pending) >= self.detect_batch:
            self._detect()
            self._resolve(final=False)

    def finish(self) -> None:
        self._detect()
        if not self.detected:
            raise MediaError(self.path, "no_face", f"no face detected in any of {self.n_known} frames")
        self._resolve(final=True)

    def _detect(self) -> None:
        if not self.pending:
            return
        ids = [j for j, _ in self.pending]
        frames = np.stack([f for _, f in self.pending])
        dets = self.cropper.detector.detect(frames)
        self.n_detector_calls += 1
        self.n_detected_frames += len(ids)
        if len(dets) != len(ids):
            raise RuntimeError(f"detector returned {len(dets)} results for {len(ids)} frames")
        for (j, frame), d in zip(self.pending, dets):
            if len(d):
                self.boxes[j] = d[0, :4]                            # highest score first
                self.detected.append(j)
                self._set(j, _crop(frame, self.boxes[j], self.cropper))
            else:
                self.waiting[j] = frame
        self.n_known = ids[-1] + 1
        self.pending = []
        self._note_peak()

    def _set(self, j: int, crop: np.ndarray | None) -> None:
        self.crops[j] = crop
        self.done[j] = True
        if crop is not None and j in self.keep:
            self.samples[j] = crop
        while self.prefix < self.n and self.done[self.prefix]:
            self.prefix += 1

    def _resolve(self, final: bool) -> None:
        t = self.times
        horizon = math.inf if final else t[self.n_known - 1]
        gap = self.cropper.max_gap_s
        for j in sorted(self.waiting):
            k = bisect.bisect_left(self.detected, j)
            prev = self.detected[k - 1] if k > 0 else None
            nxt = self.detected[k] if k < len(self.detected) else None
            d_prev = t[j] - t[prev] if prev is not None else math.inf
            d_next = t[nxt] - t[j] if nxt is not None else math.inf
            if nxt is not None or horizon >= t[j] + d_prev - 1e-9:
                source, dist = (prev, d_prev) if d_prev <= d_next else (nxt, d_next)
            elif gap is not None and horizon > t[j] + gap + 1e-9:
                source, dist = None, math.inf              # any later detection is too far as well
            else:
                continue                                   # a nearer detection may still come
            frame = self.waiting.pop(j)
            if source is None or (gap is not None and dist > gap + 1e-9):
                self._set(j, None)
            else:
                self.n_filled += 1
                self._set(j, _crop(frame, self.boxes[source], self.cropper))

    def release_below(self, j: int) -> None:
        """Forget the crops of frames before `j` (no window in flight needs them)."""
        for i in [i for i in self.crops if i < j]:
            del self.crops[i]


# --------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------


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
            ``read_error``, ``audio_padded``, ``truncated``.
        error: None, or the failure reason ("no_face", "not_found", "unreadable", ...).
        error_detail: free text for people.
        seconds: wall time spent on the video.
        duration_s: the video's duration (probe), when known.
        window_s: window length in seconds.
        aggregate: the aggregation rule used.
        category: the manifest category, when known.
        extra: other manifest columns (``group``, ``split``, dataset-specific ones).
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
    category: str = ""
    extra: dict[str, str] = field(default_factory=dict)
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
               "flags", "error", "error_detail", "seconds", "window_starts", "window_logits")


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
        _num(p.duration_s), _num(p.window_s), p.aggregate, ";".join(p.flags), p.error or "", p.error_detail,
        f"{p.seconds:.3f}", ";".join(repr(float(s)) for s in p.window_starts),
        ";".join(repr(float(x)) for x in p.window_logits), *(p.extra.get(k, "") for k in extra),
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
                    category=r.get("category") or "", extra={c: r[c] for c in extra_cols if r[c]},
                ))
            except ValueError as err:
                raise ValueError(f"{path}: row {i} ({r.get('path')!r}): {err}") from None
    return out


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


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
    from havic.data.manifest import read_manifest

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


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


@dataclass
class ScoreStats:
    """Instrumentation of the last scored video.

    Attributes:
        n_frames: distinct frame times decoded (the union over windows).
        n_detected_frames: frames passed to the face detector (each once).
        n_detector_calls: detector batches.
        peak_frames_held: most frames (full frames awaiting detection or a neighbour's box, plus
            crops of windows in flight) held at once.
        n_batches: model forward passes.
    """

    n_frames: int = 0
    n_detected_frames: int = 0
    n_detector_calls: int = 0
    peak_frames_held: int = 0
    n_batches: int = 0


class VideoScorer:
    """Scores whole videos with sliding windows (see the module docstring).

    Args:
        model: a detector (:func:`load_detector`), in eval mode.
        cfg: its resolved configuration (``data.clip_seconds``, ``data.fps``, ``data.audio``,
            ``data.face.batch_size``, ``model.*`` input sizes).
        cropper: the face cropper (default: :func:`build_cropper` of `cfg`); its crop size must be
            ``model.video.image_size``.
        batch_size: windows per forward pass.
        aggregate: "mean" (official), "max" or "lse" (:func:`havic.metrics.aggregate_windows`).
        hop_s: distance between window starts (official: 0.4 s = 2 frames at 5 fps).
        max_seconds: score only the first seconds of each video (flag ``truncated``); None = all.
        device: where the model runs (default: where its parameters are).
        n_samples: face crops kept per video for reports (0: none).
        precision: "fp32", or "bf16" / "fp16" (CUDA only): the model runs under autocast with its
            matmul weights stored in that dtype (:mod:`havic.precision`; changes ``model`` in place).
            Faces, audio features and the aggregation stay float32.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: DictConfig,
        cropper: FaceCropper | None = None,
        *,
        batch_size: int = 8,
        aggregate: str = "mean",
        hop_s: float = 0.4,
        max_seconds: float | None = None,
        device: str | torch.device | None = None,
        n_samples: int = 0,
        precision: str = "fp32",
    ) -> None:
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate={aggregate!r}: expected one of {AGGREGATIONS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if hop_s <= 0 or (max_seconds is not None and max_seconds <= 0):
            raise ValueError(f"hop_s and max_seconds must be positive, got {hop_s}, {max_seconds}")
        self.cropper = cropper if cropper is not None else build_cropper(cfg)
        size = int(cfg.model.video.image_size)
        if self.cropper.size != size:
            raise ValueError(f"the cropper makes {self.cropper.size} px crops, the model takes {size} px")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.precision = precision
        self.model = prepare_for_inference(model, precision, self.device)
        self.cfg = cfg
        self.window_s = float(cfg.data.clip_seconds)
        self.fps = float(cfg.data.fps)
        self.num_frames = int(cfg.model.video.num_frames)
        self.features = audio_features(cfg)
        self.detect_batch = int(cfg.data.face.batch_size)
        self.batch_size = int(batch_size)
        self.aggregate = aggregate
        self.hop_s = float(hop_s)
        self.max_seconds = max_seconds
        self.n_samples = int(n_samples)
        self.has_video_head = getattr(model, "video_head", None) is not None
        self.stats = ScoreStats()

    # -- public ---------------------------------------------------------------------------------

    def score(self, file: str | os.PathLike, item: InferenceItem | None = None) -> VideoPrediction:
        """Score one video; every failure becomes an error row (see :class:`VideoPrediction`)."""
        item = item if item is not None else InferenceItem(str(file), Path(file))
        pred = VideoPrediction(path=item.path, label=item.label, category=item.category, extra=dict(item.extra),
                               window_s=self.window_s, aggregate=self.aggregate)
        t0 = time.perf_counter()
        self.stats = ScoreStats()
        try:
            self._score(Path(file), pred)
        except MediaError as err:
            pred.error, pred.error_detail = err.reason, err.detail
        except Exception as err:  # noqa: BLE001 - one bad video must not end a job over many videos
            log.exception("%s: unexpected error while scoring", item.path)
            pred.error, pred.error_detail = "error", f"{type(err).__name__}: {err}"
        if pred.error:
            pred.score = pred.logit = None
            pred.sample_crops, pred.sample_times = [], []
            log.debug("%s: %s (%s)", item.path, pred.error, pred.error_detail)
        pred.seconds = time.perf_counter() - t0
        return pred

    def score_many(self, items: Iterable[InferenceItem]) -> Iterator[VideoPrediction]:
        """:meth:`score` for each item, in order."""
        for item in items:
            yield self.score(item.file, item)

    # -- one video ------------------------------------------------------------------------------

    def _frame_times(self, starts: list[float], end: float, padded: bool) -> list[np.ndarray]:
        """(F,) frame times of each window."""
        k = np.arange(self.num_frames)
        if padded:
            from havic.data.video import sample_times

            have = sample_times(end, self.fps)
            have = have if have.size else np.zeros(1)
            return [have[k % have.size]]
        return [s + k / self.fps for s in starts]

    def _audio(self, file: Path, info: Any, starts: list[float], end: float, padded: bool,
               flags: list[str], stats: Any) -> WindowAudio | None:
        """The windows' audio, or None (flag ``no_audio``) without a usable track."""
        from havic.data.video import read_audio

        sr = self.features.sample_rate
        try:
            wave = read_audio(file, sr, stats=stats) if info.has_audio else None
        except MediaError as err:
            if err.reason != "corrupt":
                raise
            # The pictures alone can still be judged, by the video head: say so instead of failing.
            log.warning("%s: audio track unreadable (%s); scored without audio", file, err.detail)
            flags.append("audio_corrupt")
            wave = None
        if wave is not None and wave.size < self.features.window_samples:
            log.warning("%s: audio track of %d samples is shorter than one fbank frame; scored without audio",
                        file, 0 if wave is None else wave.size)
            wave = None
        if wave is None:
            flags.append("no_audio")
            return None
        clip = round(self.window_s * sr)
        if padded:
            # Loop the available audio to one window, as the frames are repeated.
            wave = np.resize(wave[: max(round(end * sr), self.features.window_samples)], clip)
        else:
            need = round((starts[-1] + self.window_s) * sr)
            if wave.size < need:
                if need - wave.size > self.features.shift_samples:
                    flags.append("audio_padded")
                wave = np.pad(wave, (0, need - wave.size))
        return WindowAudio(wave, self.features, self.window_s)

    def _score(self, file: Path, pred: VideoPrediction) -> None:
        from havic.data.video import DecodeStats, iter_frames_at, probe

        info = probe(file)
        duration = info.duration
        if not math.isfinite(duration) or duration <= 0:
            raise MediaError(file, "no_duration", f"probe found no usable duration ({duration})")
        pred.duration_s = float(duration)
        flags = pred.flags
        end = duration
        if self.max_seconds is not None and duration > self.max_seconds + _TIME_EPS:
            end = float(self.max_seconds)
            flags.append("truncated")
        starts = plan_windows(end, self.window_s, self.hop_s)
        padded = end < self.window_s - _TIME_EPS
        if padded:
            flags.append("padded")
        if not self.has_video_head and not info.has_audio:
            raise MediaError(file, "no_audio", "the video has no audio and the model has no auxiliary video head")

        astats, vstats = DecodeStats(), DecodeStats()
        audio = self._audio(file, info, starts, end, padded, flags, astats)
        if audio is None and not self.has_video_head:
            raise MediaError(file, "no_audio", "unusable audio track and the model has no auxiliary video head")

        # The union of all windows' frame times, keyed in microseconds so shared frames coincide.
        per_window = self._frame_times(starts, end, padded)
        keys = [np.round(t * 1e6).astype(np.int64) for t in per_window]
        union = np.unique(np.concatenate(keys))
        times = union / 1e6
        ids = [np.searchsorted(union, k) for k in keys]
        first_needed = [int(i.min()) for i in ids]
        last_needed = [int(i.max()) for i in ids]
        samples = np.linspace(0, times.size - 1, self.n_samples).round().astype(int) if self.n_samples else []
        track = _FaceTrack(self.cropper, times, str(file), self.detect_batch, keep=samples)
        self.stats.n_frames = int(times.size)

        logits: list[float] = []
        scored: list[float] = []
        n_skipped = 0
        queue: list[int] = []
        next_window = 0

        def run(batch: list[int]) -> None:
            nonlocal n_skipped
            usable = [w for w in batch if all(track.crops[j] is not None for j in ids[w])]
            n_skipped += len(batch) - len(usable)
            if usable:
                video = torch.from_numpy(np.stack([np.stack([track.crops[j] for j in ids[w]]) for w in usable]))
                video = video.permute(0, 4, 1, 2, 3).to(self.device, torch.float32).div_(255.0)  # (B, 3, F, S, S)
                aud = audio.inputs([starts[w] for w in usable]).to(self.device) if audio is not None else None
                with torch.inference_mode(), autocast(self.device.type, self.precision):
                    out = self.model(video, aud)
                self.stats.n_batches += 1
                logits.extend(out.logit.float().cpu().tolist())
                scored.extend(starts[w] for w in usable)
            # Crops before the first frame of the next unscored window are needed no more.
            track.release_below(first_needed[batch[-1] + 1] if batch[-1] + 1 < len(starts) else times.size)

        def drain(final: bool) -> None:
            nonlocal next_window
            while next_window < len(starts) and last_needed[next_window] < track.prefix:
                queue.append(next_window)
                next_window += 1
            while len(queue) >= self.batch_size or (final and queue):
                batch = queue[: self.batch_size]
                del queue[: self.batch_size]
                run(batch)

        frames = iter_frames_at(file, times, size=(info.width, info.height), stats=vstats)
        try:
            for j, (_, frame) in enumerate(frames):
                track.push(j, frame)
                drain(final=False)
        finally:
            frames.close()
        if track.n_known + len(track.pending) < times.size:
            raise MediaError(file, "no_frames", f"the decoder delivered {track.n_known} of {times.size} frames")
        track.finish()
        drain(final=True)

        self.stats.n_detected_frames = track.n_detected_frames
        self.stats.n_detector_calls = track.n_detector_calls
        self.stats.peak_frames_held = track.peak_held
        if track.n_filled:
            flags.append("filled_frames")
        if n_skipped:
            flags.append("skipped_windows")
        if vstats.n_corrupt_packets or astats.n_corrupt_packets:
            flags.append("corrupt_packets")
        if vstats.n_read_errors or astats.n_read_errors:
            flags.append("read_error")
        if not logits:
            raise MediaError(file, "no_face", f"every one of {len(starts)} windows has frames without a face "
                                              f"within data.face.max_gap_s={self.cropper.max_gap_s} s")
        pred.window_starts, pred.window_logits, pred.n_windows = scored, logits, len(logits)
        pred.logit = aggregate_windows(logits, self.aggregate)
        pred.score = sigmoid(pred.logit)
        pred.sample_times = [float(times[j]) for j in sorted(track.samples)]
        pred.sample_crops = [track.samples[j] for j in sorted(track.samples)]


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------


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
    threshold: float = 0.5,
) -> list[VideoPrediction]:
    """Score `items` into a predictions CSV (and JSON, and a picture report), resumably.

    The CSV is rewritten atomically every `flush_every` videos and when the job ends or is
    interrupted, so an interrupted job keeps what it scored; with `resume` the rows of an existing
    CSV are kept and their paths are not scored again.

    Returns:
        All rows: those of `items` in input order (kept or new), then kept rows of other paths.
    """
    from tqdm import tqdm

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
        from havic.report import write_index, write_video_report

        Path(report_dir).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True)
    n_failed = 0
    try:
        for k, pred in enumerate(scorer.score_many(todo), start=1):
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
    from collections import Counter

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
