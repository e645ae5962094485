"""Token grids: how inputs are cut into patches, in which order, and how segments are formed.

A segment is a contiguous block of ``num_tokens / num_segments`` tokens in token order. For video
(time-major tubelets) a segment is always a time span. For audio the token order is a switch
(docs/official-differences.md#patch-embeddings-and-token-order,
docs/official-differences.md#the-audio-segment-bug):

* ``"time"`` (paper): the fbank image is (time, mel), tokens run time-major, so each segment is a
  time span (0.4 s at full size) aligned with one video tubelet step;
* ``"mel"`` (official): the image is (mel, time), tokens run mel-major, so each "segment" is a mel
  band spanning the whole clip. Needed to load the released weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from havic.models.pos_embed import sincos_1d, sincos_2d


def _check_shape(x: Tensor, expected: tuple[int | None, ...], name: str) -> None:
    """Raise ValueError naming the expected and actual shape (None = any size)."""
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


@dataclass(frozen=True)
class VideoGrid:
    """Tubelet grid of a (B, 3, T, H, W) clip. Token index = t * (h * w) + y * w + x."""

    num_frames: int
    image_size: int
    tubelet_size: int
    patch_size: int
    num_segments: int
    channels: int = 3

    def __post_init__(self) -> None:
        if self.num_frames % self.tubelet_size:
            raise ValueError(f"video frames {self.num_frames} not divisible by tubelet {self.tubelet_size}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image size {self.image_size} not divisible by patch {self.patch_size}")
        if self.time_steps % self.num_segments:
            raise ValueError(f"{self.time_steps} tubelet steps cannot form {self.num_segments} equal segments")

    @property
    def time_steps(self) -> int:
        return self.num_frames // self.tubelet_size

    @property
    def side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_step(self) -> int:
        return self.side * self.side

    @property
    def num_tokens(self) -> int:
        return self.time_steps * self.tokens_per_step

    @property
    def patch_dim(self) -> int:
        return self.channels * self.tubelet_size * self.patch_size**2

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.channels, self.num_frames, self.image_size, self.image_size)

    def check(self, video: Tensor) -> None:
        _check_shape(video, (None, *self.input_shape), "video")

    def token_time(self) -> Tensor:
        """(L,) tubelet time step of every token."""
        return torch.arange(self.num_tokens) // self.tokens_per_step

    def segment_ids(self) -> Tensor:
        """(L,) segment of every token."""
        return torch.arange(self.num_tokens) // (self.num_tokens // self.num_segments)

    def position_table(self, dim: int) -> Tensor:
        """(L, dim) 1-D sin-cos table over the flat token index (MARLIN convention)."""
        return sincos_1d(torch.arange(self.num_tokens), dim)

    def patchify(self, video: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, L, C * dt * p * p), values ordered (c, dt, dy, dx)."""
        self.check(video)
        return rearrange(video, "b c (t dt) (y dy) (x dx) -> b (t y x) (c dt dy dx)",
                         dt=self.tubelet_size, dy=self.patch_size, dx=self.patch_size)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """Inverse of :meth:`patchify`: (B, L, patch_dim) -> (B, C, T, H, W)."""
        _check_shape(patches, (None, self.num_tokens, self.patch_dim), "video patches")
        return rearrange(patches, "b (t y x) (c dt dy dx) -> b c (t dt) (y dy) (x dx)",
                         y=self.side, x=self.side, c=self.channels, dt=self.tubelet_size, dy=self.patch_size)


@dataclass(frozen=True)
class AudioGrid:
    """Patch grid of a (B, T, F) fbank (T time frames, F mel bins).

    The fbank is viewed as an image, (B, 1, T, F) for ``order="time"`` or (B, 1, F, T) for
    ``order="mel"``; tokens are the p x p patches of that image in row-major order and the values
    of a patch are row-major too.
    """

    num_frames: int
    num_mel_bins: int
    patch_size: int
    num_segments: int
    order: str = "time"

    def __post_init__(self) -> None:
        if self.order not in ("time", "mel"):
            raise ValueError(f"audio token order must be 'time' or 'mel', got {self.order!r}")
        for n, what in ((self.num_frames, "frames"), (self.num_mel_bins, "mel bins")):
            if n % self.patch_size:
                raise ValueError(f"audio {what} {n} not divisible by patch {self.patch_size}")
        if self.rows % self.num_segments:
            axis = "time patches" if self.order == "time" else "mel bands"
            raise ValueError(f"{self.rows} {axis} cannot form {self.num_segments} equal segments")

    @property
    def time_patches(self) -> int:
        return self.num_frames // self.patch_size

    @property
    def mel_patches(self) -> int:
        return self.num_mel_bins // self.patch_size

    @property
    def rows(self) -> int:
        return self.time_patches if self.order == "time" else self.mel_patches

    @property
    def cols(self) -> int:
        return self.mel_patches if self.order == "time" else self.time_patches

    @property
    def num_tokens(self) -> int:
        return self.time_patches * self.mel_patches

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.num_frames, self.num_mel_bins)

    def check(self, audio: Tensor) -> None:
        _check_shape(audio, (None, *self.input_shape), "audio")

    def to_image(self, audio: Tensor) -> Tensor:
        """(B, T, F) -> (B, 1, rows * p, cols * p) in this grid's orientation."""
        self.check(audio)
        img = audio if self.order == "time" else audio.transpose(1, 2)
        return img.unsqueeze(1)

    def from_image(self, image: Tensor) -> Tensor:
        """Inverse of :meth:`to_image`."""
        img = image.squeeze(1)
        return img if self.order == "time" else img.transpose(1, 2)

    def token_time(self) -> Tensor:
        """(L,) time-patch index of every token."""
        idx = torch.arange(self.num_tokens)
        return idx // self.cols if self.order == "time" else idx % self.cols

    def token_mel(self) -> Tensor:
        """(L,) mel-band index of every token."""
        idx = torch.arange(self.num_tokens)
        return idx % self.cols if self.order == "time" else idx // self.cols

    def segment_ids(self) -> Tensor:
        """(L,) segment of every token."""
        return torch.arange(self.num_tokens) // (self.num_tokens // self.num_segments)

    def position_table(self, dim: int) -> Tensor:
        """(L, dim): first half encodes the time patch, second half the mel band.

        See docs/official-differences.md#sin-cos-tables.
        """
        return sincos_2d(self.token_time(), self.token_mel(), dim)

    def patchify(self, audio: Tensor) -> Tensor:
        """(B, T, F) -> (B, L, p * p)."""
        return rearrange(self.to_image(audio), "b 1 (r pr) (c pc) -> b (r c) (pr pc)",
                         pr=self.patch_size, pc=self.patch_size)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """(B, L, p * p) -> (B, T, F)."""
        _check_shape(patches, (None, self.num_tokens, self.patch_dim), "audio patches")
        image = rearrange(patches, "b (r c) (pr pc) -> b 1 (r pr) (c pc)", r=self.rows, pr=self.patch_size)
        return self.from_image(image)
