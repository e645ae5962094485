"""A tiny clip cache (4 frames of 32 px, 32 mel bins, nine videos over three splits) for tests.

Imported by the test modules (pytest puts ``tests/`` on ``sys.path``); not a test module itself.
Every clip has a distinct flat colour and a distinct fbank ramp, so a test can tell which clip a
sample came from and check its values exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from havic.config import load_config
from havic.data.cache import ClipCache, ClipPayload, build_index, settings_from_config, video_key, write_video_entry

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
FRAMES, SIZE, MELS, AUDIO_FRAMES, RAW_FRAMES = 4, 32, 32, 64, 318


@dataclass
class Video:
    path: str
    audio_label: int
    video_label: int
    split: str
    n_clips: int
    has_audio: bool = True

    @property
    def label(self) -> int:
        return int(self.audio_label == 1 or self.video_label == 1)


VIDEOS = [
    Video("train/rvra.mp4", 0, 0, "train", 2),
    Video("train/rvfa.mp4", 1, 0, "train", 2),
    Video("train/fvra.mp4", 0, 1, "train", 2),
    Video("train/fvfa.mp4", 1, 1, "train", 2),
    Video("train/silent.mp4", 0, 1, "train", 1, has_audio=False),
    Video("val/real.mp4", 0, 0, "val", 1),
    Video("val/fake.mp4", 1, 1, "val", 1),
    Video("test/a.mp4", 0, 0, "test", 2),
    Video("test/b.mp4", 1, 0, "test", 2),
]


def clip_colour(video_index: int, clip: int) -> np.ndarray:
    """A distinct flat RGB colour per clip (flat crops survive JPEG almost exactly)."""
    return np.array([20 + 20 * video_index, 60 + 50 * clip, 200 - 10 * video_index], dtype=np.uint8)


def raw_fbank(video_index: int, clip: int) -> np.ndarray:
    """(RAW_FRAMES, MELS) log-mel with a time ramp, distinct per clip; float16-exact-ish values."""
    t = np.arange(RAW_FRAMES, dtype=np.float32)[:, None] / RAW_FRAMES
    m = np.arange(MELS, dtype=np.float32)[None, :] / MELS
    return (-9.0 + video_index + 0.25 * clip + 2.0 * t + m).astype(np.float32)


def tiny_config(cache_dir: Path, *overrides: str):
    base = [f"data.cache_dir={cache_dir}", "data.batch_size=2", "data.eval_batch_size=3", "data.num_workers=0"]
    return load_config([TINY], base + list(overrides))


def build_tiny_cache(root: Path) -> Path:
    cfg = tiny_config(root)
    ClipCache.create(root, settings_from_config(cfg))
    for vi, v in enumerate(VIDEOS):
        clips = [
            ClipPayload(
                frames=np.broadcast_to(clip_colour(vi, k), (FRAMES, SIZE, SIZE, 3)).copy(),
                fbank=raw_fbank(vi, k) if v.has_audio else None,
                start_s=3.2 * k,
                frame_times=3.2 * k + 0.8 * np.arange(FRAMES),
                boxes=np.tile(np.array([0, 0, SIZE, SIZE], dtype=np.float32), (FRAMES, 1)),
                is_detected=np.ones(FRAMES, dtype=bool),
                clip=k,
            )
            for k in range(v.n_clips)
        ]
        meta = {"duration": 3.2 * v.n_clips, "flags": [] if v.has_audio else ["no_audio"]}
        write_video_entry(root, video_key(v.path), clips, meta, jpeg_quality=95)
    rows = [SimpleNamespace(path=v.path, label=v.label, audio_label=v.audio_label, video_label=v.video_label,
                            group=v.path, category="", split=v.split) for v in VIDEOS]
    build_index(root, rows)
    return root
