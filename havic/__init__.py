"""havic: holistic audio-visual intrinsic coherence for deepfake detection.

The top level names the Python API (:mod:`havic.api`) and the records it returns; each is
imported on first use, so ``import havic`` alone loads neither torch nor the models::

    import havic
    det = havic.load_detector("hf://ORG/REPO")        # or a weights file / checkpoint
    pred = det.score("video.mp4")                     # VideoPrediction: score, windows, flags
"""
from __future__ import annotations

import importlib
from typing import Any

from havic.version import __version__

# name -> the module that defines it, imported when the name is first read.
_LAZY = {
    "Detector": "havic.api",
    "WindowFeatures": "havic.api",
    "load_detector": "havic.api",
    "VideoPrediction": "havic.predictions",
    "read_predictions": "havic.predictions",
    "write_predictions_csv": "havic.predictions",
    "write_predictions_json": "havic.predictions",
    "load_config": "havic.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'havic' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
