"""Feature-extraction cases of the benchmark suite: each extractor on the suite's video, into a store.

Per extractor (HAVIC, Wav2Vec2, CLIP, VideoMAE): videos/s and video frames/s of one whole video
extracted end to end (decoding, face crops for HAVIC, preprocessing, encoder), and the store's size
per hour of video. The encoders have random weights: HAVIC at the suite's configuration (tiny with
``--quick``), the Hugging Face models at their configs' default (base) sizes, or tiny with
``--quick``; throughput does not depend on the weights' values. Nothing is downloaded.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from havic.benchmarks.entries import entry, rss_metrics, spec_device, sync_of
from havic.benchmarks.timing import current_rss_bytes, reset_peak_rss, time_iterations
from havic.config import from_container

__all__ = ["FEATURE_EXTRACTORS", "bench_features", "random_hf_model"]

FEATURE_EXTRACTORS = ("havic", "wav2vec2", "clip", "videomae")
MB = 1e6


def random_hf_model(name: str, folder: Path, tiny: bool) -> Path:
    """A randomly initialised ``transformers`` model of family `name` and its preprocessor, saved to `folder`."""
    import transformers as tf

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else {}
    if name == "wav2vec2":
        extra = dict(conv_dim=(16, 16), conv_stride=(5, 64), conv_kernel=(10, 64), num_conv_pos_embeddings=8,
                     num_conv_pos_embedding_groups=2) if tiny else {}
        tf.Wav2Vec2Model(tf.Wav2Vec2Config(**small, **extra)).save_pretrained(folder)
        tf.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    elif name == "clip":
        extra = dict(image_size=32, patch_size=8, projection_dim=16) if tiny else {}
        tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(**small, **extra)).save_pretrained(folder)
        size = 32 if tiny else 224
        tf.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}) \
            .save_pretrained(folder)
    elif name == "videomae":
        extra = dict(image_size=32, patch_size=8) if tiny else {}
        tf.VideoMAEModel(tf.VideoMAEConfig(**small, **extra)).save_pretrained(folder)
        size = 32 if tiny else 224
        tf.VideoMAEImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}) \
            .save_pretrained(folder)
    else:
        raise ValueError(f"no Hugging Face family {name!r}")
    return folder


def _weights(name: str, cfg: Any, workdir: Path, tiny: bool) -> Path:
    if name != "havic":
        return random_hf_model(name, workdir / name, tiny)
    from havic.checkpoints import save_weights
    from havic.models import build_model

    torch.manual_seed(0)
    return save_weights(workdir / "havic.safetensors", build_model(cfg.model, "pretrain").state_dict(), cfg,
                        "pretrain")


def bench_features(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``spec["video"]`` through the extractor ``params["extractor"]``, written to a feature store."""
    from havic.data.video import probe
    from havic.features.havic_encoder import HavicExtractor
    from havic.features.hf import HF_EXTRACTORS
    from havic.features.store import FeatureStore, StoredVideo

    p = spec["params"]
    name = p["extractor"]
    device = spec_device(spec)
    cfg = from_container(spec["config"])
    file = Path(spec["video"])
    workdir = Path(spec["workdir"]) / f"features_{name}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    weights = _weights(name, cfg, workdir, bool(spec["quick"]))
    rss_import = current_rss_bytes()
    reset_peak_rss()
    if name == "havic":
        # The weights carry the suite's configuration, face detector included.
        extractor = HavicExtractor(weights, device=device, batch_size=int(p["batch_size"]))
    else:
        extractor = HF_EXTRACTORS[name](weights, device=device, batch_size=int(p["batch_size"]))
    store = FeatureStore.create(workdir / "store", {**extractor.settings(), "store_dtype": "float32"})
    result: dict[str, Any] = {}

    def once() -> None:
        result["sequences"] = extractor.extract(file)

    timing = time_iterations(once, sync=sync_of(device), iters=spec["video_iters"], warmup=0,
                             max_foreign_share=spec["max_foreign_share"], max_repeats=0)
    info = probe(file)
    stored = store.write(StoredVideo(str(file)), result["sequences"], info.duration)
    n_frames = info.n_frames or round(info.duration * info.fps)
    seconds = timing.median_s
    seqs = result["sequences"]
    metrics = {"seconds": seconds, "videos_per_s": 1.0 / seconds, "videos_per_min": 60.0 / seconds,
               "video_frames_per_s": n_frames / seconds,
               "store_mb_per_hour": stored.stat().st_size / MB * 3600.0 / info.duration,
               "n_sequences": len(seqs), "rows_per_video_s": sum(s.length for s in seqs) / len(seqs) / info.duration,
               **rss_metrics(rss_import)}
    shutil.rmtree(workdir, ignore_errors=True)
    size = "tiny" if spec["quick"] else "full-size config"
    params = dict(p, video=str(file), duration_s=info.duration, weights=f"random, {size}")
    return [entry("features", f"{name} b{p['batch_size']}", params, metrics, timing.summary())]
