"""havic: holistic audio-visual intrinsic coherence for deepfake detection."""
from havic.version import __version__

__all__ = ["__version__"]
