"""Test helpers for the feature extractors: tiny random Hugging Face models saved to folders, short videos.

Imported by the feature test modules; not a test module itself. Nothing is downloaded: every model
is built from a config with tiny sizes and saved with its preprocessor, then loaded from the folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from havic.data.video import write_video

FPS = 25


def save_wav2vec2(folder: Path) -> Path:
    """Wav2Vec2 with two conv layers of stride 5 x 64 (320 samples: 50 Hz at 16 kHz), 16-d."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(8, 8), conv_stride=(5, 64), conv_kernel=(10, 64), num_conv_pos_embeddings=4,
                         num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


def save_clip(folder: Path) -> Path:
    """CLIP vision with projection: 32 px, 8 px patches, 8-d embedding."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=8)
    CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_videomae(folder: Path) -> Path:
    """VideoMAE: 16 frames of 32 px, tubelet 2, 8 px patches (8 time steps x 16 places), 16-d."""
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    torch.manual_seed(0)
    cfg = VideoMAEConfig(image_size=32, patch_size=8, num_frames=16, tubelet_size=2, hidden_size=16,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    VideoMAEModel(cfg).save_pretrained(folder)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def noise_video(path: Path, n_frames: int, size: int = 48, seed: int = 0, audio: bool = True) -> Path:
    """`n_frames` random frames at 25 fps with a tone, so every frame and chunk differs."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n_frames, size, size, 3), dtype=np.uint8)
    t = np.arange(round(n_frames / FPS * 16000)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t)).astype(np.float32) if audio else None
    return write_video(path, frames, FPS, audio=wave)
