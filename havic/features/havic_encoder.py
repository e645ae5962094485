"""Frozen HAVIC features: per 0.4 s segment (or per window) means of every tap and of the fused streams.

Streams, for taps ``model.taps`` (3, 6, 9, 12 at full size): ``havic/video/<tap>``,
``havic/audio/<tap>`` (the encoder's normalised block outputs) and ``havic/video/fusion``,
``havic/audio/fusion`` (the interaction module's outputs). Both a pretraining export and a
fine-tuned detector work: only the encoders and the fusion run, never the heads.

``mode="segments"`` (the default; 2.5 Hz at full size):

* windows of ``data.clip_seconds`` (3.2 s) do not overlap: they start at 0, 3.2, 6.4, ...
  (:func:`havic.inference.plan_windows` with a hop of one window);
* each window's tokens are split into its ``model.num_segments`` segments with the grids'
  ``segment_ids`` (:mod:`havic.models.patching`) and mean-pooled; the per-segment CLS tokens are
  left out of the mean (only patch tokens, as the pretraining segment contrast pools them);
* the video gets ``ceil(duration / segment_s)`` rows; row ``i`` stands for
  ``[i * segment_s, (i + 1) * segment_s)``;
* the last partial window: when the windows leave a tail, one more window ending at the video's
  end is run and only its last segments, the ones not already covered, are kept. They end at the
  video's end, so they sit up to one segment earlier than their rows' nominal times
  (``meta.tail_shift_s`` says by how much);
* a video shorter than one window is padded like :mod:`havic.inference` pads it (frames repeated
  in order, audio looped) and keeps its first ``ceil(duration / segment_s)`` segments.

``mode="windows"``: one vector per window per stream (the mean of all its patch tokens), windows
every ``hop_s`` (0.4 s) on the hop grid (no extra window at the end); row ``t`` is the window
starting at ``t * hop_s``.

Frames are decoded once and face-cropped once (:class:`~havic.data.face.FaceTrack`, the training
crop rule) and windows run in batches as soon as their crops exist
(:class:`~havic.inference.WindowBatcher`), so long videos stream. A window with a frame beyond
``data.face.max_gap_s`` from any detected face gets NaN rows (``meta.nan_rows`` counts them).
With the official audio token order (``model.audio_token_order=mel``) the audio "segments" are
mel bands, not time spans: the audio and fused-audio streams are then left out in segments mode.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from havic.checkpoints import fresh_model, load_with_report, read_weights
from havic.config import merge_config, split_items
from havic.data.audio import AudioFeatures
from havic.data.errors import MediaError
from havic.data.face import FaceCropper, FaceTrack
from havic.data.video import probe, read_audio
from havic.features.align import segment_means
from havic.features.extractor import Extractor, weights_fingerprint
from havic.features.records import FeatureSequence
from havic.inference import WindowAudio, WindowBatcher, build_cropper, frame_union, plan_windows, window_frame_times
from havic.inference.scorer import stream_windows
from havic.inference.windows import TIME_EPS
from havic.models import build_model
from havic.precision import autocast, prepare_for_inference

__all__ = ["HAVIC_MODES", "FeatureBatcher", "HavicExtractor"]

log = logging.getLogger(__name__)

HAVIC_MODES = ("segments", "windows")


class FeatureBatcher(WindowBatcher):
    """A :class:`~havic.inference.WindowBatcher` whose windows give pooled features instead of logits.

    ``logits`` holds, per encoded window, ``{stream: (S, D) or (D,)}`` (CPU float32); the streaming,
    batching and crop release are the scorer's.
    """

    def __init__(self, *args: Any, pool: str, streams: Sequence[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool, self.streams = pool, set(streams)

    def _forward(self, windows: list[int]) -> list[dict[str, Tensor]]:  # type: ignore[override]
        crops, m = self.track.crops, self.model
        video = torch.from_numpy(np.stack([np.stack([crops[j] for j in self.frame_ids[w]]) for w in windows]))
        video = video.permute(0, 4, 1, 2, 3).to(self.device, torch.float32).div_(255.0)  # (B, 3, F, S, S)
        audio = self.audio.inputs([self.starts[w] for w in windows]).to(self.device)
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            v_enc, a_enc = m.video_encoder(video), m.audio_encoder(audio)
            v_fused, a_fused = m.fuse(v_enc, a_enc)
            tokens = {f"havic/video/{t}": v_enc.patches(t) for t in m.taps}
            tokens |= {f"havic/audio/{t}": a_enc.patches(t) for t in m.taps}
            tokens |= {"havic/video/fusion": v_fused, "havic/audio/fusion": a_fused}
            pooled = {}
            for name, x in tokens.items():
                if name not in self.streams:
                    continue
                if self.pool == "windows":
                    pooled[name] = x.float().mean(dim=1)
                else:
                    grid = m.video_grid if name.startswith("havic/video") else m.audio_grid
                    pooled[name] = segment_means(x.float(), grid.segment_ids(), m.num_segments)
        self.n_batches += 1
        return [{k: v[i].cpu() for k, v in pooled.items()} for i in range(len(windows))]


class HavicExtractor(Extractor):
    """HAVIC encoder features of whole videos (see the module docstring).

    Args:
        weights: a weights file of this project (pretraining export or detector) or a Lightning
            checkpoint (:func:`havic.checkpoints.read_weights`).
        config_overrides: YAML files and ``key=value`` items merged over the stored configuration
            (e.g. ``data.face.detector=haar``).
        mode: "segments" or "windows".
        hop_s: window hop of the "windows" mode (default ``infer.hop_s``).
        cropper: the face cropper (default: :func:`havic.inference.build_cropper` of the configuration).
        device, precision, batch_size: see :class:`Extractor` (batch_size: windows per pass).
    """

    name = "havic"

    def __init__(self, weights: str | os.PathLike, *, config_overrides: Sequence[str] = (), mode: str = "segments",
                 hop_s: float | None = None, cropper: FaceCropper | None = None, device: str | torch.device = "cpu",
                 precision: str = "fp32", batch_size: int = 8, random_init: int | None = None) -> None:
        super().__init__(device, precision, batch_size)
        if mode not in HAVIC_MODES:
            raise ValueError(f"mode={mode!r}: expected one of {HAVIC_MODES}")
        self.weights_path = Path(weights)
        w = read_weights(self.weights_path)
        self.cfg = merge_config(w.config, *split_items(config_overrides))
        self.random_init = random_init
        if random_init is None:
            model = build_model(self.cfg.model, w.kind)
            load_with_report(model, w.state_dict)
        else:  # the shortcut baseline: the same network and pipeline, freshly initialised from the seed
            model = fresh_model(merge_config(self.cfg, overrides=[f"seed={random_init}"]), w.kind)
        self.kind = w.kind
        self.model = prepare_for_inference(model, precision, self.device)
        self.mode = mode
        self.window_s = float(self.cfg.data.clip_seconds)
        self.hop_s = float(self.cfg.infer.hop_s if hop_s is None else hop_s)
        if self.hop_s <= 0:
            raise ValueError(f"hop_s must be positive, got {self.hop_s}")
        self.fps = float(self.cfg.data.fps)
        self.num_frames = int(self.cfg.model.video.num_frames)
        self.num_segments = int(self.cfg.model.num_segments)
        self.segment_s = self.window_s / self.num_segments
        self.features = AudioFeatures.from_config(self.cfg)
        self.cropper = cropper if cropper is not None else build_cropper(self.cfg)
        if self.cropper.size != int(self.cfg.model.video.image_size):
            raise ValueError(f"the cropper makes {self.cropper.size} px crops, the model takes "
                             f"{self.cfg.model.video.image_size} px")
        self.streams = self._streams()
        self.fingerprint = weights_fingerprint([self.weights_path])
        if random_init is not None:
            self.fingerprint = f"random-init:{random_init}:{self.fingerprint}"

    def _streams(self) -> list[str]:
        taps = self.model.taps
        video = [f"havic/video/{t}" for t in taps] + ["havic/video/fusion"]
        audio = [f"havic/audio/{t}" for t in taps] + ["havic/audio/fusion"]
        if self.mode == "segments" and self.cfg.model.audio_token_order != "time":
            log.warning("%s: audio tokens in mel order: audio segments are mel bands, not time spans; the audio "
                        "streams are left out", self.weights_path)
            audio = []
        return video + audio

    def settings(self) -> dict[str, Any]:
        face = self.cfg.data.face
        return {
            "extractor": self.name, "weights": self.weights_path.name, "fingerprint": self.fingerprint,
            "kind": self.kind, "random_init": self.random_init, "mode": self.mode, "streams": ",".join(self.streams),
            "rate_hz": self.rate_hz, "window_s": self.window_s, "hop_s": self.hop_s if self.mode == "windows" else None,
            "num_segments": self.num_segments, "fps": self.fps, "pool": "mean of patch tokens, CLS excluded",
            "face.detector": str(face.detector), "face.margin": float(face.margin), "face.square": bool(face.square),
            "face.max_gap_s": None if face.max_gap_s is None else float(face.max_gap_s),
            "audio_token_order": str(self.cfg.model.audio_token_order), "precision": self.precision,
        }

    @property
    def rate_hz(self) -> float:
        return 1.0 / (self.segment_s if self.mode == "segments" else self.hop_s)

    def _starts(self, end: float) -> list[float]:
        if self.mode == "segments":
            return plan_windows(end, self.window_s, self.window_s)
        starts = plan_windows(end, self.window_s, self.hop_s)
        on_grid = [s for s in starts if abs(s / self.hop_s - round(s / self.hop_s)) < TIME_EPS]
        return on_grid or starts[:1]

    def _audio(self, file: Path, has_audio: bool, starts: list[float], end: float, padded: bool) -> WindowAudio:
        """The windows' audio: padded with silence to the last window, or looped to one window when `padded`."""
        sr = self.features.sample_rate
        wave = read_audio(file, sr) if has_audio else None
        if wave is None or wave.size < self.features.window_samples:
            raise MediaError(file, "no_audio", "HAVIC features need the audio track")
        clip = round(self.window_s * sr)
        if padded:
            wave = np.resize(wave[: max(round(end * sr), self.features.window_samples)], clip)
        else:
            need = round((starts[-1] + self.window_s) * sr)
            wave = np.pad(wave, (0, max(0, need - wave.size)))
        return WindowAudio(wave, self.features, self.window_s)

    def extract(self, file: str | os.PathLike) -> list[FeatureSequence]:
        file = Path(file)
        info = probe(file)
        end = float(info.duration)
        if not math.isfinite(end) or end <= 0:
            raise MediaError(file, "no_duration", f"probe found no usable duration ({end})")
        starts = self._starts(end)
        padded = end < self.window_s - TIME_EPS
        audio = self._audio(file, info.has_audio, starts, end, padded)
        times, frame_ids = frame_union(window_frame_times(starts, end, self.num_frames, self.fps, padded))
        track = FaceTrack(self.cropper, times, str(file), int(self.cfg.data.face.batch_size))
        batcher = FeatureBatcher(self.model, track, starts, frame_ids, audio, self.batch_size, self.device,
                                 self.precision, pool=self.mode, streams=self.streams)
        batcher.progress = self.progress
        stream_windows(file, info, times, track, batcher)
        if not batcher.logits:
            raise MediaError(file, "no_face", f"every one of {len(starts)} windows has frames without a face")
        by_start = dict(zip(batcher.scored, batcher.logits))
        pooled = [by_start.get(s) for s in starts]
        if self.mode == "segments":
            return self._segment_sequences(pooled, starts, end)
        return self._window_sequences(pooled, starts)

    def _segment_sequences(self, pooled: list[dict[str, Tensor] | None], starts: list[float],
                           end: float) -> list[FeatureSequence]:
        """Place each window's segments on the rows of the video (see the module docstring)."""
        s, seg = self.num_segments, self.segment_s
        n_rows = max(1, math.ceil(end / seg - TIME_EPS))
        dim = int(self.cfg.model.dim)
        values = {k: torch.full((n_rows, dim), float("nan")) for k in self.streams}
        covered, tail_shift = 0, 0.0
        for start, feats in zip(starts, pooled):
            regular = abs(start - covered * seg) < TIME_EPS
            take = min(s, n_rows - covered) if regular else n_rows - covered
            first = 0 if regular else s - take          # the tail window keeps its last segments
            if not regular:
                tail_shift = round(covered * seg - (start + first * seg), 6)
            if feats is not None:
                for k in self.streams:
                    values[k][covered: covered + take] = feats[k][first: first + take]
            covered += take
        return [self._record(k, v, tail_shift_s=tail_shift) for k, v in values.items()]

    def _window_sequences(self, pooled: list[dict[str, Tensor] | None], starts: list[float]) -> list[FeatureSequence]:
        dim = int(self.cfg.model.dim)
        nan = torch.full((dim,), float("nan"))
        return [self._record(f"{k}/window", torch.stack([nan if p is None else p[k] for p in pooled]))
                for k in self.streams]

    def _record(self, name: str, values: Tensor, **meta: Any) -> FeatureSequence:
        modality = "audio-visual" if "/fusion" in name else ("video" if "/video/" in name else "audio")
        nan_rows = int(torch.isnan(values).any(dim=1).sum())
        return FeatureSequence(name, values, self.rate_hz, modality, 0.0,
                               {"window_s": self.window_s, "nan_rows": nan_rows, **meta})
