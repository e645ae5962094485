"""Hugging Face ``transformers`` backbones as extractors: Wav2Vec2 / XLS-R, CLIP vision, VideoMAE.

Each takes a model id (read from the user's Hugging Face cache, downloaded there if absent and
allowed) or a local folder saved with ``save_pretrained`` (weights, config and its preprocessor
config), and uses the checkpoint's own preprocessor:

=========== ================================================================ ========= ==========
extractor   input and pooling                                                 rate      name
=========== ================================================================ ========= ==========
wav2vec2    the whole audio track in one pass, mono 16 kHz; ``last_hidden_state`` 25 Hz   ``wav2vec2/last``
            at 50 Hz stacked in pairs (:func:`~havic.features.align.stack_pairs`;
            an odd count repeats the last frame), so the dimension doubles
clip        every decoded frame, full frame (no face crop), the projected image  fps       ``clip/image_embeds``
            embedding (``CLIPVisionModelWithProjection.image_embeds``)
videomae    full frames in non-overlapping 16-frame chunks (a trailing partial   fps / 2   ``videomae/last``
            chunk is dropped, :func:`~havic.features.align.chunk_spans`);
            ``last_hidden_state`` averaged over space: tubelet-2 time steps, so
            8 vectors per 16-frame chunk
=========== ================================================================ ========= ==========

The wav2vec2 rows are not truncated to the number of video frames (a reader aligning them to
frames does that). Frames are streamed and encoded in batches, so memory is bounded for CLIP and
VideoMAE; Wav2Vec2 sees the whole file at once, as the probed features were made.
"""
from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from havic.data.errors import MediaError
from havic.data.video import iter_frames_at, probe, read_audio
from havic.features.align import chunk_spans, stack_pairs
from havic.features.extractor import Extractor, weights_fingerprint
from havic.features.records import FeatureSequence
from havic.precision import autocast

__all__ = ["ClipExtractor", "HF_EXTRACTORS", "HFExtractor", "VideoMAEExtractor", "Wav2Vec2Extractor"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class HFExtractor(Extractor):
    """Shared loading of a ``transformers`` model and its preprocessor from an id or a folder.

    Args:
        model: a Hub model id (``facebook/wav2vec2-xls-r-2b``) or a local folder.
        device, precision, batch_size: see :class:`~havic.features.extractor.Extractor`.
    """

    def __init__(self, model: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32",
                 batch_size: int = 32, random_init: int | None = None) -> None:
        super().__init__(device, precision, batch_size)
        self.model_id = str(model)
        self.random_init = random_init
        self.model, self.processor = self._load(self.model_id)
        if random_init is not None:
            # The shortcut baseline: the same architecture and preprocessing, freshly initialised.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(random_init)
                self.model = type(self.model)(self.model.config)
        self.model.eval().to(self.device)
        folder = Path(self.model_id) if Path(self.model_id).is_dir() else self._cached_folder(self.model_id)
        files = [f for f in folder.iterdir() if f.suffix in _WEIGHT_SUFFIXES] if folder is not None else []
        self.fingerprint = weights_fingerprint(files) if files else f"id:{self.model_id}"
        if random_init is not None:
            self.fingerprint = f"random-init:{random_init}:{self.fingerprint}"

    @abstractmethod
    def _load(self, model_id: str) -> tuple[torch.nn.Module, Any]:
        """(model, preprocessor) of `model_id`."""

    @staticmethod
    def _cached_folder(model_id: str) -> Path | None:
        """The snapshot folder of a Hub id in the local cache, or None."""
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(model_id, "config.json")
        return Path(config).parent if isinstance(config, str) else None

    def settings(self) -> dict[str, Any]:
        return {"extractor": self.name, "weights": self.model_id, "fingerprint": self.fingerprint,
                "random_init": self.random_init, "model_type": str(self.model.config.model_type),
                "precision": self.precision, **self._settings()}

    def _settings(self) -> dict[str, Any]:
        return {}

    def _frames(self, file: Path) -> tuple[float, int, Any]:
        """(fps, number of frames, iterator of (H, W, 3) uint8 frames) at the video's own rate."""
        info = probe(file)
        if not (np.isfinite(info.fps) and info.fps > 0):
            raise MediaError(file, "no_frame_rate", "probe found no frame rate")
        n = info.n_frames or max(1, round(info.duration * info.fps))
        times = np.arange(n) / info.fps
        return float(info.fps), n, (frame for _, frame in iter_frames_at(file, times, size=(info.width, info.height)))


class Wav2Vec2Extractor(HFExtractor):
    """Wav2Vec2 / XLS-R ``last_hidden_state`` at 50 Hz, stacked in pairs to 25 Hz (see the module docstring)."""

    name = "wav2vec2"
    sample_rate = 16000

    def _load(self, model_id: str) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoFeatureExtractor, Wav2Vec2Model

        return Wav2Vec2Model.from_pretrained(model_id), AutoFeatureExtractor.from_pretrained(model_id)

    def _settings(self) -> dict[str, Any]:
        return {"layer": "last_hidden_state", "pairs": "stacked", "rate_hz": 25.0, "sample_rate": self.sample_rate}

    def extract(self, file: str | os.PathLike) -> list[FeatureSequence]:
        file = Path(file)
        wave = read_audio(file, self.sample_rate)
        if wave is None or wave.size < 400:         # one 25 ms receptive field
            raise MediaError(file, "no_audio", "no usable audio track")
        inputs = self.processor(wave, sampling_rate=self.sample_rate, return_tensors="pt")
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            hidden = self.model(inputs["input_values"].to(self.device)).last_hidden_state[0]
        self._report(1, 1)
        return [FeatureSequence("wav2vec2/last", stack_pairs(hidden.float().cpu()), 25.0, "audio", 0.0,
                                {"frames_50hz": int(hidden.shape[0])})]


class ClipExtractor(HFExtractor):
    """CLIP's projected image embedding of every full frame."""

    name = "clip"

    def _load(self, model_id: str) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection.from_pretrained(model_id), AutoImageProcessor.from_pretrained(model_id)

    def _settings(self) -> dict[str, Any]:
        return {"layer": "image_embeds", "frames": "every frame, full frame"}

    def _encode(self, frames: list[np.ndarray]) -> torch.Tensor:
        pixels = self.processor(images=frames, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            return self.model(pixel_values=pixels).image_embeds.float().cpu()

    def extract(self, file: str | os.PathLike) -> list[FeatureSequence]:
        file = Path(file)
        fps, n, frames = self._frames(file)
        out, batch = [], []
        for frame in frames:
            batch.append(frame)
            if len(batch) == self.batch_size:
                out.append(self._encode(batch))
                batch = []
                self._report(sum(len(o) for o in out), n)
        if batch:
            out.append(self._encode(batch))
        if not out:
            raise MediaError(file, "no_frames", "no frame decoded")
        return [FeatureSequence("clip/image_embeds", torch.cat(out), fps, "video")]


class VideoMAEExtractor(HFExtractor):
    """VideoMAE ``last_hidden_state`` of 16-frame chunks, averaged over space (see the module docstring)."""

    name = "videomae"

    def _load(self, model_id: str) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoImageProcessor, VideoMAEModel

        return VideoMAEModel.from_pretrained(model_id), AutoImageProcessor.from_pretrained(model_id)

    @property
    def chunk(self) -> int:
        return int(self.model.config.num_frames)

    def _settings(self) -> dict[str, Any]:
        return {"layer": "last_hidden_state", "chunk": self.chunk, "tubelet": int(self.model.config.tubelet_size),
                "pool": "mean over space", "partial_chunk": "dropped"}

    def _encode(self, chunks: list[list[np.ndarray]]) -> torch.Tensor:
        """B chunks of F frames -> (B * F / tubelet, D)."""
        pixels = torch.cat([self.processor(c, return_tensors="pt")["pixel_values"] for c in chunks]).to(self.device)
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            hidden = self.model(pixel_values=pixels).last_hidden_state.float().cpu()     # (B, T' * H' * W', D)
        steps = self.chunk // int(self.model.config.tubelet_size)
        return hidden.view(hidden.shape[0], steps, -1, hidden.shape[-1]).mean(dim=2).flatten(0, 1)

    def extract(self, file: str | os.PathLike) -> list[FeatureSequence]:
        file = Path(file)
        fps, n, frames = self._frames(file)
        planned = len(chunk_spans(n, self.chunk))
        out, chunk, chunks = [], [], []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == self.chunk:           # a trailing partial chunk never gets here: dropped
                chunks.append(chunk)
                chunk = []
            if len(chunks) == self.batch_size:
                out.append(self._encode(chunks))
                chunks = []
                self._report(len(out) * self.batch_size, planned)
        if chunks:
            out.append(self._encode(chunks))
        if not out:
            raise MediaError(file, "too_short", f"fewer than {self.chunk} frames: no whole chunk")
        tubelet = int(self.model.config.tubelet_size)
        return [FeatureSequence("videomae/last", torch.cat(out), fps / tubelet, "video")]


HF_EXTRACTORS: dict[str, type[HFExtractor]] = {
    "wav2vec2": Wav2Vec2Extractor, "clip": ClipExtractor, "videomae": VideoMAEExtractor,
}
