"""The clip cache: face crops and raw fbanks of every clip, one ``.npz`` file per source video.

Layout of a cache folder (written by ``tools/preprocess.py``)::

    cache.json                     format version and the data settings the cache was built with
    index.csv                      one row per clip (:class:`ClipRecord`), in manifest order
    failures.csv                   item, stage, reason, detail: every video or clip that is not in the
                                   index (a dropped clip k of video PATH is the item ``PATH#clip<k>``)
    videos/<hh>/<key>.npz          one file per source video (<hh>: last two characters of the key)
    failures/<hh>/<key>.json       failure marker of a video that could not be used

Members of a video's ``.npz`` (``np.savez``, uncompressed, readable with ``allow_pickle=False``; a zip
archive, so one member is read without touching the others and a clip is loaded lazily):

=========================  ==============================================================================
``meta``                   (B,) uint8: UTF-8 JSON metadata of the video (source path, fps, duration, size,
                           has_audio, corrupt packets, filled frames, flags, dropped clips, settings, ...)
``clip_ids``               (K,) int64 clip indices k; clip k starts at k * clip_seconds (dropped clips are
                           missing from the sequence)
``clip_starts``            (K,) float64 clip start times in seconds
``clip{k}/jpeg``           (bytes,) uint8: the F face crops, JPEG-encoded and concatenated
``clip{k}/offsets``        (F + 1,) int64: crop i is ``jpeg[offsets[i]:offsets[i + 1]]``
``clip{k}/fbank``          (T_raw, n_mels) float16 raw log-mel fbank of the clip's audio, before length
                           fitting and normalisation (absent for a video without audio)
``clip{k}/frame_times``    (F,) float64 time of each frame in the source video, seconds
``clip{k}/boxes``          (F, 4) float32 crop boxes x1, y1, x2, y2 in source pixels
``clip{k}/is_detected``    (F,) bool: the frame's own detection was used (else a neighbour's box)
=========================  ==============================================================================

Every file (entries, markers, CSVs, ``cache.json``) is written under a temporary name in its folder
and renamed over the final name, so a reader or a resumed run never sees a half-written file: an
entry that exists is complete. Temporary files left by a killed process start with ``.`` and end in
``.tmp``; they are ignored and may be deleted when no run is active.

The fbank is stored raw so that ``data.audio.length_policy`` and the normalisation constants stay
read-time choices; float16 rounds log energies (|x| < 65504) to a relative error of at most 2^-11
(at most 0.008 for values near -16, the log of the float32 epsilon, 0.002 near -6.9, the mean).

Size per hour of video at 5 fps (18 000 face crops of 224 x 224) plus 128-mel fbanks, measured on
RetinaFace crops (margin 1.3) of ``megamind.avi`` (55 crops, animated) and of
``skimage.data.astronaut()`` (a photographed face, at 512 and 1024 px):

==========================  ====================  ================
storage of the crops        bytes per crop        GB per hour
==========================  ====================  ================
JPEG q95 (this cache)       14.2 k - 17.8 k       0.25 - 0.32
PNG (official pipeline)     65.0 k - 82.6 k       1.17 - 1.49
raw uint8                   150 528               2.71
==========================  ====================  ================

The fbank adds 0.09 GB per hour (float16, 318 x 128 per 3.2 s clip, 81 kB); the ``.npz`` framing,
boxes, times and metadata add about 3 kB per clip. A whole entry of ``megamind.avi`` (3 clips of
16 crops at 224 px, Haar boxes) is 807 667 B for 9.6 s of clips: 0.30 GB per hour of video, against
about 1.3 GB/h with PNG crops and 2.8 GB/h raw. One file per video also replaces the official 16 PNG
files per clip (LRS2: ~100k videos, several million files).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from havic.utils.io import atomic_path, atomic_write_csv, atomic_write_json

__all__ = [
    "CACHE_JSON",
    "FAILURES_CSV",
    "FAILURE_COLUMNS",
    "FORMAT_VERSION",
    "INDEX_CSV",
    "ClipCache",
    "ClipData",
    "ClipPayload",
    "ClipRecord",
    "IndexSummary",
    "build_index",
    "entry_path",
    "marker_path",
    "read_entry_meta",
    "settings_from_config",
    "video_key",
    "write_failure_marker",
    "write_video_entry",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_JSON = "cache.json"
INDEX_CSV = "index.csv"
FAILURES_CSV = "failures.csv"
VIDEOS_DIR = "videos"
FAILURES_DIR = "failures"
FAILURE_COLUMNS = ("item", "stage", "reason", "detail")
STAGES = ("probe", "decode", "audio", "face", "write")

_KEY_HASH_CHARS = 10           # 40 bits: collisions need ~10^6 videos with equal sanitised names
_KEY_NAME_CHARS = 100          # sanitised part; the whole file name stays far below 255 bytes
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ----------------------------------------------------------------------------------------------
# Keys, paths, settings
# ----------------------------------------------------------------------------------------------


def video_key(manifest_path: str) -> str:
    """A stable, filesystem-safe, unique key for a manifest path.

    The path (POSIX separators) is sanitised into a readable name (folders joined by ``_``, other
    unsafe characters replaced, at most the last 100 characters kept) and followed by a hash of the
    full path, so equal file names in different folders, and paths that sanitise alike, get
    different keys.

    Example: ``"id01/abc/00001.mp4"`` -> ``"id01_abc_00001.mp4-3f9c1a7b2e"``.
    """
    text = str(manifest_path).replace("\\", "/")
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()[:_KEY_HASH_CHARS]
    name = _UNSAFE.sub("_", text.strip("/").replace("/", "_")).lstrip("._-")
    name = name[-_KEY_NAME_CHARS:].lstrip("._-") or "video"
    return f"{name}-{digest}"


def _shard(key: str) -> str:
    return key[-2:]


def entry_path(root: str | os.PathLike, key: str) -> Path:
    """The ``.npz`` entry of a video key under the cache root."""
    return Path(root) / VIDEOS_DIR / _shard(key) / f"{key}.npz"


def marker_path(root: str | os.PathLike, key: str) -> Path:
    """The failure marker of a video key under the cache root."""
    return Path(root) / FAILURES_DIR / _shard(key) / f"{key}.json"


def settings_from_config(cfg: Any) -> dict[str, Any]:
    """The data settings a cache depends on, from a full configuration (``load_config`` output).

    Only settings that change the stored content are included (not paths, devices or batch
    sizes; not ``length_policy`` or the normalisation, which apply at read time).

    Returns:
        A flat dict: clip_seconds, fps, num_frames, image_size, jpeg_quality, face.* and audio.*.
    """
    data, face, audio = cfg.data, cfg.data.face, cfg.data.audio
    return {
        "clip_seconds": float(data.clip_seconds),
        "fps": float(data.fps),
        "num_frames": int(cfg.model.video.num_frames),
        "image_size": int(cfg.model.video.image_size),
        "jpeg_quality": int(data.jpeg_quality),
        "face.detector": str(face.detector),
        "face.conf_threshold": float(face.conf_threshold),
        "face.margin": float(face.margin),
        "face.square": bool(face.square),
        "face.max_gap_s": None if face.max_gap_s is None else float(face.max_gap_s),
        "audio.sample_rate": int(audio.sample_rate),
        "audio.num_mel_bins": int(cfg.model.audio.num_mel_bins),
        "audio.frame_length_ms": float(audio.frame_length_ms),
        "audio.frame_shift_ms": float(audio.frame_shift_ms),
    }


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b          # True is not 1 here: a changed type is a change
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def refuse_other_settings(root: Path, what: str, stored: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise a ValueError naming every setting of the folder `root` (a `what`) that differs from `expected`."""
    diff = settings_diff(stored, expected)
    if diff:
        lines = [f"  {k}: {what} {a!r}, requested {b!r}" for k, (a, b) in diff.items()]
        raise ValueError(f"{root}: the {what} was written with other settings ({', '.join(diff)}):\n"
                         + "\n".join(lines))


def settings_diff(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (stored, expected)}`` for every key whose values differ or that only one side has."""
    a, b = _flatten(stored), _flatten(expected)
    missing = object()
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va is missing or vb is missing or not _same_value(va, vb):
            out[k] = (None if va is missing else va, None if vb is missing else vb)
    return out


# ----------------------------------------------------------------------------------------------
# Atomic writing
# ----------------------------------------------------------------------------------------------


def _atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_json(path, obj, allow_nan=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# ----------------------------------------------------------------------------------------------
# Entries
# ----------------------------------------------------------------------------------------------


@dataclass
class ClipPayload:
    """One clip to store.

    Attributes:
        frames: (F, S, S, 3) uint8 RGB face crops.
        fbank: (T_raw, n_mels) float32 raw log-mel fbank, or None for a video without audio.
        start_s: clip start in the source video, seconds.
        frame_times: (F,) frame times in the source video, seconds.
        boxes: (F, 4) crop boxes x1, y1, x2, y2 in source pixels.
        is_detected: (F,) bool, the frame's own detection was used.
        clip: the clip index k (clip k starts at k * clip_seconds); None: its position in the list.
    """

    frames: np.ndarray
    fbank: np.ndarray | None
    start_s: float
    frame_times: np.ndarray
    boxes: np.ndarray
    is_detected: np.ndarray
    clip: int | None = None


def _encode_jpegs(frames: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(F, S, S, 3) uint8 RGB -> concatenated JPEG bytes (B,) uint8 and offsets (F + 1,) int64."""
    chunks = []
    for i, frame in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for frame {i} of shape {frame.shape}")
        chunks.append(buf.reshape(-1))
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([c.size for c in chunks])
    data = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
    return data, offsets


def _decode_jpegs(data: np.ndarray, offsets: np.ndarray, file: str) -> np.ndarray:
    """Inverse of :func:`_encode_jpegs`: (F, S, S, 3) uint8 RGB."""
    frames = []
    for i in range(offsets.size - 1):
        bgr = cv2.imdecode(data[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{file}: JPEG crop {i} does not decode")
        frames.append(bgr[..., ::-1])
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.stack(frames))


def _check_payload(p: ClipPayload, k: int, key: str) -> None:
    where = f"video {key!r}, clip {k}"
    frames = np.asarray(p.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"{where}: frames must be (F, S, S, 3) uint8, got {frames.shape} {frames.dtype}")
    n = frames.shape[0]
    if n == 0:
        raise ValueError(f"{where}: no frames")
    for name, shape in (("frame_times", (n,)), ("boxes", (n, 4)), ("is_detected", (n,))):
        got = np.shape(getattr(p, name))
        if got != shape:
            raise ValueError(f"{where}: {name} must have shape {shape}, got {got}")
    if p.fbank is not None:
        fb = np.asarray(p.fbank)
        if fb.ndim != 2 or fb.shape[0] < 1:
            raise ValueError(f"{where}: fbank must be (T_raw, n_mels), got {fb.shape}")
        if not np.isfinite(fb).all() or np.abs(fb).max() > np.finfo(np.float16).max:
            raise ValueError(f"{where}: fbank holds values that float16 cannot store (non-finite or > 65504)")


def write_video_entry(
    root: str | os.PathLike,
    key: str,
    clips: Sequence[ClipPayload],
    meta: Mapping[str, Any],
    jpeg_quality: int = 95,
) -> Path:
    """Write the entry of one video atomically.

    Args:
        root: cache root.
        key: :func:`video_key` of the video's manifest path.
        clips: the clips kept (at least one); all with an fbank or all without.
        meta: JSON-serialisable metadata of the video (numpy scalars and arrays are converted);
            ``format_version``, ``key``, ``has_audio``, ``jpeg_quality`` and ``clips`` are set here.
        jpeg_quality: JPEG quality of the crops (0-100).

    Returns:
        The entry path (:func:`entry_path`).

    Raises:
        ValueError: no clips, inconsistent shapes, repeated clip indices, mixed audio presence.
    """
    if not clips:
        raise ValueError(f"video {key!r}: no clips to write (record a failure instead)")
    if not 0 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in [0, 100], got {jpeg_quality}")
    ids = [p.clip if p.clip is not None else i for i, p in enumerate(clips)]
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise ValueError(f"video {key!r}: clip indices must be distinct and >= 0, got {ids}")
    with_audio = [p.fbank is not None for p in clips]
    if any(with_audio) and not all(with_audio):
        raise ValueError(f"video {key!r}: some clips have an fbank and others not")
    sizes = {np.shape(p.frames)[1:] for p in clips}
    if len(sizes) > 1:
        raise ValueError(f"video {key!r}: clips have different crop sizes {sorted(sizes)}")

    members: dict[str, np.ndarray] = {}
    for k, p in zip(ids, clips):
        _check_payload(p, k, key)
        data, offsets = _encode_jpegs(np.asarray(p.frames), int(jpeg_quality))
        members[f"clip{k}/jpeg"] = data
        members[f"clip{k}/offsets"] = offsets
        if p.fbank is not None:
            members[f"clip{k}/fbank"] = np.asarray(p.fbank, dtype=np.float32).astype(np.float16)
        members[f"clip{k}/frame_times"] = np.asarray(p.frame_times, dtype=np.float64)
        members[f"clip{k}/boxes"] = np.asarray(p.boxes, dtype=np.float32)
        members[f"clip{k}/is_detected"] = np.asarray(p.is_detected, dtype=bool)
    members["clip_ids"] = np.asarray(ids, dtype=np.int64)
    members["clip_starts"] = np.asarray([float(p.start_s) for p in clips], dtype=np.float64)
    full_meta = dict(meta)
    full_meta.update(
        format_version=FORMAT_VERSION,
        key=key,
        has_audio=all(with_audio),
        jpeg_quality=int(jpeg_quality),
        clips=[int(k) for k in ids],
    )
    text = json.dumps(full_meta, default=_json_default, sort_keys=True, allow_nan=True)
    members["meta"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    # A file object, not a name: np.savez would append ".npz" to the temporary name.
    path = entry_path(root, key)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # atomic_path created (and locked) the empty file
            np.savez(f, **members)
            f.flush()
            os.fsync(f.fileno())
    return path


def read_entry_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata JSON of an entry (reads only that member)."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z["meta"].tobytes().decode("utf-8"))


def write_failure_marker(
    root: str | os.PathLike, key: str, item: str, stage: str, reason: str, detail: str = "", **extra: Any
) -> Path:
    """Record that the video `item` (its manifest path) failed at `stage` for `reason`.

    Args:
        stage: one of probe, decode, audio, face, write.
        extra: more JSON-serialisable fields (e.g. duration).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    record = {"item": item, "key": key, "stage": stage, "reason": reason, "detail": detail,
              "format_version": FORMAT_VERSION, **extra}
    record = json.loads(json.dumps(record, default=_json_default))
    return _atomic_write_json(marker_path(root, key), record)


# ----------------------------------------------------------------------------------------------
# Index
# ----------------------------------------------------------------------------------------------


@dataclass
class ClipRecord:
    """One row of ``index.csv``: a cached clip with its video's manifest labels.

    Attributes:
        key: video key (:func:`video_key`).
        clip: clip index k within the video (the clip starts at k * clip_seconds).
        path: the video's manifest path.
        label, audio_label, video_label, group, category, split: from the manifest row.
        start_s: clip start in the video, seconds.
        has_audio: whether the clip has an fbank.
        file: the entry, relative to the cache root (POSIX separators).
        flags: the video's flags joined by ";" (e.g. "no_audio;corrupt_packets"), or "".
    """

    key: str
    clip: int
    path: str
    label: int
    audio_label: int
    video_label: int
    group: str
    category: str
    split: str
    start_s: float
    has_audio: bool
    file: str
    flags: str = ""

    @classmethod
    def from_csv(cls, row: Mapping[str, str]) -> ClipRecord:
        return cls(
            key=row["key"], clip=int(row["clip"]), path=row["path"], label=int(row["label"]),
            audio_label=int(row["audio_label"]), video_label=int(row["video_label"]), group=row["group"],
            category=row["category"], split=row["split"], start_s=float(row["start_s"]),
            has_audio=row["has_audio"] in ("1", "True", "true"), file=row["file"], flags=row["flags"],
        )

    def to_csv(self) -> list[Any]:
        values = []
        for f in fields(self):
            v = getattr(self, f.name)
            values.append(int(v) if isinstance(v, bool) else repr(v) if isinstance(v, float) else v)
        return values


INDEX_COLUMNS = tuple(f.name for f in fields(ClipRecord))


@dataclass
class IndexSummary:
    """What :func:`build_index` found.

    Attributes:
        n_videos: manifest rows.
        n_ok: videos with an entry.
        n_failed: videos with a failure marker (and no entry).
        n_pending: videos with neither (not processed yet).
        n_clips: clips in the index.
        n_clips_dropped: clips left out of entries (each has a failure row).
        seconds: total duration of the videos with an entry.
        bytes: total size of their entries.
        failures: count per (stage, reason), clip failures included.
    """

    n_videos: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_pending: int = 0
    n_clips: int = 0
    n_clips_dropped: int = 0
    seconds: float = 0.0
    bytes: int = 0
    failures: Counter = field(default_factory=Counter)


def build_index(root: str | os.PathLike, manifest_rows: Iterable[Any]) -> IndexSummary:
    """Scan the entries and failure markers of the manifest's videos; write index.csv and failures.csv.

    Labels, groups and splits come from the manifest rows given (not from the entries), so a
    changed split needs only a new index. Entries of videos that are not in the manifest are
    ignored. An entry that cannot be read is reported as a failure at stage ``write``.

    Args:
        root: cache root.
        manifest_rows: objects with ``path``, ``label``, ``audio_label``, ``video_label``, ``group``,
            ``category`` and ``split`` attributes (e.g. :class:`havic.data.manifest.ManifestRow`).

    Returns:
        An :class:`IndexSummary`.
    """
    root = Path(root)
    summary = IndexSummary()
    records: list[ClipRecord] = []
    failures: list[tuple[str, str, str, str]] = []
    for row in manifest_rows:
        summary.n_videos += 1
        key = video_key(row.path)
        entry = entry_path(root, key)
        marker = marker_path(root, key)
        if entry.is_file():
            try:
                meta = read_entry_meta(entry)
                with np.load(entry, allow_pickle=False) as z:
                    ids, starts = z["clip_ids"], z["clip_starts"]
            except Exception as err:  # noqa: BLE001 - a damaged file must not stop the index
                log.warning("%s: unreadable cache entry %s: %s", row.path, entry, err)
                failures.append((row.path, "write", "unreadable_entry", f"{type(err).__name__}: {err}"))
                summary.n_failed += 1
                summary.failures["write", "unreadable_entry"] += 1
                continue
            summary.n_ok += 1
            summary.seconds += float(meta.get("duration") or 0.0)
            summary.bytes += entry.stat().st_size
            flags = ";".join(meta.get("flags", []))
            rel = entry.relative_to(root).as_posix()
            for k, s in zip(ids.tolist(), starts.tolist()):
                records.append(ClipRecord(
                    key=key, clip=int(k), path=row.path, label=int(row.label), audio_label=int(row.audio_label),
                    video_label=int(row.video_label), group=row.group, category=row.category, split=row.split,
                    start_s=float(s), has_audio=bool(meta.get("has_audio")), file=rel, flags=flags,
                ))
            for d in meta.get("dropped", []):
                stage = d.get("stage", "face")
                failures.append((f"{row.path}#clip{d['clip']}", stage, d["reason"], d.get("detail", "")))
                summary.n_clips_dropped += 1
                summary.failures[stage, d["reason"]] += 1
        elif marker.is_file():
            try:
                m = json.loads(marker.read_text(encoding="utf-8"))
                stage, reason, detail = m["stage"], m["reason"], m.get("detail", "")
            except (OSError, ValueError, KeyError) as err:
                stage, reason, detail = "write", "unreadable_marker", f"{type(err).__name__}: {err}"
            failures.append((row.path, stage, reason, detail))
            summary.n_failed += 1
            summary.failures[stage, reason] += 1
        else:
            summary.n_pending += 1
    summary.n_clips = len(records)
    atomic_write_csv(root / INDEX_CSV, INDEX_COLUMNS, (r.to_csv() for r in records))
    atomic_write_csv(root / FAILURES_CSV, FAILURE_COLUMNS, failures)
    return summary


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


@dataclass
class ClipData:
    """One clip read from the cache.

    Attributes:
        frames: (F, S, S, 3) uint8 RGB face crops.
        fbank: (T_raw, n_mels) float32 raw log-mel fbank, or None without audio.
        meta: the video's metadata plus this clip's ``clip``, ``start_s``, ``frame_times`` (F,),
            ``boxes`` (F, 4) and ``is_detected`` (F,).
    """

    frames: np.ndarray
    fbank: np.ndarray | None
    meta: dict[str, Any]


class ClipCache:
    """Read access to a cache folder.

    Args:
        root: the cache folder (holding ``cache.json``).

    Raises:
        FileNotFoundError: no ``cache.json`` under `root`.
        ValueError: the cache was written by an unknown format version.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        info_path = self.root / CACHE_JSON
        if not info_path.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a clip cache (no {CACHE_JSON}); build it with tools/preprocess.py"
            )
        info = json.loads(info_path.read_text(encoding="utf-8"))
        self.format_version = int(info.get("format_version", -1))
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"{self.root}: cache format version {self.format_version}, this code reads "
                             f"{FORMAT_VERSION}; rebuild the cache")
        self.settings: dict[str, Any] = dict(info["settings"])
        self._records: list[ClipRecord] | None = None

    @classmethod
    def create(cls, root: str | os.PathLike, settings: Mapping[str, Any]) -> ClipCache:
        """Open the cache at `root`, creating it with `settings` if it does not exist yet.

        Raises:
            ValueError: the cache exists with other settings (the message names the keys).
        """
        root = Path(root)
        if not (root / CACHE_JSON).is_file():
            root.mkdir(parents=True, exist_ok=True)
            _atomic_write_json(root / CACHE_JSON, {"format_version": FORMAT_VERSION, "settings": _flatten(settings)})
        cache = cls(root)
        cache.check_settings(settings)
        return cache

    def check_settings(self, expected: Mapping[str, Any]) -> None:
        """Raise a ValueError naming every setting that differs from `expected` (nested or flat keys)."""
        refuse_other_settings(self.root, "cache", self.settings, expected)

    def records(self, split: str | None = None) -> list[ClipRecord]:
        """The clips of ``index.csv`` (all, or those of one split), in index order.

        Raises:
            FileNotFoundError: the index has not been built (run ``tools/preprocess.py --reindex``).
        """
        if self._records is None:
            path = self.root / INDEX_CSV
            if not path.is_file():
                raise FileNotFoundError(f"{path} missing; build it with tools/preprocess.py ... --reindex")
            with path.open(newline="", encoding="utf-8") as f:
                self._records = [ClipRecord.from_csv(r) for r in csv.DictReader(f)]
        if split is None:
            return list(self._records)
        return [r for r in self._records if r.split == split]

    def failures(self) -> list[dict[str, str]]:
        """The rows of ``failures.csv`` (item, stage, reason, detail)."""
        path = self.root / FAILURES_CSV
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def load_clip(self, record: ClipRecord) -> ClipData:
        """Read one clip; only its own members are read from the entry.

        Raises:
            KeyError: the entry holds no such clip.
        """
        file = self.root / record.file
        k = record.clip
        with np.load(file, allow_pickle=False) as z:
            if f"clip{k}/jpeg" not in z.files:
                raise KeyError(f"{file}: no clip {k} (clips {json.loads(z['meta'].tobytes())['clips']})")
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            frames = _decode_jpegs(z[f"clip{k}/jpeg"], z[f"clip{k}/offsets"], str(file))
            fbank = z[f"clip{k}/fbank"].astype(np.float32) if f"clip{k}/fbank" in z.files else None
            meta.update(
                clip=k,
                start_s=float(z["clip_starts"][list(z["clip_ids"]).index(k)]),
                frame_times=z[f"clip{k}/frame_times"],
                boxes=z[f"clip{k}/boxes"],
                is_detected=z[f"clip{k}/is_detected"],
            )
        return ClipData(frames=frames, fbank=fbank, meta=meta)

    def __repr__(self) -> str:
        return f"ClipCache({str(self.root)!r})"
