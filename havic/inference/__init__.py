"""Whole-video scoring with sliding windows, without the official pipeline's losses.

See docs/official-differences.md#sliding-window-inference.

Per video (:class:`~havic.inference.scorer.VideoScorer`):

1. probe; plan windows of ``data.clip_seconds`` every ``infer.hop_s`` seconds
   (:func:`~havic.inference.windows.plan_windows`) covering the whole video (the official code used
   only the first 10 s: ``infer.max_seconds`` does that on request, and flags the video ``truncated``);
2. decode the video once, streaming, at the union of the windows' frame times (window start +
   k / ``data.fps``, the grid of the training clips); every decoded frame goes through the face
   detector once and is cropped once, however many windows share it, with the training crop rule
   (``data.face.*``, same margin: :class:`~havic.data.face.FaceTrack`); frames without a face borrow
   the box of the nearest detected frame in the whole video within ``data.face.max_gap_s`` (flag
   ``filled_frames``); a window with a frame beyond that gap is skipped (flag ``skipped_windows``)
   instead of dropping the video;
3. decode the audio once; its fbank is computed once for the whole track and sliced per window
   (:class:`~havic.inference.windows.WindowAudio`); a video without audio is scored by the auxiliary
   video head (paper D.2, flag ``no_audio``);
4. windows are scored in batches of ``infer.batch_size`` as soon as their frames are cropped
   (:class:`~havic.inference.scorer.WindowBatcher`), so only the crops of the windows in flight are
   held (never all frames of a long video); the video logit aggregates the window logits
   (:func:`havic.metrics.aggregate_windows`, ``infer.aggregate``: ``mean`` official, ``max``,
   ``lse``) and the score is its sigmoid (1 = fake).

A video shorter than one window is not dropped (the official code skipped it): its frames are
repeated in order (frame times ``t_(k mod n)`` of the ``n`` frames it has) and its audio is looped
to one window (flag ``padded``). Failures never stop a batch job (:mod:`havic.inference.jobs`): the
video gets an error row with the :class:`~havic.data.errors.MediaError` reason (``not_found``,
``unreadable``, ``no_video_stream``, ``no_frames``, ``no_face`` ...) or ``error`` for an unexpected
exception. Rows are :class:`~havic.predictions.VideoPrediction`.

This is the ``corrected`` preset. The ``official`` preset (``infer.preset=official``) rebuilds the
official script's windows instead, to reproduce its published numbers:
:mod:`~havic.inference.official_mode`. Every row names its preset.

Modules: :mod:`~havic.inference.windows` (window plan and audio inputs),
:mod:`~havic.inference.official_mode` (the official preset's frames, windows and audio),
:mod:`~havic.inference.scorer` (one video), :mod:`~havic.inference.jobs` (many videos, files, report).
"""
from havic.checkpoints import load_detector, official_kind
from havic.inference.jobs import (
    VIDEO_EXTENSIONS,
    InferenceItem,
    collect_inputs,
    infer_overrides,
    run_inference,
    score_items,
    summary_text,
)
from havic.inference.scorer import ScoreStats, VideoScorer, WindowBatcher, build_cropper
from havic.inference.windows import WindowAudio, audio_features, frame_union, plan_windows, window_frame_times
from havic.predictions import (
    CSV_COLUMNS,
    VideoPrediction,
    read_predictions,
    write_predictions_csv,
    write_predictions_json,
)

__all__ = [
    "CSV_COLUMNS",
    "InferenceItem",
    "ScoreStats",
    "VIDEO_EXTENSIONS",
    "VideoPrediction",
    "VideoScorer",
    "WindowAudio",
    "WindowBatcher",
    "audio_features",
    "build_cropper",
    "collect_inputs",
    "frame_union",
    "infer_overrides",
    "load_detector",
    "official_kind",
    "plan_windows",
    "read_predictions",
    "run_inference",
    "score_items",
    "summary_text",
    "window_frame_times",
    "write_predictions_csv",
    "write_predictions_json",
]
