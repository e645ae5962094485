"""Offline preprocessing: the videos of a manifest become a clip cache (face crops + raw fbanks).

Per video (:func:`process_video`):

1. probe; plan non-overlapping clips of ``clip_seconds`` starting at 0 while
   ``start + clip_seconds <= duration`` (the remainder is dropped; a video shorter than one clip
   fails with ``too_short``; one exactly one clip long is kept, where the official code drops it);
2. decode the audio once (mono, ``sample_rate``); a video without an audio stream is kept with
   ``has_audio`` false and the flag ``no_audio``;
3. decode the video once, streaming, at every frame time of every clip: clip k starts at
   ``s_k = k * clip_seconds`` and its frames are at ``s_k + i / fps``, i < num_frames. This is the
   exact grid that inference uses. The official pipeline sampled training frames with
   ``linspace(0, n - 1, 16)`` over each re-encoded clip (about 0.21 s apart) but inference frames
   every 0.2 s (docs/official-differences.md#preprocessing,
   docs/official-differences.md#sliding-window-inference); one grid for both is a deliberate fix;
4. detect faces once per frame (the clip's frames form the detector batches) and crop with the
   configured margin, the same as inference (the official 1.3 vs 1.0 mismatch is not kept); frames
   without a face borrow the nearest detection within ``max_gap_s``; a clip where that fails is
   dropped, alone, and recorded (flag ``dropped_clips`` on the video, a failure row with stage
   ``face`` per clip); a video with no usable clip fails with ``no_face``;
5. per kept clip, the raw log-mel fbank of the clip's samples (318 frames for 3.2 s at 16 kHz);
6. write the video's entry (:func:`havic.data.cache.write_video_entry`) atomically.

A video that cannot be used gets a failure marker (stage probe / decode / audio / face / write and
the :class:`~havic.data.errors.MediaError` reason, or ``error`` for an unexpected exception, whose
traceback is logged) instead of an entry; nothing is dropped silently. Flags on kept videos: ``no_audio``, ``corrupt_packets`` (the decoders skipped packets;
the count is in the metadata), ``read_error`` (demuxing stopped early: a truncated file, later
frames repeat the last decoded one), ``audio_padded`` (the audio track ends before a clip does;
zeros fill it), ``filled_frames`` (some frames borrowed a neighbour's face box), ``dropped_clips``.

:func:`run` processes a manifest: it skips videos that already have an entry or a failure marker
(failed ones are retried with ``retry_failed``), so an interrupted or sharded run resumes where it
stopped; since every file is renamed into place when complete, an interrupted video never counts as
done. ``shard=(i, n)`` takes the videos whose manifest row index is ``i`` modulo ``n``. With
``workers > 1`` videos are processed in spawned worker processes, each with its own detector and one
torch thread. The index (``index.csv``, ``failures.csv``) is rebuilt from all entries and markers at
the end of every run.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from havic.data import audio as audio_frontend
from havic.data.audio import log_mel_fbank
from havic.data.cache import (
    ClipCache,
    ClipPayload,
    IndexSummary,
    build_index,
    entry_path,
    marker_path,
    settings_from_config,
    video_key,
    write_failure_marker,
    write_video_entry,
)
from havic.data.errors import MediaError
from havic.data.face import FaceCropper, build_detector
from havic.data.manifest import Manifest
from havic.data.video import DecodeStats, VideoInfo, decode_flags, iter_frames_at, probe, read_audio
from havic.version import __version__

__all__ = [
    "ClipPlan",
    "ItemResult",
    "PreprocessSettings",
    "RunSummary",
    "format_summary",
    "plan_clips",
    "process_video",
    "run",
]

log = logging.getLogger(__name__)

# Clip planning tolerates float error in durations read as rationals (e.g. 6.4 s = 6.3999999).
_TIME_EPS = 1e-6


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything preprocessing needs from the configuration.

    Attributes mirror the ``data`` section (``clip_seconds``, ``fps``, ``jpeg_quality``,
    ``face.*``, ``audio.*``) and the model input sizes (``num_frames``, ``image_size``,
    ``num_mel_bins``).
    """

    clip_seconds: float = 3.2
    fps: float = 5.0
    num_frames: int = 16
    image_size: int = 224
    jpeg_quality: int = 95
    detector: str = "retinaface"
    weights: str | None = None
    device: str = "cpu"
    conf_threshold: float = 0.7
    margin: float = 1.3
    square: bool = False
    max_gap_s: float | None = 1.0
    batch_size: int = 16
    sample_rate: int = audio_frontend.SAMPLE_RATE
    num_mel_bins: int = audio_frontend.NUM_MEL_BINS
    frame_length_ms: float = audio_frontend.FRAME_LENGTH_MS
    frame_shift_ms: float = audio_frontend.FRAME_SHIFT_MS

    def __post_init__(self) -> None:
        if self.clip_seconds <= 0 or self.fps <= 0:
            raise ValueError(f"clip_seconds and fps must be positive, got {self.clip_seconds}, {self.fps}")
        if abs(self.clip_seconds * self.fps - self.num_frames) > 1e-6:
            raise ValueError(f"clip_seconds * fps = {self.clip_seconds * self.fps:g} must equal num_frames = "
                             f"{self.num_frames}")

    @classmethod
    def from_config(cls, cfg: Any) -> PreprocessSettings:
        """From a full configuration (:func:`havic.config.load_config`)."""
        s = settings_from_config(cfg)
        face = cfg.data.face
        return cls(
            clip_seconds=s["clip_seconds"], fps=s["fps"], num_frames=s["num_frames"], image_size=s["image_size"],
            jpeg_quality=s["jpeg_quality"], detector=s["face.detector"],
            weights=None if face.weights is None else str(face.weights), device=str(face.device),
            conf_threshold=s["face.conf_threshold"], margin=s["face.margin"], square=s["face.square"],
            max_gap_s=s["face.max_gap_s"], batch_size=int(face.batch_size), sample_rate=s["audio.sample_rate"],
            num_mel_bins=s["audio.num_mel_bins"], frame_length_ms=s["audio.frame_length_ms"],
            frame_shift_ms=s["audio.frame_shift_ms"],
        )

    def cache_settings(self) -> dict[str, Any]:
        """The settings stored in (and checked against) the cache; see :func:`settings_from_config`."""
        return {
            "clip_seconds": float(self.clip_seconds), "fps": float(self.fps), "num_frames": int(self.num_frames),
            "image_size": int(self.image_size), "jpeg_quality": int(self.jpeg_quality),
            "face.detector": self.detector, "face.conf_threshold": float(self.conf_threshold),
            "face.margin": float(self.margin), "face.square": bool(self.square),
            "face.max_gap_s": None if self.max_gap_s is None else float(self.max_gap_s),
            "audio.sample_rate": int(self.sample_rate), "audio.num_mel_bins": int(self.num_mel_bins),
            "audio.frame_length_ms": float(self.frame_length_ms), "audio.frame_shift_ms": float(self.frame_shift_ms),
        }

    def build_cropper(self) -> FaceCropper:
        """The face detector and cropper these settings describe (Haar takes no threshold or batch)."""
        kwargs: dict[str, Any] = {}
        if self.detector == "retinaface":
            kwargs = {"conf_threshold": self.conf_threshold, "batch_size": self.batch_size}
        detector = build_detector(self.detector, self.weights, device=self.device, **kwargs)
        return FaceCropper(detector, size=self.image_size, margin=self.margin, square=self.square,
                           max_gap_s=self.max_gap_s)


@dataclass(frozen=True)
class ClipPlan:
    """Clip k of a video: start ``start_s = k * clip_seconds`` and its (F,) frame times."""

    clip: int
    start_s: float
    times: np.ndarray


def plan_clips(duration: float, clip_seconds: float, fps: float, num_frames: int) -> list[ClipPlan]:
    """Non-overlapping clips from 0 while ``start + clip_seconds <= duration``.

    Frame i of clip k is at ``k * clip_seconds + i / fps`` (the inference grid).

    Returns:
        The clips, possibly empty (the video is shorter than one clip).
    """
    if not math.isfinite(duration) or duration <= 0:
        return []
    n = math.floor(duration / clip_seconds + _TIME_EPS)
    return [ClipPlan(k, k * clip_seconds, k * clip_seconds + np.arange(num_frames, dtype=np.float64) / fps)
            for k in range(n)]


@dataclass
class ItemResult:
    """Outcome of one video.

    Attributes:
        item: manifest path.
        key: cache key.
        ok: an entry was written.
        stage, reason, detail: why it failed (empty when ok).
        n_clips: clips written.
        n_dropped: clips dropped (no face within max_gap_s).
        seconds: video duration (when probed).
        flags: flags of a written entry.
    """

    item: str
    key: str
    ok: bool
    stage: str = ""
    reason: str = ""
    detail: str = ""
    n_clips: int = 0
    n_dropped: int = 0
    seconds: float = 0.0
    flags: list[str] = field(default_factory=list)


class _Failure(Exception):
    """Internal: a failure with its stage."""

    def __init__(self, stage: str, reason: str, detail: str) -> None:
        super().__init__(stage, reason, detail)
        self.stage, self.reason, self.detail = stage, reason, detail


def _take(frames: Iterator[tuple[float, np.ndarray]], n: int, file: Path) -> np.ndarray:
    """The next `n` frames, stacked: (n, H, W, 3) uint8."""
    out = []
    for _ in range(n):
        try:
            out.append(next(frames)[1])
        except StopIteration:
            raise MediaError(file, "no_frames", "the decoder stopped before the requested times") from None
    return np.stack(out)


def _video_meta(item: str, info: VideoInfo, settings: PreprocessSettings) -> dict[str, Any]:
    return {
        "source": item, "duration": info.duration, "fps": info.fps, "n_frames": info.n_frames,
        "width": info.width, "height": info.height, "rotation": info.rotation,
        "audio_sample_rate": info.audio_sample_rate, "settings": settings.cache_settings(),
        "detector": settings.detector, "havic_version": __version__,
    }


def _process(item: str, file: Path, key: str, out: Path, settings: PreprocessSettings,
             cropper: FaceCropper) -> ItemResult:
    info: VideoInfo | None = None
    stage = "probe"
    try:
        info = probe(file)
        plan = plan_clips(info.duration, settings.clip_seconds, settings.fps, settings.num_frames)
        if not plan:
            raise MediaError(file, "too_short",
                             f"duration {info.duration:.3f} s < clip_seconds {settings.clip_seconds}")
        meta = _video_meta(item, info, settings)
        flags: list[str] = []

        stage = "audio"
        audio_stats = DecodeStats()
        wave = read_audio(file, settings.sample_rate, stats=audio_stats) if info.has_audio else None
        if wave is not None and wave.size == 0:
            log.warning("%s: the audio stream holds no samples; treated as a video without audio", item)
            wave = None
        if wave is None:
            flags.append("no_audio")

        stage = "decode"
        video_stats = DecodeStats()
        times = np.concatenate([c.times for c in plan])
        frames_iter = iter_frames_at(file, times, size=(info.width, info.height), stats=video_stats)
        sr = settings.sample_rate
        clip_samples = round(settings.clip_seconds * sr)
        payloads: list[ClipPayload] = []
        dropped: list[dict[str, Any]] = []
        n_filled = n_padded = 0
        try:
            for c in plan:
                stage = "decode"
                frames = _take(frames_iter, c.times.size, file)
                stage = "face"
                try:
                    crop = cropper.crop(frames, c.times, item)
                except MediaError as err:
                    if err.reason != "no_face":
                        raise
                    dropped.append({"clip": c.clip, "start_s": c.start_s, "stage": "face", "reason": err.reason,
                                    "detail": err.detail})
                    continue
                n_filled += crop.n_filled
                fbank = None
                if wave is not None:
                    stage = "audio"
                    start = round(c.start_s * sr)
                    segment = wave[start:start + clip_samples]
                    if segment.size < clip_samples:
                        n_padded += clip_samples - segment.size
                        segment = np.pad(segment, (0, clip_samples - segment.size))
                    fbank = log_mel_fbank(segment, sr, settings.num_mel_bins, settings.frame_length_ms,
                                          settings.frame_shift_ms).numpy()
                payloads.append(ClipPayload(frames=crop.crops, fbank=fbank, start_s=c.start_s, frame_times=c.times,
                                            boxes=crop.boxes, is_detected=crop.is_detected, clip=c.clip))
        finally:
            frames_iter.close()
        if not payloads:
            details = "; ".join(f"clip {d['clip']}: {d['detail']}" for d in dropped[:3])
            raise _Failure("face", "no_face", f"no usable face in any of {len(plan)} clips ({details})")

        n_corrupt = video_stats.n_corrupt_packets + audio_stats.n_corrupt_packets
        flags += decode_flags(video_stats, audio_stats)
        # Less than one fbank hop of padding is rounding of the stream duration, not missing audio.
        if n_padded > round(settings.frame_shift_ms * sr / 1000):
            flags.append("audio_padded")
        if n_filled:
            flags.append("filled_frames")
        if dropped:
            flags.append("dropped_clips")
            log.debug("%s: dropped %d of %d clips without a face", item, len(dropped), len(plan))
        meta.update(
            n_corrupt_packets=n_corrupt, n_corrupt_video_packets=video_stats.n_corrupt_packets,
            n_corrupt_audio_packets=audio_stats.n_corrupt_packets,
            n_read_errors=video_stats.n_read_errors + audio_stats.n_read_errors,
            n_decoded_frames=video_stats.n_frames, n_filled=n_filled, n_audio_padded_samples=n_padded,
            n_clips_planned=len(plan), dropped=dropped, flags=flags,
        )
        stage = "write"
        write_video_entry(out, key, payloads, meta, jpeg_quality=settings.jpeg_quality)
    except MediaError as err:
        return _fail(out, item, key, stage, err.reason, err.detail, info)
    except _Failure as err:
        return _fail(out, item, key, err.stage, err.reason, err.detail, info)
    except Exception as err:  # noqa: BLE001 - one bad video must not end a run over 100k videos
        log.exception("%s: unexpected error at stage %s", item, stage)
        return _fail(out, item, key, stage, "error", f"{type(err).__name__}: {err}", info)
    marker_path(out, key).unlink(missing_ok=True)     # a retried video that now succeeds
    return ItemResult(item, key, True, n_clips=len(payloads), n_dropped=len(dropped), seconds=info.duration,
                      flags=flags)


def _fail(out: Path, item: str, key: str, stage: str, reason: str, detail: str, info: VideoInfo | None) -> ItemResult:
    seconds = info.duration if info is not None and math.isfinite(info.duration) else 0.0
    log.debug("%s: failed at %s: %s (%s)", item, stage, reason, detail)
    write_failure_marker(out, key, item, stage, reason, detail, duration=seconds)
    return ItemResult(item, key, False, stage=stage, reason=reason, detail=detail, seconds=seconds)


def process_video(
    item: str,
    root: str | Path | None,
    out: str | Path,
    settings: PreprocessSettings,
    cropper: FaceCropper | None = None,
) -> ItemResult:
    """Preprocess one video of a manifest into the cache (entry or failure marker).

    Args:
        item: the manifest path.
        root: dataset root the path is relative to (None: as is).
        out: cache root.
        settings: preprocessing settings.
        cropper: a face cropper to reuse (default: built from `settings`).

    Returns:
        The outcome; failures are also recorded as a marker under `out`.
    """
    cropper = cropper if cropper is not None else settings.build_cropper()
    return _process(item, Manifest.resolve(item, root), video_key(item), Path(out), settings, cropper)


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(settings: PreprocessSettings, root: str | None, out: str) -> None:
    import cv2
    import torch

    # Each worker is one of N parallel processes: intra-op threads would oversubscribe the cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _WORKER.update(settings=settings, root=root, out=out, cropper=settings.build_cropper())


def _work(item: str) -> ItemResult:
    return process_video(item, _WORKER["root"], _WORKER["out"], _WORKER["settings"], _WORKER["cropper"])


@dataclass
class RunSummary:
    """What one :func:`run` did.

    Attributes:
        n_items: videos in this shard.
        n_skipped: already done (entry or failure marker) and not redone.
        n_ok, n_failed: videos processed now, by outcome.
        n_clips, n_dropped: clips written and dropped now.
        seconds: duration of the videos written now.
        failures: count per (stage, reason) of the videos that failed now.
        flags: count per flag of the videos written now.
        index: the index built at the end (whole manifest).
    """

    n_items: int = 0
    n_skipped: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_clips: int = 0
    n_dropped: int = 0
    seconds: float = 0.0
    failures: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)
    index: IndexSummary | None = None

    def add(self, r: ItemResult) -> None:
        if r.ok:
            self.n_ok += 1
            self.n_clips += r.n_clips
            self.n_dropped += r.n_dropped
            self.seconds += r.seconds
            self.flags.update(r.flags)
        else:
            self.n_failed += 1
            self.failures[r.stage, r.reason] += 1


def _tick(summary: RunSummary, bar, result: ItemResult) -> None:
    summary.add(result)
    bar.update()
    bar.set_postfix(ok=summary.n_ok, failed=summary.n_failed, refresh=False)


def _run_pool(todo: list[str], root, out: Path, settings: PreprocessSettings, workers: int, summary: RunSummary,
              bar) -> None:
    """Process `todo` in spawned worker processes; a worker that dies (e.g. killed for memory) ends the run."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(settings, None if root is None else str(root), str(out)),
    )
    try:
        futures = [pool.submit(_work, item) for item in todo]
        for future in as_completed(futures):
            _tick(summary, bar, future.result())
    except BaseException:
        # Do not wait for the queued videos; those in flight finish their atomic writes or leave nothing.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _is_done(out: Path, key: str, retry_failed: bool) -> bool:
    if entry_path(out, key).is_file():
        return True
    return not retry_failed and marker_path(out, key).is_file()


def run(
    rows: Sequence[Any],
    root: str | Path | None,
    out: str | Path,
    settings: PreprocessSettings,
    *,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Preprocess the videos of a manifest into the cache at `out`, resuming where a run stopped.

    Args:
        rows: manifest rows (objects with a ``path`` and the label columns), in manifest order.
        root: dataset root of the relative paths.
        out: cache root (created with ``settings``; an existing cache must have the same settings).
        settings: preprocessing settings.
        workers: processes; 1 runs in this process.
        shard: (i, n): only rows whose index modulo n is i.
        retry_failed: also redo videos that have a failure marker.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`RunSummary`, with the index built over all `rows`.

    Raises:
        ValueError: bad shard or workers, or the cache at `out` has other settings.
    """
    from tqdm import tqdm

    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    ClipCache.create(out, settings.cache_settings())
    paths = [r.path for k, r in enumerate(rows) if k % n == i]
    todo = [p for p in paths if not _is_done(out, video_key(p), retry_failed)]
    summary = RunSummary(n_items=len(paths), n_skipped=len(paths) - len(todo))
    log.info("%d videos in shard %d/%d, %d already done, %d to process", len(paths), i, n, summary.n_skipped, len(todo))

    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1 or len(todo) <= 1:
            cropper = settings.build_cropper() if todo else None
            for item in todo:
                _tick(summary, bar, process_video(item, root, out, settings, cropper))
        else:
            settings.build_cropper()          # fail here, once, on bad detector settings
            _run_pool(todo, root, out, settings, workers, summary, bar)
    finally:
        bar.close()
    summary.index = build_index(out, rows)
    return summary


def format_summary(s: RunSummary) -> str:
    """A plain-text report of a run and of the whole cache."""
    lines = [
        f"this run: {s.n_items} videos in the shard, {s.n_skipped} already done, {s.n_ok} written, "
        f"{s.n_failed} failed; {s.n_clips} clips written, {s.n_dropped} clips dropped, "
        f"{s.seconds / 3600:.3f} h of video",
    ]
    for (stage, reason), k in sorted(s.failures.items()):
        lines.append(f"  failed  {k:>7}  {stage}/{reason}")
    for flag, k in sorted(s.flags.items()):
        lines.append(f"  flagged {k:>7}  {flag}")
    if s.index is not None:
        x = s.index
        lines.append(
            f"cache: {x.n_ok}/{x.n_videos} videos ok, {x.n_failed} failed, {x.n_pending} pending; {x.n_clips} clips "
            f"({x.n_clips_dropped} dropped); {x.seconds / 3600:.3f} h of video; {x.bytes / 1e6:.1f} MB "
            f"({x.bytes / 1e9 / max(x.seconds / 3600, 1e-9):.2f} GB/h)"
        )
        for (stage, reason), k in sorted(x.failures.items()):
            lines.append(f"  {k:>7}  {stage}/{reason}")
    return "\n".join(lines)
