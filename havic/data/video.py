"""Video and audio decoding with PyAV: probing, frame sampling at given times, audio, writing.

Time conventions: video times are seconds from the first decoded frame (so for a constant-rate file
frame k is shown over [k / fps, (k + 1) / fps), the same indexing as decoding by frame number);
audio is returned from the audio stream's first sample. Both conventions match decoding the frames
by index and extracting the audio track with ffmpeg, as the reference pipeline does.
"""
from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from havic.data.errors import MediaError
from havic.utils.io import atomic_path

__all__ = [
    "DecodeStats",
    "VideoInfo",
    "decode_flags",
    "iter_frames_at",
    "probe",
    "read_audio",
    "read_frames",
    "sample_times",
    "write_video",
]

log = logging.getLogger(__name__)

# A frame counts as shown at time t when its timestamp is <= t + _TIME_EPS. Timestamps come from
# exact rationals, requested times are floats (k / fps); 1 microsecond absorbs float rounding and
# is far below any frame duration (even 1/90000 s clocks tick every 11 microseconds).
_TIME_EPS = 1e-6
# Frames whose timestamps arrive out of order are re-sorted within this many frames (see
# `_timed_frames`); packed B-frames in AVI need 1-2, anything sane needs 0.
_REORDER_DEPTH = 8


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a media file without decoding it (besides its first frame).

    Attributes:
        path: the file.
        duration: video stream duration in seconds (container duration when the stream has none).
        fps: average frame rate of the video stream.
        n_frames: number of video frames when the container records it, else None.
        width, height: frame size as displayed, i.e. after applying `rotation`.
        rotation: counter-clockwise display rotation in degrees, one of 0, 90, 180, 270.
        has_audio: whether there is an audio stream.
        audio_sample_rate: its sample rate in Hz, or None without audio.
    """

    path: str
    duration: float
    fps: float
    n_frames: int | None
    width: int
    height: int
    rotation: int
    has_audio: bool
    audio_sample_rate: int | None


@dataclass
class DecodeStats:
    """Counters filled in while decoding; pass one in to see what was skipped.

    Attributes:
        n_packets: packets read from the decoded stream.
        n_corrupt_packets: packets the decoder rejected; they are skipped, not fatal.
        n_frames: frames (or audio frames) the decoder produced.
        n_yielded: frames handed to the caller (video only; one per requested time).
        n_reordered: video frames whose timestamp was out of order and was re-sorted.
        n_read_errors: demuxing stopped early on a read error (the file is truncated or damaged).
    """

    n_packets: int = 0
    n_corrupt_packets: int = 0
    n_frames: int = 0
    n_yielded: int = 0
    n_reordered: int = 0
    n_read_errors: int = 0


def decode_flags(*stats: DecodeStats) -> list[str]:
    """The flags a video earns from the decoding passes over it (its video and audio DecodeStats).

    ``corrupt_packets``: a decoder rejected packets and skipped them; ``read_error``: demuxing stopped
    early (a truncated or damaged file). Preprocessing and scoring report the same flags this way.
    """
    flags = []
    if any(s.n_corrupt_packets for s in stats):
        flags.append("corrupt_packets")
    if any(s.n_read_errors for s in stats):
        flags.append("read_error")
    return flags


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Open `path` for reading, mapping failures to MediaError("not_found" / "unreadable")."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(p, "not_found", "no such file")
    try:
        return av.open(str(p), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(p, "unreadable", f"{type(e).__name__}: {e}") from e


def _video_stream(container: av.container.InputContainer, path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no_video_stream", f"streams: {[s.type for s in container.streams]}")
    return container.streams.video[0]


def _normalise_rotation(degrees: float | int | None) -> int:
    """Map a display-matrix angle in [-180, 180] to 0, 90, 180 or 270 (counter-clockwise)."""
    if not degrees:
        return 0
    k = round(degrees / 90.0)
    if abs(degrees - 90 * k) > 1.0:
        log.warning("display rotation %.1f degrees is not a multiple of 90; using %d", degrees, 90 * k)
    return (90 * k) % 360


def _stream_seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read stream metadata, decoding only the first video frame (for its display rotation).

    Args:
        path: a media file with a video stream.

    Returns:
        VideoInfo.

    Raises:
        MediaError: "not_found", "unreadable", "no_video_stream", or "no_frames" when not even
            the first frame decodes.
    """
    container = _open(path)
    with container:
        vs = _video_stream(container, path)
        duration = _stream_seconds(vs.duration, vs.time_base)
        if duration is None and container.duration is not None:
            duration = container.duration / av.time_base
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        n_frames = vs.frames or None
        if rate:
            fps = float(rate)
        elif n_frames and duration:
            fps = n_frames / duration
        else:
            fps = float("nan")
        if duration is None:
            duration = n_frames / fps if n_frames and not math.isnan(fps) else float("nan")
        first = next(_decode_packets(container, vs, DecodeStats()), None)
        if first is None:
            raise MediaError(path, "no_frames", "no decodable video frame")
        rotation = _normalise_rotation(first.rotation)
        width, height = vs.codec_context.width or first.width, vs.codec_context.height or first.height
        if rotation in (90, 270):
            width, height = height, width
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=str(path),
            duration=float(duration),
            fps=fps,
            n_frames=n_frames,
            width=int(width),
            height=int(height),
            rotation=rotation,
            has_audio=audio is not None,
            audio_sample_rate=(audio.codec_context.sample_rate or audio.rate) if audio is not None else None,
        )


def sample_times(duration: float, fps: float = 5.0, start: float = 0.0) -> np.ndarray:
    """Times start, start + 1/fps, ... strictly before `duration` (within 1e-6 sample periods).

    Args:
        duration: end of the span in seconds (exclusive).
        fps: sampling rate in Hz.
        start: first time in seconds.

    Returns:
        (N,) float64 times; empty when start >= duration.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    span = (duration - start) * fps
    n = max(0, math.ceil(span - 1e-6))
    return start + np.arange(n, dtype=np.float64) / fps


def _decode_packets(
    container: av.container.InputContainer, stream: av.stream.Stream, stats: DecodeStats
) -> Iterator[av.frame.Frame]:
    """Decode `stream` packet by packet, skipping (and counting) packets the decoder rejects."""
    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except av.FFmpegError as e:
            # A read error ends the demuxer's iteration; what was decoded so far stays usable.
            stats.n_read_errors += 1
            log.warning("%s: read error after %d packets, stopping: %s", container.name, stats.n_packets, e)
            return
        stats.n_packets += packet.size > 0
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            stats.n_corrupt_packets += 1
            log.debug("%s: skipping corrupt %s packet at pts %s: %s", container.name, stream.type, packet.pts, e)
            continue
        for frame in frames:
            stats.n_frames += 1
            yield frame


def _timed_frames(
    container: av.container.InputContainer, vs: av.video.stream.VideoStream, stats: DecodeStats
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames in output order with their presentation time in seconds from the first frame.

    The decoder outputs frames in presentation order, but containers without real presentation
    timestamps (AVI with packed B-frames, e.g. megamind.avi) attach them to the wrong frames
    (1, 2, 3, 5, 4, 6, 8, 7, ...). The set of timestamps is right, so the k-th frame out of the
    decoder gets the k-th smallest timestamp, sorted over a window of `_REORDER_DEPTH` frames.
    Frames without any timestamp get the previous one plus one nominal frame period.
    """
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
    period = 1 / Fraction(rate)
    pending: list[av.VideoFrame] = []
    stamps: list[Fraction] = []  # min-heap of the pending frames' timestamps, in seconds
    last_raw: Fraction | None = None
    origin: Fraction | None = None

    def pop() -> tuple[float, av.VideoFrame]:
        nonlocal origin
        t = heapq.heappop(stamps)
        if origin is None:
            origin = t
        return float(t - origin), pending.pop(0)

    for frame in _decode_packets(container, vs, stats):
        ts = frame.pts if frame.pts is not None else frame.dts
        if ts is not None and frame.time_base is not None:
            raw = Fraction(ts) * frame.time_base
        else:
            raw = (last_raw + period) if last_raw is not None else Fraction(0)
        if last_raw is not None and raw <= last_raw:
            stats.n_reordered += 1
        last_raw = raw
        pending.append(frame)
        heapq.heappush(stamps, raw)
        if len(pending) > _REORDER_DEPTH:
            yield pop()
    while pending:
        yield pop()


def _to_rgb(frame: av.VideoFrame, rotation: int, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB as displayed: rotated, then resized to `size` = (width, height)."""
    if size is None:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        w, h = size
        if rotation in (90, 270):  # resize before rotating, so swap the target axes
            w, h = h, w
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BILINEAR")
    if rotation:
        # Display matrix angles are counter-clockwise, as is np.rot90 on (row, column) images.
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb


def iter_frames_at(
    path: str | os.PathLike,
    times: Sequence[float] | np.ndarray,
    size: tuple[int, int] | None = None,
    stats: DecodeStats | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream the video once, yielding the frame on screen at each requested time.

    For each t the frame shown is the last one whose presentation time is <= t (times measured
    from the first frame), so any frame rate, including 24000/1001, 30000/1001 and variable
    rates, is handled exactly; the same frame may be yielded for several times. Times after the
    last frame get the last frame. Memory is bounded by a few decoded frames, and decoding stops
    once the last requested time is served. Corrupt packets are skipped and counted in `stats`.

    Args:
        path: video file.
        times: (N,) non-decreasing times in seconds, >= 0.
        size: optional output (width, height), applied after rotation.
        stats: optional DecodeStats to fill in.

    Returns:
        An iterator of (t, frame), frame (H, W, 3) uint8 RGB in display orientation. The file is
        opened at the call (so path errors raise here) and closed when the iterator is exhausted
        or discarded.

    Raises:
        MediaError: "not_found", "unreadable", "no_video_stream", or "no_frames" when no frame
            decodes at all.
        ValueError: times not sorted or negative.
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.size and (times[0] < 0 or np.any(np.diff(times) < 0)):
        raise ValueError("times must be non-negative and sorted ascending")
    stats = stats if stats is not None else DecodeStats()
    # Open eagerly so a missing or unreadable file fails at the call, not at the first next().
    container = _open(path)
    vs = _video_stream(container, path)
    return _iter_frames(container, vs, str(path), times, size, stats)


def _iter_frames(
    container: av.container.InputContainer,
    vs: av.video.stream.VideoStream,
    path: str,
    times: np.ndarray,
    size: tuple[int, int] | None,
    stats: DecodeStats,
) -> Iterator[tuple[float, np.ndarray]]:
    with container:
        vs.thread_type = "AUTO"
        if times.size == 0:
            return
        i = 0
        prev: av.VideoFrame | None = None
        prev_rgb: np.ndarray | None = None
        rotation = 0

        def shown() -> np.ndarray:
            nonlocal prev_rgb
            if prev_rgb is None:
                prev_rgb = _to_rgb(prev, rotation, size)
            return prev_rgb

        for t_frame, frame in _timed_frames(container, vs, stats):
            if prev is None:
                rotation = _normalise_rotation(frame.rotation)
            # Every requested time before this frame starts is served by the previous frame.
            while prev is not None and i < times.size and times[i] + _TIME_EPS < t_frame:
                stats.n_yielded += 1
                yield float(times[i]), shown()
                i += 1
            if i == times.size:
                return
            prev, prev_rgb = frame, None
        if prev is None:
            raise MediaError(path, "no_frames", f"no decodable video frame ({stats.n_corrupt_packets} corrupt packets)")
        while i < times.size:
            stats.n_yielded += 1
            yield float(times[i]), shown()
            i += 1


def read_frames(
    path: str | os.PathLike,
    times: Sequence[float] | np.ndarray,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, DecodeStats]:
    """Frames on screen at `times`, stacked; see `iter_frames_at`.

    Returns:
        frames: (N, H, W, 3) uint8 RGB.
        stats: the DecodeStats of the pass.
    """
    stats = DecodeStats()
    out: np.ndarray | None = None
    n = len(times)
    for k, (_, frame) in enumerate(iter_frames_at(path, times, size=size, stats=stats)):
        if out is None:
            out = np.empty((n, *frame.shape), dtype=np.uint8)
        out[k] = frame
    if out is None:
        out = np.empty((0, size[1], size[0], 3) if size else (0, 0, 0, 3), dtype=np.uint8)
    return out, stats


# Several channels become one through swresample's downmix matrix scaled so that no output can exceed
# full scale: what `ffmpeg -ac 1` applies when it writes 16-bit samples, as in the reference
# pipeline's wav files. Stereo becomes (L + R) / 2; unscaled, float output would get
# (L + R) / sqrt(2), 3 dB louder than the audio the reference models were trained on.
_DOWNMIX_OPTIONS = {"rematrix_maxval": "1"}


def read_audio(
    path: str | os.PathLike, sample_rate: int = 16000, stats: DecodeStats | None = None, *, trim: bool = True
) -> np.ndarray | None:
    """Decode the first audio stream to mono float32 at `sample_rate`.

    Several channels are mixed as ``ffmpeg -ac 1`` mixes them into a 16-bit wav: stereo becomes the
    mean (L + R) / 2; other layouts get ffmpeg's downmix matrix scaled to full scale (centre kept,
    LFE dropped). A mono track is only resampled.

    Packets the decoder rejects are replaced by silence of their duration (so later audio keeps
    its timing) and counted in `stats`. With `trim`, the result is trimmed or zero-padded to
    round(stream duration * sample_rate): resampled AAC otherwise carries encoder padding.

    Args:
        path: media file.
        sample_rate: output rate in Hz.
        stats: optional DecodeStats to fill in.
        trim: fit the length to the stream duration. False keeps every decoded sample, the encoder's
            end padding included: the samples ``ffmpeg -i FILE -ac 1 -ar RATE out.wav`` writes.

    Returns:
        (S,) float32 waveform, or None when the file has no audio stream.

    Raises:
        MediaError: "not_found", "unreadable", or "corrupt" when the audio stream has packets
            but none decodes.
    """
    stats = stats if stats is not None else DecodeStats()
    container = _open(path)
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        tb = stream.time_base
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, options=_DOWNMIX_OPTIONS)
        chunks: list[np.ndarray] = []
        first_pts: Fraction | None = None
        end_pts: Fraction | None = None  # end of the last packet, for streams without a duration
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.FFmpegError as e:
                stats.n_read_errors += 1
                log.warning("%s: audio read error after %d packets, stopping: %s", path, stats.n_packets, e)
                break
            if packet.size > 0:
                stats.n_packets += 1
                if packet.pts is not None and tb is not None:
                    start = Fraction(packet.pts) * tb
                    first_pts = start if first_pts is None else min(first_pts, start)
                    end = start + Fraction(packet.duration or 0) * tb
                    end_pts = end if end_pts is None else max(end_pts, end)
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                stats.n_corrupt_packets += 1
                gap = round(float(Fraction(packet.duration or 0) * tb * sample_rate)) if tb is not None else 0
                log.debug("%s: corrupt audio packet at pts %s replaced by %d zeros: %s", path, packet.pts, gap, e)
                chunks.append(np.zeros(gap, dtype=np.float32))
                continue
            for frame in frames:
                stats.n_frames += 1
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
        if stats.n_frames == 0:
            if stats.n_packets == 0:
                return np.zeros(0, dtype=np.float32)
            raise MediaError(path, "corrupt", f"none of {stats.n_packets} audio packets decodes")
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
        wave = np.concatenate(chunks).astype(np.float32, copy=False)
        if not trim:
            return wave

        duration = _stream_seconds(stream.duration, tb)
        if duration is None and first_pts is not None and end_pts is not None and end_pts > first_pts:
            duration = float(end_pts - first_pts)
        if duration is not None:
            n = round(duration * sample_rate)
            wave = wave[:n] if wave.size >= n else np.pad(wave, (0, n - wave.size))
        return wave


def _as_fraction(rate: float | Fraction | int) -> Fraction:
    """Exact rate for the encoder; floats such as 23.976 are kept as written (pass Fraction(24000, 1001) for NTSC)."""
    if isinstance(rate, Fraction):
        return rate
    return Fraction(rate).limit_denominator(1001)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    *,
    pts_seconds: np.ndarray | None = None,
    rotation: int = 0,
) -> Path:
    """Write an H.264 (libx264, yuv420p) video with optional mono AAC audio, atomically.

    The file is written under a temporary name in the same folder and renamed when complete, so a
    reader never sees a half-written file.

    Args:
        path: output file; the container follows its suffix (".mp4" recommended).
        frames: (N, H, W, 3) uint8 RGB; H and W must be even (yuv420p).
        fps: nominal frame rate; use `Fraction(30000, 1001)` for 29.97 and the like.
        audio: (S,) float32 mono waveform in [-1, 1], or None for a video without audio.
        sample_rate: sample rate of `audio` in Hz.
        crf: libx264 constant rate factor (0 = lossless luma, 18 = visually transparent).
        pts_seconds: (N,) strictly increasing presentation times of the frames, for
            variable-frame-rate files; None means frame i is shown at i / fps.
        rotation: display rotation in degrees, counter-clockwise, stored as the stream's display
            matrix (the value `probe` and decoded frames read back); the pixels are stored as given.

    Returns:
        The path written.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    n, h, w, _ = frames.shape
    if n == 0:
        raise ValueError("frames is empty")
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {w}x{h}")
    rate = _as_fraction(fps)
    if pts_seconds is not None:
        pts_seconds = np.asarray(pts_seconds, dtype=np.float64)
        if pts_seconds.shape != (n,) or np.any(np.diff(pts_seconds) <= 0):
            raise ValueError(f"pts_seconds must be ({n},) and strictly increasing, got {pts_seconds.shape}")
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (S,), got {audio.shape}")

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w") as container:
            vs = container.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            # mbtree=0: x264's macroblock-tree rate control reads memory it has not written on this
            # build, so the same frames encoded twice came out different (up to 38 grey levels after
            # decoding); without it the encoder is deterministic and seeded datasets are reproducible.
            vs.options = {"crf": str(crf), "x264-params": "mbtree=0"}
            if pts_seconds is not None:
                # A fine clock so arbitrary presentation times are representable.
                vs.codec_context.time_base = Fraction(1, 90000)
            if rotation:
                vs.set_display_rotation(rotation)
            astream = None
            if audio is not None:
                astream = container.add_stream("aac", rate=sample_rate, layout="mono")

            for i in range(n):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                if pts_seconds is not None:
                    frame.pts = round(pts_seconds[i] * 90000)
                    frame.time_base = Fraction(1, 90000)
                else:
                    frame.pts = i
                    frame.time_base = 1 / rate
                container.mux(vs.encode(frame))
            container.mux(vs.encode(None))

            if astream is not None and audio.size:
                # The encoder's internal FIFO re-blocks to AAC's 1024-sample frames.
                block = 1024 * 16
                for start in range(0, audio.size, block):
                    chunk = np.ascontiguousarray(audio[None, start : start + block])
                    aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                    aframe.sample_rate = sample_rate
                    aframe.pts = start
                    aframe.time_base = Fraction(1, sample_rate)
                    container.mux(astream.encode(aframe))
                container.mux(astream.encode(None))
    return path
