"""Face detection and face cropping for clips of decoded frames.

Detectors share one small protocol (:class:`FaceDetector`): frames in, per-frame boxes with scores out,
best first. :class:`FaceCropper` turns detections into fixed-size face crops with the official rule
(highest-score box, width and height enlarged about the centre, clamped, cropped, resized bilinearly
without keeping the aspect ratio) and fills frames without a detection from the nearest detected frame
in time, within a tolerance, instead of dropping the clip (docs/official-differences.md#preprocessing).
:class:`FaceTrack` applies the same rule to a stream of frames (whole-video scoring), detecting each
frame once and holding only the frames still waiting for a box.
"""
from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from havic.data.errors import MediaError
from havic.data.retinaface import RetinaFace, decode_boxes, load_retinaface_weights, prior_boxes

__all__ = ["FaceDetector", "RetinaFaceDetector", "HaarDetector", "build_detector", "expand_boxes", "CropResult",
           "FaceCropper", "FaceTrack"]

logger = logging.getLogger(__name__)

# FaceX-Zoo's preprocessing: BGR pixel values minus these channel means, no scaling.
BGR_MEAN = (104.0, 117.0, 123.0)

FACEXZOO_HINT = (
    "RetinaFace needs FaceX-Zoo's face-detection weights: set data.face.weights (--face-weights) to FaceX-Zoo's "
    "models directory (the folder holding face_detection/face_detection_1.0/face_detection_retina.pkl, i.e. "
    "face_sdk/models of https://github.com/JDAI-CV/FaceX-Zoo; see checkpoints/README.md), the .pkl itself, or "
    "a file written by havic.data.retinaface.convert_facexzoo; data.face.detector=haar (--face-detector haar) "
    "needs no weights"
)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}")


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a stack of same-sized RGB frames."""

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """Detect faces.

        Args:
            frames: (N, H, W, 3) uint8 RGB.

        Returns:
            N arrays of shape (K_i, 5): x1, y1, x2, y2 in pixels and a score, sorted by score, best first.
            K_i may be 0.
        """
        ...


class RetinaFaceDetector:
    """RetinaFace mobilenet0.25 with FaceX-Zoo's pre- and post-processing, batched over frames.

    Boxes are computed at the frames' full resolution (no resizing), as FaceX-Zoo does. Scores are the
    softmax face probability.

    Args:
        weights: FaceX-Zoo's models directory or .pkl, a converted ``.safetensors``/``torch.save`` file,
            or a state dict already in memory.
        device: where the network runs (any torch device).
        conf_threshold: keep anchors whose face probability is strictly above this (FaceX-Zoo: 0.7).
        nms_threshold: IoU above which a lower-scored box is suppressed (FaceX-Zoo: 0.2).
        batch_size: most frames per forward pass.
        max_batch_pixels: also cap a forward pass at this many pixels (frames x H x W), at least one
            frame. None: 2**20 on the CPU, where batches of large frames were measured to be slower per
            frame (720p: 57 ms/frame one at a time, 177 ms/frame in eights, 2 threads), no cap elsewhere.
    """

    def __init__(
        self,
        weights: str | os.PathLike | Mapping[str, Tensor],
        device: str | torch.device = "cpu",
        conf_threshold: float = 0.7,
        nms_threshold: float = 0.2,
        batch_size: int = 16,
        max_batch_pixels: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        state_dict = weights if isinstance(weights, Mapping) else load_retinaface_weights(weights)
        self.device = torch.device(device)
        self.model = RetinaFace()
        self.model.load_state_dict(state_dict, strict=True)
        self.model.eval().to(self.device)
        self.conf_threshold = float(conf_threshold)
        self.nms_threshold = float(nms_threshold)
        self.batch_size = int(batch_size)
        if max_batch_pixels is None and self.device.type == "cpu":
            max_batch_pixels = 1 << 20
        self.max_batch_pixels = max_batch_pixels
        self._mean = torch.tensor(BGR_MEAN, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._priors: dict[tuple[int, int], Tensor] = {}

    def preprocess(self, frames: np.ndarray) -> Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 BGR minus the means, on the detector's device.

        The arithmetic stays in float32 (a numpy float32 image minus a tuple of ints would be float64).
        """
        # torch wants writable memory; decoded or read-only arrays are copied once here.
        x = torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(self.device)
        x = x.flip(-1).permute(0, 3, 1, 2).to(torch.float32)
        return (x - self._mean).contiguous()

    def _priors_for(self, height: int, width: int) -> Tensor:
        key = (height, width)
        if key not in self._priors:
            if len(self._priors) >= 8:      # a long stream of differently sized videos: keep it bounded
                self._priors.clear()
            self._priors[key] = prior_boxes(height, width, device=self.device)
        return self._priors[key]

    @torch.inference_mode()
    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """See :meth:`FaceDetector.detect`; returns float32 (K_i, 5) arrays."""
        import torchvision  # heavy; only the detector needs it

        _check_frames(frames)
        n, height, width = frames.shape[:3]
        priors = self._priors_for(height, width)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=self.device)
        step = self.batch_size
        if self.max_batch_pixels is not None:
            step = max(1, min(step, self.max_batch_pixels // (height * width)))
        results: list[np.ndarray] = []
        for start in range(0, n, step):
            out = self.model(self.preprocess(frames[start:start + step]))
            scores = out.logits.softmax(dim=-1)[..., 1]                      # (B, P)
            boxes = decode_boxes(out.loc, priors) * scale                    # (B, P, 4) pixels
            ids_frame, ids_prior = torch.nonzero(scores > self.conf_threshold, as_tuple=True)
            kept_boxes, kept_scores = boxes[ids_frame, ids_prior], scores[ids_frame, ids_prior]
            # FaceX-Zoo's NMS measures sizes as (x2 - x1 + 1); shifting x2, y2 by one pixel makes the
            # standard IoU equal to that one.
            keep = torchvision.ops.batched_nms(
                kept_boxes + kept_boxes.new_tensor([0.0, 0.0, 1.0, 1.0]), kept_scores, ids_frame, self.nms_threshold
            )                                                                # sorted by score, descending
            dets = torch.cat([kept_boxes[keep], kept_scores[keep, None]], dim=1).cpu().numpy()
            ids = ids_frame[keep].cpu().numpy()
            order = np.argsort(ids, kind="stable")                           # group by frame, keep order
            counts = np.bincount(ids, minlength=out.loc.size(0))
            results.extend(np.split(dets[order], np.cumsum(counts)[:-1]))
        return results


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (``haarcascade_frontalface_default.xml``, bundled with cv2).

    Score: the number of raw sliding-window hits that were merged into the box (OpenCV's
    ``numDetections``; at least ``min_neighbors + 1``). More hits means a more confident face; it is an
    unnormalised count, not a probability, and not comparable with RetinaFace's scores.

    Args:
        scale_factor: image-pyramid step of ``detectMultiScale``.
        min_neighbors: hits a box needs to be kept.
        min_size: smallest face (width, height) in pixels; None uses the cascade's 24 x 24 window.
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: tuple[int, int] | None = None):
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""),
                            "haarcascade_frontalface_default.xml")
        if not hasattr(cv2, "CascadeClassifier") or not os.path.isfile(path):
            raise RuntimeError(
                f"OpenCV's Haar cascade is unavailable ({path!r}); it ships with opencv-python-headless<5"
            )
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load the Haar cascade {path}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = tuple(min_size) if min_size is not None else (0, 0)

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """See :meth:`FaceDetector.detect`; returns float32 (K_i, 5) arrays."""
        _check_frames(frames)
        results = []
        for frame in frames:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            rects, hits = self.cascade.detectMultiScale2(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=self.min_size
            )
            rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
            hits = np.asarray(hits, dtype=np.float32).reshape(-1)
            dets = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:], hits[:, None]], axis=1)
            results.append(dets[np.argsort(-hits, kind="stable")])
        return results


def build_detector(
    name: str,
    weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
    device: str | torch.device = "cpu",
    **kwargs,
) -> FaceDetector:
    """Build a face detector by name.

    Args:
        name: "retinaface" (needs ``weights``) or "haar".
        weights: see :class:`RetinaFaceDetector`; unused by "haar".
        device: torch device for "retinaface"; Haar always runs on the CPU.
        **kwargs: passed to the detector's constructor.
    """
    if name == "retinaface":
        if weights is None:
            raise ValueError(FACEXZOO_HINT)
        return RetinaFaceDetector(weights, device=device, **kwargs)
    if name == "haar":
        return HaarDetector(**kwargs)
    raise ValueError(f"unknown face detector {name!r}; choose 'retinaface' or 'haar'")


def expand_boxes(boxes: np.ndarray, height: int, width: int, margin: float = 1.3, square: bool = False) -> np.ndarray:
    """Official crop-box rule, vectorised.

    Box corners are truncated to integers; width and height are scaled by ``margin`` about the centre
    (independently, unless ``square`` first widens the shorter side to the longer one); the new corners
    are truncated and clamped to the image. Degenerate boxes keep at least one pixel.

    Args:
        boxes: (N, 4) x1, y1, x2, y2 in pixels.

    Returns:
        (N, 4) int64 x1, y1, x2, y2 with 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height; crop is
        ``frame[y1:y2, x1:x2]``.
    """
    b = np.trunc(np.asarray(boxes, dtype=np.float64))
    centre = (b[:, :2] + b[:, 2:]) / 2
    size = b[:, 2:] - b[:, :2]
    if square:
        size = np.repeat(size.max(axis=1, keepdims=True), 2, axis=1)
    half = size * margin / 2
    limit = np.array([width, height], dtype=np.float64)
    lo = np.clip(np.trunc(centre - half), 0, limit - 1)
    hi = np.clip(np.trunc(centre + half), lo + 1, limit)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


@dataclass
class CropResult:
    """Face crops of one clip.

    Attributes:
        crops: (N, size, size, 3) uint8 RGB.
        boxes: (N, 4) float32 crop boxes x1, y1, x2, y2 actually cut from each frame (after margin/clamp).
        is_detected: (N,) bool, True where the frame's own detection was used.
        source_index: (N,) int64, the frame whose detection gave each box (itself when detected).
        n_filled: frames that borrowed a box from another frame.
    """

    crops: np.ndarray
    boxes: np.ndarray
    is_detected: np.ndarray
    source_index: np.ndarray
    n_filled: int


class FaceCropper:
    """Cut one face track per clip: the best box per frame, enlarged, clamped, resized.

    Args:
        detector: any :class:`FaceDetector`.
        size: output side in pixels (crops are resized to size x size, aspect ratio not preserved).
        margin: factor applied to the box width and height about its centre (official training: 1.3).
        square: make the box square (longer side) before the margin.
        max_gap_s: a frame without a detection borrows the box of the nearest detected frame in time if
            that frame is at most this many seconds away; otherwise the clip fails. 0 reproduces the
            official "any miss drops the clip"; None accepts any distance.
    """

    def __init__(
        self,
        detector: FaceDetector,
        size: int = 224,
        margin: float = 1.3,
        square: bool = False,
        max_gap_s: float | None = 1.0,
    ) -> None:
        if size < 1 or margin <= 0:
            raise ValueError(f"size must be >= 1 and margin > 0, got size={size}, margin={margin}")
        if max_gap_s is not None and max_gap_s < 0:
            raise ValueError(f"max_gap_s must be >= 0 or None, got {max_gap_s}")
        self.detector = detector
        self.size = int(size)
        self.margin = float(margin)
        self.square = bool(square)
        self.max_gap_s = max_gap_s

    def best_boxes(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, 4) float64 highest-score box of each frame, NaN where none."""
        dets = self.detector.detect(frames)
        if len(dets) != len(frames):
            raise RuntimeError(f"detector returned {len(dets)} results for {len(frames)} frames")
        best = np.full((len(frames), 4), np.nan)
        for i, d in enumerate(dets):
            if len(d):
                best[i] = d[0, :4]                                              # sorted best first
        return best

    def cut(self, frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The crop rule (:func:`expand_boxes`, bilinear resize) on one detection box per frame.

        (N, H, W, 3) uint8 RGB frames, (N, 4) boxes x1, y1, x2, y2 -> (N, size, size, 3) uint8 crops
        and the (N, 4) int64 boxes actually cut (after margin and clamping).
        """
        height, width = frames.shape[1:3]
        cut = expand_boxes(boxes, height, width, self.margin, self.square)
        crops = np.stack([
            np.asarray(Image.fromarray(frame[y1:y2, x1:x2]).resize((self.size, self.size), Image.BILINEAR))
            for frame, (x1, y1, x2, y2) in zip(frames, cut)
        ])
        return crops, cut

    def crop(self, frames: np.ndarray, times: np.ndarray, path: str) -> CropResult:
        """Detect, fill gaps and crop.

        Args:
            frames: (N, H, W, 3) uint8 RGB.
            times: (N,) presentation times in seconds.
            path: the video, named in errors.

        Raises:
            MediaError: reason "no_frames" for N == 0; "no_face" when no frame has a face, or when a frame
                without one is further than ``max_gap_s`` from every detected frame.
        """
        _check_frames(frames)
        times = np.asarray(times, dtype=np.float64)
        n = frames.shape[0]
        if times.shape != (n,):
            raise ValueError(f"times must have shape ({n},) to match frames, got {times.shape}")
        if n == 0:
            raise MediaError(path, "no_frames", "no frames to crop")
        best = self.best_boxes(frames)
        is_detected = ~np.isnan(best[:, 0])
        if not is_detected.any():
            raise MediaError(path, "no_face", f"no face detected in any of {n} frames")
        ids_det = np.flatnonzero(is_detected)

        # Nearest detected frame in time; detected frames are ordered by time so ties go to the earlier one.
        ids_det = ids_det[np.argsort(times[ids_det], kind="stable")]
        dist = np.abs(times[:, None] - times[ids_det][None, :])                 # (N, D)
        nearest = dist.argmin(axis=1)
        gap = np.where(is_detected, 0.0, dist[np.arange(n), nearest])
        # 1e-9 s absorbs float error in times built as k * step.
        if self.max_gap_s is not None and (gap > self.max_gap_s + 1e-9).any():
            worst = int(gap.argmax())
            raise MediaError(
                path, "no_face",
                f"frame {worst} (t={times[worst]:.3f} s) has no face and the nearest detection is "
                f"{gap[worst]:.3f} s away (max_gap_s={self.max_gap_s}); {ids_det.size}/{n} frames detected",
            )
        source_index = np.where(is_detected, np.arange(n), ids_det[nearest])
        crops, boxes = self.cut(frames, best[source_index])
        n_filled = int((~is_detected).sum())
        if n_filled:
            logger.debug("%s: %d/%d frames took the box of a nearby detected frame", path, n_filled, n)
        return CropResult(
            crops=crops,
            boxes=boxes.astype(np.float32),
            is_detected=is_detected,
            source_index=source_index.astype(np.int64),
            n_filled=n_filled,
        )


class FaceTrack:
    """Streaming detection and cropping over the sorted frame times of one video, with a cropper's rule.

    Frames are pushed in time order and detected in batches of `detect_batch`, each exactly once. A
    frame with a face is cut at once (:meth:`FaceCropper.cut`); one without waits (full frame held)
    until the nearest detected frame in time is known: the nearer of the previous and the next
    detection, ties to the earlier, as :meth:`FaceCropper.crop` decides over a whole clip. With
    ``cropper.max_gap_s`` set, a frame waits at most that long, then has no crop (None); with None
    it waits for the next detection, so memory grows with the longest stretch without a face.

    Args:
        cropper: detector and crop rule; times: (N,) ascending frame times in seconds; path: the
            video, named in errors; detect_batch: frames per detector call; keep: frame indices
            whose crops are also kept in ``samples`` (for reports).

    Attributes:
        crops: frame index -> (size, size, 3) uint8 crop or None, for resolved, unreleased frames.
        prefix: every frame before this index is resolved.
        peak_held: the most frames (pending, waiting or cropped) held at once.
    """

    def __init__(self, cropper: FaceCropper, times: np.ndarray, path: str, detect_batch: int,
                 keep: Iterable[int] = ()) -> None:
        self.cropper, self.times, self.path = cropper, times, path
        self.detect_batch = max(1, int(detect_batch))
        self.n = times.size
        self.boxes = np.full((self.n, 4), np.nan)
        self.detected: list[int] = []          # indices with their own detection, ascending
        self.n_known = 0                       # frames 0..n_known-1 went through the detector
        self.pending: list[tuple[int, np.ndarray]] = []
        self.waiting: dict[int, np.ndarray] = {}
        self.crops: dict[int, np.ndarray | None] = {}
        self.done = np.zeros(self.n, dtype=bool)
        self.prefix = 0
        self.n_pushed = self.n_filled = self.n_detector_calls = self.n_detected_frames = self.peak_held = 0
        self.keep = set(keep)
        self.samples: dict[int, np.ndarray] = {}

    def held(self) -> int:
        """Frames held now: awaiting detection or a neighbour's box, and crops not yet released."""
        return len(self.pending) + len(self.waiting) + sum(c is not None for c in self.crops.values())

    def push(self, j: int, frame: np.ndarray) -> None:
        """Add frame `j` ((H, W, 3) uint8 RGB); frames come in index order."""
        self.pending.append((j, frame))
        self.n_pushed += 1
        self.peak_held = max(self.peak_held, self.held())
        if len(self.pending) >= self.detect_batch:
            self._detect()
            self._resolve(final=False)

    def finish(self) -> None:
        """Detect the last frames and resolve every waiting one; MediaError "no_face" if none has a face."""
        self._detect()
        if not self.detected:
            raise MediaError(self.path, "no_face", f"no face detected in any of {self.n_known} frames")
        self._resolve(final=True)

    def release_below(self, j: int) -> None:
        """Forget the crops of frames before `j` (no window in flight needs them)."""
        for i in [i for i in self.crops if i < j]:
            del self.crops[i]

    def _cut(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self.cropper.cut(frame[None], box[None])[0][0]

    def _detect(self) -> None:
        if not self.pending:
            return
        best = self.cropper.best_boxes(np.stack([f for _, f in self.pending]))
        self.n_detector_calls += 1
        self.n_detected_frames += len(self.pending)
        for (j, frame), box in zip(self.pending, best):
            if np.isnan(box[0]):
                self.waiting[j] = frame
            else:
                self.boxes[j] = box
                self.detected.append(j)
                self._set(j, self._cut(frame, box))
        self.n_known = self.pending[-1][0] + 1
        self.pending = []
        self.peak_held = max(self.peak_held, self.held())

    def _set(self, j: int, crop: np.ndarray | None) -> None:
        self.crops[j] = crop
        self.done[j] = True
        if crop is not None and j in self.keep:
            self.samples[j] = crop
        while self.prefix < self.n and self.done[self.prefix]:
            self.prefix += 1

    def _resolve(self, final: bool) -> None:
        t = self.times
        horizon = math.inf if final else t[self.n_known - 1]
        gap = self.cropper.max_gap_s
        for j in sorted(self.waiting):
            k = bisect.bisect_left(self.detected, j)
            prev = self.detected[k - 1] if k > 0 else None
            nxt = self.detected[k] if k < len(self.detected) else None
            d_prev = t[j] - t[prev] if prev is not None else math.inf
            d_next = t[nxt] - t[j] if nxt is not None else math.inf
            if nxt is not None or horizon >= t[j] + d_prev - 1e-9:
                source, dist = (prev, d_prev) if d_prev <= d_next else (nxt, d_next)
            elif gap is not None and horizon > t[j] + gap + 1e-9:
                source, dist = None, math.inf              # any later detection is too far as well
            else:
                continue                                   # a nearer detection may still come
            frame = self.waiting.pop(j)
            if source is None or (gap is not None and dist > gap + 1e-9):
                self._set(j, None)
            else:
                self.n_filled += 1
                self._set(j, self._cut(frame, self.boxes[source]))
