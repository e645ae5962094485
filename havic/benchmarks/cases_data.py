"""Media cases of the benchmark suite: a 10 s video scored end to end, preprocessing, cache reads.

Each case also measures the official way of doing the same work in the same run
(:mod:`havic.benchmarks.official`): the official scoring pipeline beside ours, and the official
PNG + wav training layout beside our cache. See :mod:`havic.benchmarks.entries` for the spec a
case receives and the entries it returns.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from havic.benchmarks.cases_model import model_inputs
from havic.benchmarks.entries import entry, rss_metrics, spec_device, sync_of, timing_kwargs
from havic.benchmarks.official import official_layout, official_pipeline_score, read_official_layout, wav_roundtrip
from havic.benchmarks.timing import current_rss_bytes, reset_peak_rss, time_iterations
from havic.config import from_container
from havic.precision import autocast

__all__ = ["MAX_SECONDS", "bench_data", "bench_video", "face_detector", "official_stride"]

MAX_SECONDS = 10.0      # the seconds of the video scored


def face_detector(cfg: Any) -> Any:
    """The configured face detector alone (the official pipeline runs it frame by frame)."""
    from havic.data.face import build_detector

    face = cfg.data.face
    if face.detector == "retinaface":
        return build_detector("retinaface", face.weights, conf_threshold=float(face.conf_threshold))
    return build_detector("haar")


def official_stride(cfg: Any) -> int:
    """Frames between window starts: the official hop of 2 frames at 5 fps = 0.4 s, at ``data.fps``."""
    return max(1, round(0.4 * float(cfg.data.fps)))


def bench_video(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The first 10 s of ``spec["video"]`` scored by one pipeline, ``params["pipeline"]`` "official" or "ours"."""
    from havic.inference import VideoScorer, build_cropper
    from havic.models import build_model

    p = spec["params"]
    pipeline, precision = p["pipeline"], p["precision"]
    device = spec_device(spec)
    cfg = from_container(spec["config"])
    file = Path(spec["video"])
    fps = float(cfg.data.fps)
    stride = official_stride(cfg)
    rss_import = current_rss_bytes()
    reset_peak_rss()
    torch.manual_seed(0)
    model = build_model(cfg.model, "detector").to(device).eval()
    workdir = Path(spec["workdir"]) / f"video_{pipeline}_{precision}"
    result: dict[str, Any] = {}
    if pipeline == "official":
        detector = face_detector(cfg)

        def once() -> None:
            result["score"] = official_pipeline_score(file, model, cfg, detector, workdir, MAX_SECONDS, stride,
                                                      result)
    else:
        # The scorer prepares the model for its precision (matmul weights stored in bf16) in place.
        scorer = VideoScorer(model, cfg, build_cropper(cfg), batch_size=int(p["batch_size"]),
                             hop_s=stride / fps, max_seconds=MAX_SECONDS, device=device, precision=precision)

        def once() -> None:
            pred = scorer.score(file)
            if pred.error:
                raise RuntimeError(f"{file}: scoring failed: {pred.error} ({pred.error_detail})")
            result.update(score=pred.score, n_windows=pred.n_windows, n_frames=scorer.stats.n_frames,
                          n_detector_calls=scorer.stats.n_detector_calls)

    # Warm the model (kernels, allocator) on one window; a whole video per warm-up call would double the run.
    video, audio = model_inputs(cfg, 1, device)
    with torch.inference_mode(), autocast(device.type, "fp32" if pipeline == "official" else precision):
        model(video, audio)
    timing = time_iterations(once, sync=sync_of(device), iters=spec["video_iters"], warmup=0,
                             max_foreign_share=spec["max_foreign_share"], max_repeats=0)
    shutil.rmtree(workdir, ignore_errors=True)
    metrics = {"seconds": timing.median_s, "videos_per_min": 60.0 / timing.median_s, "score": result.get("score"),
               "n_windows": result.get("n_windows"), **rss_metrics(rss_import)}
    for key in ("n_frames", "n_detector_calls", "frames_without_face"):
        if key in result:
            metrics[key] = result[key]
    params = dict(p, seconds_scored=MAX_SECONDS, video=str(file), detector=cfg.data.face.detector)
    name = f"{pipeline} pipeline {precision}"
    name += f" b{p['batch_size']}" + (f", {precision} weights" if precision != "fp32" else "") if pipeline == "ours" \
        else " (one batch)"
    return [entry("video", name, params, metrics, timing.summary())]


def bench_data(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Preprocessing of ``spec["video"]`` into a cache, the cache's size, and clip reads against the official layout."""
    import cv2

    from havic.data.audio import AudioFeatures
    from havic.data.cache import ClipCache, build_index, entry_path, video_key
    from havic.data.datasets import ClipDataset
    from havic.data.manifest import ManifestRow
    from havic.data.preprocess import PreprocessSettings, process_video
    from havic.data.video import read_audio

    cfg = from_container(spec["config"])
    file = Path(spec["video"])
    root = Path(spec["workdir"]) / "cache"
    shutil.rmtree(root, ignore_errors=True)
    settings = PreprocessSettings.from_config(cfg)
    cropper = settings.build_cropper()
    ClipCache.create(root, settings.cache_settings())
    outcome: dict[str, Any] = {}

    def preprocess() -> None:
        outcome["result"] = process_video(str(file), None, root, settings, cropper)

    timing = time_iterations(preprocess, **timing_kwargs(spec))
    res = outcome["result"]
    if not res.ok:
        raise RuntimeError(f"{file}: preprocessing failed at {res.stage}: {res.reason} ({res.detail})")
    n_frames = res.n_clips * settings.num_frames
    cache_entry = entry_path(root, video_key(str(file)))
    clip_s = res.n_clips * settings.clip_seconds
    bytes_per_hour = cache_entry.stat().st_size / clip_s * 3600
    build_index(root, [ManifestRow(path=str(file), label=0, split="train")])
    cache = ClipCache(root)
    records = cache.records()
    # The same crops as PNG files (the official cache) for the size comparison.
    png_bytes = sum(len(cv2.imencode(".png", c[:, :, ::-1])[1]) for r in records for c in cache.load_clip(r).frames)
    out = [entry("data", "preprocess", {"clips": res.n_clips, "detector": settings.detector},
                 {"seconds": timing.median_s, "frames_per_s": n_frames / timing.median_s,
                  "video_s_per_s": clip_s / timing.median_s, "cache_gb_per_hour": bytes_per_hour / 1e9,
                  "official_png_crops_gb_per_hour": png_bytes / clip_s * 3600 / 1e9,
                  "entry_bytes": cache_entry.stat().st_size}, timing.summary())]

    # Reads: our cache (one npz per video, JPEG crops, raw fbank) against the official layout.
    dataset = ClipDataset.from_config(cfg, cache, records)
    reps = max(1, round((4 if spec["quick"] else 60) / len(records)))
    features = AudioFeatures.from_config(cfg)
    sr = features.sample_rate
    official_dir = Path(spec["workdir"]) / "official_layout"
    layout = official_layout(records, cache, official_dir)
    wave_all = read_audio(file, sr)
    for (_, wav), r in zip(layout, records):
        start = round(r.start_s * sr)
        wav_roundtrip(wave_all[start:start + round(settings.clip_seconds * sr)], wav, sr)

    def read_ours() -> None:
        for _ in range(reps):
            for i in range(len(dataset)):
                dataset[i]

    def read_official() -> None:
        for _ in range(reps):
            read_official_layout(layout, settings.image_size, features)

    n_reads = reps * len(records)
    for name, fn in (("cache read (ours: npz, JPEG, raw fbank)", read_ours),
                     ("cache read (official: PNG files, wav, fbank per read)", read_official)):
        t = time_iterations(fn, **timing_kwargs(spec))
        out.append(entry("data", name, {"clips": len(records), "reads": n_reads},
                         {"seconds": t.median_s, "clips_per_s": n_reads / t.median_s}, t.summary()))
    shutil.rmtree(official_dir, ignore_errors=True)
    return out
