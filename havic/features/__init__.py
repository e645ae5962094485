"""Frozen-encoder features of whole videos, for probes, explanations and anomaly detectors.

* :mod:`~havic.features.records`: :class:`FeatureSequence`, the record every analysis reads;
* :mod:`~havic.features.align`: time-axis rules (pair stacking, chunks, segment means);
* :mod:`~havic.features.extractor`: the :class:`Extractor` interface;
* :mod:`~havic.features.havic_encoder`: HAVIC taps and fused streams per segment or window;
* :mod:`~havic.features.hf`: Wav2Vec2 / XLS-R, CLIP vision and VideoMAE from ``transformers``;
* :mod:`~havic.features.registry`: extractors by name;
* :mod:`~havic.features.store`: the feature store (one safetensors file per video, index, failures);
* :mod:`~havic.features.run`: many videos into a store, resumable and shardable.
"""
from havic.features.records import MODALITIES, FeatureSequence

__all__ = ["FeatureSequence", "MODALITIES"]
