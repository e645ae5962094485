"""What the media cases run on: a talking-face video and the face detector's weights.

Both come from the checkout's shared assets where they are present (``../shared/assets`` beside
the repository): ``megamind.avi``, a real 11 s talking face, and the FaceX-Zoo RetinaFace weights.
Without them the video is a generated talking face of the demo's synthetic world and the face
detector is OpenCV's Haar cascade, so that the suite runs anywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ASSETS", "default_video", "face_overrides", "synthetic_talking_video"]

ASSETS = Path(__file__).resolve().parents[2].parent / "shared" / "assets"


def synthetic_talking_video(folder: Path, seconds: float = 10.4, fps: float = 10.0, size: int = 224) -> Path:
    """A real (RVRA) talking face of the demo's synthetic world as an mp4 under `folder`, with speech.

    The face is in every frame, so both pipelines crop every frame without borrowing a box.
    """
    from havic.demo.world import SyntheticConfig, plan_clips, write_clips

    config = SyntheticConfig(duration_s=seconds, fps=fps, frame_size=size, n_identities=3)
    return write_clips(folder, plan_clips({"RVRA": 1}, config, prefix="talking_face"), config, labels_csv=None)[0]


def default_video(workdir: Path, quick: bool) -> Path:
    """megamind.avi from the shared assets or, with `quick` or without it, a synthetic talking face."""
    asset = ASSETS / "media" / "megamind.avi"
    if not quick and asset.is_file():
        return asset
    return synthetic_talking_video(workdir / "talking_face", seconds=10.4, fps=10.0, size=224)


def face_overrides(cfg: Any) -> list[str]:
    """Point RetinaFace at the shared FaceX-Zoo weights when none are configured, else use Haar."""
    if cfg.data.face.detector != "retinaface" or cfg.data.face.weights is not None:
        return []
    weights = ASSETS / "facexzoo" / "models"
    if weights.is_dir():
        return [f"data.face.weights={weights}"]
    return ["data.face.detector=haar"]
