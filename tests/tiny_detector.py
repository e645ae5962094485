"""Test helpers for inference and evaluation: synthetic talking-face videos and a tiny trained detector.

Imported by the test modules (pytest puts ``tests/`` on ``sys.path``); not a test module itself.

The tiny detector (``configs/tiny.yaml``: 4 frames of 32 px per 3.2 s clip, 64 x 32 fbank) is
trained here for a few dozen full-batch steps on synthetic clips: in a real clip the face's
brightness follows the loudness of the audio, in a fake one it follows another rhythm.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from havic.checkpoints import save_weights
from havic.config import CONFIG_DIR, load_config
from havic.data.video import write_video
from havic.inference import audio_features
from havic.models import build_model

TINY = str(CONFIG_DIR / "tiny.yaml")
TINY_OVERRIDES = ("data.face.detector=haar", "data.face.batch_size=4")
VIDEO_FPS = 10
VIDEO_SIZE = 192          # the Haar cascade finds the astronaut's face from about this size on
SR = 16000


def tiny_config(*overrides: str):
    return load_config([TINY], [*TINY_OVERRIDES, *overrides])


def envelope(t: np.ndarray, rate: float = 2.0, phase: float = 0.0) -> np.ndarray:
    """Syllable-like loudness in [0, 1]."""
    return 0.5 * (1 - np.cos(2 * np.pi * rate * t + phase))


def speech_like(seconds: float, rate: float = 2.0, phase: float = 0.0) -> np.ndarray:
    """Harmonics of a gliding 140 Hz pitch under :func:`envelope`: (S,) float32 at 16 kHz."""
    t = np.arange(round(seconds * SR)) / SR
    pitch = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / SR
    voiced = sum(np.sin(k * pitch) / k for k in range(1, 8))
    return (0.2 * voiced * envelope(t, rate, phase)).astype(np.float32)


@functools.cache
def astronaut(size: int) -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def face_frames(n: int, fps: float, size: int = VIDEO_SIZE, face_until: float | None = None,
                rate: float = 2.0, phase: float = 0.0) -> np.ndarray:
    """(n, size, size, 3) the astronaut on grey, moving a little, brightness following the envelope."""
    face = astronaut(size - 16).astype(np.float32)
    out = np.full((n, size, size, 3), 120, dtype=np.uint8)
    for j in range(n):
        t = j / fps
        if face_until is not None and t >= face_until:
            continue
        dx = int(round(8 + 4 * np.sin(2 * np.pi * 0.5 * t)))
        dy = int(round(8 + 3 * np.cos(2 * np.pi * 0.3 * t)))
        gain = 0.75 + 0.25 * envelope(np.array([t]), rate, phase)[0]
        out[j, dy:dy + size - 16, dx:dx + size - 16] = np.clip(face * gain, 0, 255).astype(np.uint8)
    return out


def write_talking_video(path: Path, seconds: float, audio: bool = True, face_until: float | None = None,
                        fake: bool = False) -> Path:
    """A synthetic talking face; a fake one's face rhythm does not follow its audio."""
    n = round(seconds * VIDEO_FPS)
    frames = face_frames(n, VIDEO_FPS, face_until=face_until, rate=3.1 if fake else 2.0)
    return write_video(path, frames, VIDEO_FPS, audio=speech_like(seconds) if audio else None)


def grey_video(path: Path, seconds: float) -> Path:
    n = round(seconds * VIDEO_FPS)
    levels = 100 + (np.arange(n) % 20)
    frames = np.broadcast_to(levels[:, None, None, None], (n, VIDEO_SIZE, VIDEO_SIZE, 3)).astype(np.uint8)
    return write_video(path, frames, VIDEO_FPS, audio=speech_like(seconds))


def training_clips(n: int, cfg, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(video (n, 3, F, S, S), audio (n, T, M), label (n,)): half real (in sync), half fake."""
    rng = np.random.default_rng(seed)
    feats = audio_features(cfg)
    frames, size, fps = cfg.model.video.num_frames, cfg.model.video.image_size, cfg.data.fps
    face = astronaut(size).astype(np.float32) / 255.0
    videos, audios, labels = [], [], []
    for i in range(n):
        fake = i % 2
        phase = rng.uniform(0, 2 * math.pi)
        wave = speech_like(cfg.data.clip_seconds, 2.0, phase)
        t = np.arange(frames) / fps
        gain = 0.6 + 0.4 * envelope(t, 2.0, phase + (math.pi if fake else 0.0))
        videos.append(torch.from_numpy(face[None] * gain[:, None, None, None]).permute(3, 0, 1, 2))
        audios.append(feats(wave))
        labels.append(float(fake))
    return torch.stack(videos).float(), torch.stack(audios).float(), torch.tensor(labels)


def train_tiny_detector(steps: int = 30, seed: int = 0):
    """(model, cfg, losses): the tiny detector after `steps` full-batch Adam steps on 16 clips."""
    cfg = tiny_config()
    torch.manual_seed(seed)
    model = build_model(cfg.model, "detector")
    video, audio, label = training_clips(16, cfg, seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        out = model(video, audio)
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(x, label) for x in out.logits().values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), cfg, losses


@functools.cache
def tiny_checkpoint(folder: str) -> tuple[Path, tuple[float, ...]]:
    """Train once per session (per `folder`) and save: (weights path, training losses)."""
    model, cfg, losses = train_tiny_detector()
    path = save_weights(Path(folder) / "tiny_detector.safetensors", model.state_dict(), cfg, "detector",
                        heads="trained")
    return path, tuple(losses)
