"""The Python API: load a detector once, then score videos and read their per-window features::

    import havic
    det = havic.load_detector("runs/<finetune run>/export/best.safetensors")  # or "hf://ORG/REPO"
    pred = det.score("video.mp4")        # pred.score, pred.window_starts, pred.window_logits, pred.flags
    preds = det.score_many(["folder/", "manifest.csv"])
    feats = det.features("video.mp4")    # feats.features["video.3"]: (windows, dim)

:mod:`~havic.api.detector` holds :func:`load_detector` and :class:`Detector` (with examples that
run as doctests); :mod:`~havic.api.features` the per-window feature record and its recorder.
"""
from havic.api.detector import Detector, load_detector
from havic.api.features import PooledFeatureRecorder, WindowFeatures

__all__ = ["Detector", "PooledFeatureRecorder", "WindowFeatures", "load_detector"]
