"""The traces of the demo's fake faces: face swap and lip-sync re-rendering, in portrait space.

The fake categories (the table in :mod:`havic.demo.world`) replace the voice, the face or both;
:func:`havic.demo.world.plan_clips` decides which clip gets what, and the renderer applies these:

* face swap (``FVRA-swap``, ``FVFA``), :class:`FaceSwap`: the inner face (eyes, nose, mouth) of
  another identity, aligned on three landmarks, rendered at a lower resolution and blended in with
  a feathered elliptical mask (the seam), keeping its own colours;
* lip sync (``FVRA-lipsync``, as FakeAVCeleb's Wav2Lip videos), :func:`lipsync_region` and
  :func:`soften`: the lower face (nose down) re-rendered as lip-sync generators paste it: lower
  resolution, washed-out colours, and a generic lighter mouth interior (:data:`GENERATED_CAVITY`).

A replaced voice (``RVFA``, ``FVFA``, the donor audio of ``FVRA-lipsync``) needs no rendering: the
clip plays another identity's utterance (:mod:`havic.demo.speech`).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from havic.demo.faces import ASTRONAUT_INNER_FACE, PORTRAIT_SIZE, Identity, MouthRig

__all__ = [
    "GENERATED_CAVITY",
    "LIPSYNC_RESOLUTION_FACTOR",
    "SWAP_RESOLUTION_FACTOR",
    "FaceSwap",
    "lipsync_region",
    "soften",
]

# Generated regions are pasted at a lower resolution than the video (portrait pixels per generated pixel):
# face-swap generators render the inner face, lip-sync generators the lower face, at a few hundred pixels.
SWAP_RESOLUTION_FACTOR = 5.0
LIPSYNC_RESOLUTION_FACTOR = 6.0
# Lip-sync generators paint a generic mouth interior: lighter and pinker than a real one.
GENERATED_CAVITY = np.array([0.42, 0.2, 0.22], dtype=np.float32)


def _inner_face_mask(identity: Identity, feather_px: float) -> np.ndarray:
    """(P, P, 1) float32 alpha of the swapped region: a feathered ellipse in portrait space."""
    centre, axes = ASTRONAUT_INNER_FACE
    mask = np.zeros((PORTRAIT_SIZE, PORTRAIT_SIZE), dtype=np.float32)
    c = identity.to_portrait([centre])[0]
    m = identity.matrix[:, :2]
    angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    sx, sy = np.linalg.norm(m[:, 0]), np.linalg.norm(m[:, 1])
    cv2.ellipse(mask, (int(round(c[0])), int(round(c[1]))), (int(round(axes[0] * sx)), int(round(axes[1] * sy))),
                angle, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), feather_px)[..., None]


class FaceSwap:
    """Pastes the inner face of ``source`` onto ``target`` (portrait space), as face swapping does.

    The source is aligned with a similarity fitted on the eyes and mouth (so faces of another
    shape leave misaligned features), rendered at 1/:data:`SWAP_RESOLUTION_FACTOR` resolution as
    a generator's output would be, keeps its own colours, and is blended in with a feathered
    ellipse (the seam). Only the region's bounding box is computed.
    """

    def __init__(self, target: Identity, source: Identity) -> None:
        matrix, _ = cv2.estimateAffinePartial2D(source.landmarks().astype(np.float32),
                                                target.landmarks().astype(np.float32))
        mask = _inner_face_mask(target, feather_px=2.0)
        ys, xs = np.nonzero(mask[..., 0] > 1e-3)
        self.box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        x0, y0, x1, y1 = self.box
        self.mask = mask[y0:y1, x0:x1]
        self.matrix = matrix.copy()
        self.matrix[:, 2] -= (x0, y0)            # write straight into the box

    def apply(self, target_image: np.ndarray, source_image: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        pasted = cv2.warpAffine(source_image, self.matrix, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_REFLECT101)
        pasted = _downup(pasted, SWAP_RESOLUTION_FACTOR)
        out = target_image.copy()
        out[y0:y1, x0:x1] = target_image[y0:y1, x0:x1] * (1.0 - self.mask) + pasted * self.mask
        return out


def lipsync_region(identity: Identity) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Box (x0, y0, x1, y1) around the lower face and its feathered alpha, for the lip-sync fake."""
    rig = MouthRig(identity)
    hw = rig.half_width
    cx, cy = rig.centre
    x0, x1 = int(cx - 2.2 * hw), int(cx + 2.2 * hw)
    y0, y1 = int(cy - 1.7 * hw), int(cy + 2.8 * hw)        # from the nose down, as lip-sync models regenerate
    box = (max(x0, 0), max(y0, 0), min(x1, PORTRAIT_SIZE), min(y1, PORTRAIT_SIZE))
    h, w = box[3] - box[1], box[2] - box[0]
    alpha = np.zeros((h, w), dtype=np.float32)
    m = max(2, int(0.1 * min(h, w)))
    alpha[m:-m, m:-m] = 1.0
    return box, cv2.GaussianBlur(alpha, (0, 0), m / 2.0)[..., None]


def _downup(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` rendered at 1/factor resolution: area down-scaling, then bilinear up-scaling."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def soften(image: np.ndarray, box: tuple[int, int, int, int], alpha: np.ndarray, drift: float,
            factor: float = LIPSYNC_RESOLUTION_FACTOR) -> np.ndarray:
    """Re-render ``box`` at 1/factor resolution, washed out by ``drift`` (0-1), blended back with ``alpha``.

    The wash-out (colours pulled towards grey and lightened) is the generator's colour drift.
    """
    x0, y0, x1, y1 = box
    region = image[y0:y1, x0:x1]
    up = _downup(region, factor)
    grey = up.mean(axis=-1, keepdims=True)
    up = np.clip((up + drift * (grey - up)) * (1.0 + 0.3 * drift), 0.0, 1.0)
    out = image.copy()
    out[y0:y1, x0:x1] = region * (1.0 - alpha) + up * alpha
    return out
