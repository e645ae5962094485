"""Scoring one whole video: decode once, crop faces once, score windows in batches, aggregate.

:class:`VideoScorer` holds the model and the scoring settings (``infer.*`` of the configuration
unless given) and turns a video file into a :class:`~havic.predictions.VideoPrediction`;
:class:`WindowBatcher` is its streaming step, scoring windows as soon as their frames are cropped.
The whole procedure is described in :mod:`havic.inference`.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from havic.config import CHOICES
from havic.data.audio import AudioFeatures
from havic.data.errors import MediaError
from havic.data.face import FaceCropper, FaceTrack
from havic.data.preprocess import PreprocessSettings
from havic.data.video import DecodeStats, VideoInfo, decode_flags, iter_frames_at, probe, read_audio
from havic.inference.official_mode import (
    OFFICIAL_MARGIN,
    OFFICIAL_MAX_SECONDS,
    OfficialPlan,
    OfficialWindowAudio,
    official_audio_spans,
    official_stride,
    plan_official,
    wav16,
)
from havic.inference.windows import TIME_EPS, WindowAudio, frame_union, plan_windows, window_frame_times
from havic.metrics import AGGREGATIONS, aggregate_windows, sigmoid
from havic.precision import autocast, prepare_for_inference
from havic.predictions import VideoPrediction

__all__ = ["ScoreStats", "VideoScorer", "WindowBatcher", "build_cropper", "stream_windows"]

log = logging.getLogger(__name__)


def stream_windows(file: Path, info: VideoInfo, times: np.ndarray, track: FaceTrack, batcher: WindowBatcher,
                   stats: DecodeStats | None = None) -> None:
    """Decode the frames at `times` once, feeding `track` and letting `batcher` process each ready window.

    Shared by scoring and feature extraction: both stream a video through a face track and a window
    batcher, so only the windows in flight hold frames.

    Raises:
        MediaError: ``no_frames`` when the decoder delivers fewer frames than asked for.
    """
    frames = iter_frames_at(file, times, size=(info.width, info.height), stats=stats)
    try:
        for j, (_, frame) in enumerate(frames):
            track.push(j, frame)
            batcher.advance()
    finally:
        frames.close()
    if track.n_pushed < times.size:
        raise MediaError(file, "no_frames", f"the decoder delivered {track.n_known} of {times.size} frames")
    track.finish()
    batcher.advance(final=True)


def build_cropper(cfg: DictConfig) -> FaceCropper:
    """The face detector and cropper of ``data.face`` at ``model.video.image_size`` (as preprocessing).

    With ``infer.preset=official`` the crops take the official script's margin, 1.0, not square.
    """
    settings = PreprocessSettings.from_config(cfg)
    if cfg.infer.preset == "official":
        settings = replace(settings, margin=OFFICIAL_MARGIN, square=False)
    return settings.build_cropper()


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


class WindowBatcher:
    """Scores the windows of one video in batches, each as soon as all its frames are cropped.

    Windows become ready in start order, when the face track has resolved their last frame; ready
    windows wait in a queue until a batch is full (or the video has ended). A window with a frame
    that has no crop (no face within ``max_gap_s``) is skipped. After each batch the crops before
    the first frame of the next window are released, so only the windows in flight hold crops.

    Args:
        model: the detector, prepared for `precision` on `device`.
        track: the video's face track (frames pushed by the caller).
        starts: (W,) window starts in seconds.
        frame_ids: per window, its (F,) indices into the track's frames.
        audio: the windows' audio inputs, or None (scored by the video head).
        batch_size: windows per forward pass.
        device, precision: where and how the model runs.

    Attributes:
        logits: the logit of every scored window, in start order.
        scored: their starts.
        n_skipped: windows skipped for a frame without a face.
        n_batches: forward passes run.
    """

    def __init__(self, model: nn.Module, track: FaceTrack, starts: Sequence[float], frame_ids: Sequence[np.ndarray],
                 audio: WindowAudio | None, batch_size: int, device: torch.device, precision: str) -> None:
        self.model, self.track, self.starts, self.frame_ids, self.audio = model, track, starts, frame_ids, audio
        self.batch_size, self.device, self.precision = batch_size, device, precision
        self.first_needed = [int(i.min()) for i in frame_ids]
        self.last_needed = [int(i.max()) for i in frame_ids]
        self.queue: list[int] = []
        self.next_window = 0
        self.logits: list[float] = []
        self.scored: list[float] = []
        self.n_skipped = 0
        self.n_batches = 0
        self.progress: Callable[[int, int], None] | None = None  # (windows done, planned) after each batch

    def advance(self, final: bool = False) -> None:
        """Queue the windows that became ready and score every full batch (every queued window if `final`)."""
        while self.next_window < len(self.starts) and self.last_needed[self.next_window] < self.track.prefix:
            self.queue.append(self.next_window)
            self.next_window += 1
        while len(self.queue) >= self.batch_size or (final and self.queue):
            batch = self.queue[: self.batch_size]
            del self.queue[: self.batch_size]
            self._score_batch(batch)

    def _score_batch(self, batch: list[int]) -> None:
        crops = self.track.crops
        usable = [w for w in batch if all(crops[j] is not None for j in self.frame_ids[w])]
        self.n_skipped += len(batch) - len(usable)
        if usable:
            self.logits.extend(self._forward(usable))
            self.scored.extend(self.starts[w] for w in usable)
        after = batch[-1] + 1
        self.track.release_below(self.first_needed[after] if after < len(self.starts) else self.track.n)
        if self.progress is not None:
            self.progress(after, len(self.starts))

    def _forward(self, windows: list[int]) -> list[float]:
        """The logits of `windows`, whose frames all have crops."""
        crops = self.track.crops
        video = torch.from_numpy(np.stack([np.stack([crops[j] for j in self.frame_ids[w]]) for w in windows]))
        video = video.permute(0, 4, 1, 2, 3).to(self.device, torch.float32).div_(255.0)  # (B, 3, F, S, S)
        audio = None
        if self.audio is not None:
            audio = self.audio.inputs([self.starts[w] for w in windows]).to(self.device)
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            out = self.model(video, audio)
        self.n_batches += 1
        return out.logit.float().cpu().tolist()


class VideoScorer:
    """Scores whole videos with sliding windows (see :mod:`havic.inference`).

    Settings left as None are taken from the configuration's ``infer`` section.

    Args:
        model: a detector (:func:`havic.checkpoints.load_detector`), in eval mode.
        cfg: its resolved configuration (``data.clip_seconds``, ``data.fps``, ``data.audio``,
            ``data.face.batch_size``, ``model.*`` input sizes, ``infer.*``).
        cropper: the face cropper (default: :func:`build_cropper` of `cfg`); its crop size must be
            ``model.video.image_size``.
        batch_size: windows per forward pass.
        aggregate: "mean" (official), "max" or "lse" (:func:`havic.metrics.aggregate_windows`).
        hop_s: distance between window starts (official: 0.4 s = 2 frames at 5 fps).
        max_seconds: score only the first seconds of each video (flag ``truncated``); None here
            and in ``infer.max_seconds``: the whole video (10 s with the official preset).
        device: where the model runs (default: where its parameters are).
        n_samples: face crops kept per video for reports (0: none).
        precision: "fp32", or "bf16" / "fp16" (CUDA only): the model runs under autocast with its
            matmul weights stored in that dtype (:mod:`havic.precision`; changes ``model`` in place).
            Faces, audio features and the aggregation stay float32.
        preset: "corrected" (this project's pipeline, above) or "official": the official script's
            frames, windows and audio (:mod:`havic.inference.official_mode`); its cropper must crop
            with margin 1.0, not square (:func:`build_cropper` makes it).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: DictConfig,
        cropper: FaceCropper | None = None,
        *,
        batch_size: int | None = None,
        aggregate: str | None = None,
        hop_s: float | None = None,
        max_seconds: float | None = None,
        device: str | torch.device | None = None,
        n_samples: int = 0,
        precision: str | None = None,
        preset: str | None = None,
    ) -> None:
        infer = cfg.infer
        preset = infer.preset if preset is None else preset
        if preset not in CHOICES["infer.preset"]:
            raise ValueError(f"preset={preset!r}: expected one of {CHOICES['infer.preset']}")
        batch_size = int(infer.batch_size if batch_size is None else batch_size)
        aggregate = infer.aggregate if aggregate is None else aggregate
        hop_s = float(infer.hop_s if hop_s is None else hop_s)
        max_seconds = infer.max_seconds if max_seconds is None else max_seconds
        if preset == "official" and max_seconds is None:
            max_seconds = OFFICIAL_MAX_SECONDS
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
        if preset == "official" and (self.cropper.margin != OFFICIAL_MARGIN or self.cropper.square):
            raise ValueError(f"the official preset crops with margin {OFFICIAL_MARGIN}, not square; this cropper has "
                             f"margin {self.cropper.margin}, square={self.cropper.square}")
        self.preset = preset
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.precision = infer.precision if precision is None else precision
        self.model = prepare_for_inference(model, self.precision, self.device)
        self.cfg = cfg
        self.window_s = float(cfg.data.clip_seconds)
        self.fps = float(cfg.data.fps)
        self.num_frames = int(cfg.model.video.num_frames)
        self.features = AudioFeatures.from_config(cfg)
        self.detect_batch = int(cfg.data.face.batch_size)
        self.batch_size = batch_size
        self.aggregate = aggregate
        self.hop_s = hop_s
        self.max_seconds = max_seconds
        self.n_samples = int(n_samples)
        self.has_video_head = getattr(model, "video_head", None) is not None
        # havic.checkpoints.load_detector marks detectors whose heads were never trained: every row says so.
        self.heads_trained = bool(getattr(model, "heads_trained", True))
        self.progress: Callable[[int, int], None] | None = None  # (windows done, planned) within a video
        self.stats = ScoreStats()

    def score(self, file: str | os.PathLike, *, path: str | None = None, label: int | None = None,
              category: str = "", extra: Mapping[str, str] | None = None) -> VideoPrediction:
        """Score one video; every failure becomes an error row (see :class:`VideoPrediction`).

        Args:
            file: the video read.
            path: the name it is reported under (default: `file`); `label`, `category`, `extra`:
                manifest fields copied into the row.
        """
        pred = VideoPrediction(path=str(file) if path is None else path, label=label, category=category,
                               extra=dict(extra or {}), window_s=self.window_s, aggregate=self.aggregate,
                               preset=self.preset)
        t0 = time.perf_counter()
        self.stats = ScoreStats()
        try:
            self._score(Path(file), pred)
        except MediaError as err:
            pred.error, pred.error_detail = err.reason, err.detail
        except Exception as err:  # noqa: BLE001 - one bad video must not end a job over many videos
            log.exception("%s: unexpected error while scoring", pred.path)
            pred.error, pred.error_detail = "error", f"{type(err).__name__}: {err}"
        if not self.heads_trained:
            pred.flags.append("untrained_heads")
        if pred.error:
            pred.score = pred.logit = None
            pred.sample_crops, pred.sample_times = [], []
            log.debug("%s: %s (%s)", pred.path, pred.error, pred.error_detail)
        pred.seconds = time.perf_counter() - t0
        return pred

    # -- one video ------------------------------------------------------------------------------

    def _read_wave(self, file: Path, info: VideoInfo, flags: list[str], stats: DecodeStats,
                   trim: bool = True) -> np.ndarray | None:
        """The audio track (:func:`~havic.data.video.read_audio`), or None (flag ``no_audio``) without a usable one."""
        sr = self.features.sample_rate
        try:
            wave = read_audio(file, sr, stats=stats, trim=trim) if info.has_audio else None
        except MediaError as err:
            if err.reason != "corrupt":
                raise
            # The pictures alone can still be judged, by the video head: say so instead of failing.
            log.warning("%s: audio track unreadable (%s); scored without audio", file, err.detail)
            flags.append("audio_corrupt")
            wave = None
        if wave is not None and wave.size < self.features.window_samples:
            log.warning("%s: audio track of %d samples is shorter than one fbank frame; scored without audio",
                        file, wave.size)
            wave = None
        if wave is None:
            flags.append("no_audio")
        return wave

    def _audio(self, file: Path, info: VideoInfo, starts: list[float], end: float, padded: bool,
               flags: list[str], stats: DecodeStats) -> WindowAudio | None:
        """The windows' audio, or None (flag ``no_audio``) without a usable track."""
        wave = self._read_wave(file, info, flags, stats)
        if wave is None:
            return None
        sr = self.features.sample_rate
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

    def _official_plan(self, file: Path, info: VideoInfo, flags: list[str]) -> OfficialPlan | None:
        """The official script's frames and windows, or None (flag ``official_skips_short``) below one window."""
        if not (math.isfinite(info.fps) and info.fps > 0):
            raise MediaError(file, "no_frame_rate", "probe found no frame rate; the official preset picks frames "
                                                    "by their index")
        # The official script counts the decoded frames: the container's count, else duration x rate.
        n_video = info.n_frames or max(1, round(info.duration * info.fps))
        plan = plan_official(n_video, info.fps, step_s=1 / self.fps, num_frames=self.num_frames,
                             stride=official_stride(self.hop_s, self.fps),
                             max_frames=round(self.max_seconds * self.fps))
        if plan is None:
            flags.append("official_skips_short")
        elif plan.truncated:
            flags.append("truncated")
        return plan

    def _official_audio(self, file: Path, info: VideoInfo, plan: OfficialPlan, flags: list[str],
                        stats: DecodeStats) -> OfficialWindowAudio | None:
        """The official windows' audio: the untrimmed track through 16 bits, cut the official way; or None."""
        wave = self._read_wave(file, info, flags, stats, trim=False)
        if wave is None:
            return None
        spans = official_audio_spans(plan.frame_times.size, plan.n_timepoints, wave.size, self.num_frames, plan.stride)
        if spans[0][1] - spans[0][0] < self.features.window_samples:
            log.warning("%s: official audio windows of %d samples are shorter than one fbank frame; scored without "
                        "audio", file, spans[0][1] - spans[0][0])
            flags.append("no_audio")
            return None
        return OfficialWindowAudio(wav16(wave), self.features, plan.starts, spans)

    def _score(self, file: Path, pred: VideoPrediction) -> None:
        info = probe(file)
        duration = info.duration
        if not math.isfinite(duration) or duration <= 0:
            raise MediaError(file, "no_duration", f"probe found no usable duration ({duration})")
        pred.duration_s = float(duration)
        flags = pred.flags
        official = self._official_plan(file, info, flags) if self.preset == "official" else None
        if official is not None:
            starts, times, frame_ids = official.starts, official.frame_times, list(official.window_frames)
        else:
            end = duration
            if self.max_seconds is not None and duration > self.max_seconds + TIME_EPS:
                end = float(self.max_seconds)
                flags.append("truncated")
            starts = plan_windows(end, self.window_s, self.hop_s)
            padded = end < self.window_s - TIME_EPS
            if padded:
                flags.append("padded")
            times, frame_ids = frame_union(window_frame_times(starts, end, self.num_frames, self.fps, padded))
        if not self.has_video_head and not info.has_audio:
            raise MediaError(file, "no_audio", "the video has no audio and the model has no auxiliary video head")

        astats, vstats = DecodeStats(), DecodeStats()
        if official is not None:
            audio = self._official_audio(file, info, official, flags, astats)
        else:
            audio = self._audio(file, info, starts, end, padded, flags, astats)
        if audio is None and not self.has_video_head:
            raise MediaError(file, "no_audio", "unusable audio track and the model has no auxiliary video head")

        samples = np.linspace(0, times.size - 1, self.n_samples).round().astype(int) if self.n_samples else []
        track = FaceTrack(self.cropper, times, str(file), self.detect_batch, keep=samples)
        batcher = WindowBatcher(self.model, track, starts, frame_ids, audio, self.batch_size, self.device,
                                self.precision)
        batcher.progress = self.progress
        if self.progress is not None:
            self.progress(0, len(starts))
        self.stats.n_frames = int(times.size)
        stream_windows(file, info, times, track, batcher, stats=vstats)

        self.stats.n_detected_frames = track.n_detected_frames
        self.stats.n_detector_calls = track.n_detector_calls
        self.stats.peak_frames_held = track.peak_held
        self.stats.n_batches = batcher.n_batches
        if official is not None and len(track.detected) < times.size:
            flags.append("official_skips_no_face")        # a frame without its own face; the official script skips
        if track.n_filled:
            flags.append("filled_frames")
        if batcher.n_skipped:
            flags.append("skipped_windows")
        flags += decode_flags(vstats, astats)
        if not batcher.logits:
            raise MediaError(file, "no_face", f"every one of {len(starts)} windows has frames without a face "
                                              f"within data.face.max_gap_s={self.cropper.max_gap_s} s")
        pred.window_starts, pred.window_logits, pred.n_windows = batcher.scored, batcher.logits, len(batcher.logits)
        pred.logit = aggregate_windows(batcher.logits, self.aggregate)
        pred.score = sigmoid(pred.logit)
        pred.sample_times = [float(times[j]) for j in sorted(track.samples)]
        pred.sample_crops = [track.samples[j] for j in sorted(track.samples)]
