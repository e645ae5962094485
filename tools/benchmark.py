"""Benchmark suite: pretraining step, detector inference, whole-video scoring, preprocessing, cache reads.

Usage:
    python tools/benchmark.py [--quick] [--out DIR] [--only NAME ...] [--threads N] [--iters N]
        [--warmup N] [--video FILE] [--isolate | --no-isolate] [--no-compile] [CONFIG ...] [key=value ...]
    python tools/benchmark.py --render runs/benchmark/benchmark.json --out DIR

Examples:
    python tools/benchmark.py                                   # full size, about 20 minutes on 2 CPU cores
    python tools/benchmark.py --only inference model.variant=official
    python tools/benchmark.py --quick --out /tmp/bench          # tiny configuration, seconds (CI)

Benchmarks (``--only``): ``peak`` (matrix-product FLOP/s per dtype), ``pretrain`` (one step at batch 2:
forward + backward as in havic-spec §16, and with the AdamW update), ``inference`` (detector at
batch 1 and 4), ``video`` (a 10 s video scored end to end: our pipeline and, as the same-run
baseline, the official pipeline's costs), ``data`` (preprocessing frames/s, cache size per hour,
cache reads in clips/s against the official PNG layout) and ``gpu`` (SDPA kernels, torch.compile,
fused AdamW, channels-last: skipped with a reason without CUDA). Each precision runs in fp32 and
under bf16 autocast (fp16 too on CUDA).

Protocol (havic-spec §16): ``--threads`` torch threads (default 2), one warm-up and three timed calls
per case, the median reported; a call during which other processes took more than 5 % of the
machine is repeated (``--max-repeats``, default 2) and the share is reported either way. With ``--isolate``
(the default without ``--quick``) every case runs in a fresh process so that its peak resident set
is its own. Writes ``benchmark.json`` and ``benchmark.md`` to ``--out`` (default runs/benchmark).

On a machine shared with another busy process, ``--threads 2`` timings are distorted far beyond the
lost core: every parallel region waits at its barrier for the thread that the scheduler parked, so
runs of many small operations (the face detector, bf16 casts, norms) slow down up to tenfold. There,
``--threads 1`` on the remaining core gives clean single-thread figures; their CPU-seconds compare
with the official CPU-seconds (havic-spec §16), the same-run ratios stay valid.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import wave
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from havic.benchmarking import (
    PRECISIONS,
    autocast,
    count_flops,
    current_rss_bytes,
    loadavg,
    machine_info,
    matmul_peak_flops,
    peak_rss_bytes,
    reset_peak_rss,
    run_isolated,
    time_iterations,
)
from havic.config import CONFIG_DIR, from_container, load_config, to_container

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
BENCHMARKS = ("peak", "pretrain", "inference", "video", "data", "gpu")
MIB = 2**20

# The official code's costs on this 2-core machine, havic-spec §16 (torch 2.13.0+cpu, 2 threads, clean
# pass, median of 3). Peak RSS is ru_maxrss / 1024 (MiB). "above import" subtracts what the process
# held besides the fp32 weights right after building the model (RSS after build - weights), so that
# it compares with our peak above the RSS after `import torch` (our CUDA build of torch alone maps
# about 500 MiB, the CPU build about 200 MiB).
OFFICIAL = {
    "source": "havic-spec §16: official HEAD, torch 2.13.0+cpu, 2 threads, clean pass",
    "pretrain_fwd_bwd_s": 15.44,
    "pretrain_fwd_bwd_cpu_s": 30.3,
    "pretrain_forward_s": 10.43,
    "pretrain_peak_rss_mib": 4336,
    "pretrain_peak_above_import_mib": 4336 - (1180 - 927),
    "inference_s": {1: 4.65, 4: 17.75},
    "inference_cpu_s": {1: 9.1, 4: 34.5},
    "inference_peak_rss_mib": {1: 1426, 4: 2458},
    "inference_peak_above_import_mib": {1: 1426 - (1060 - 819), 4: 2458 - (1060 - 819)},
    "gflop": {"detector_b1": 536.4, "pretrain_forward_b2": 1249.9, "pretrain_fwd_bwd_b2": 1880.6},
    "gflop_per_s": "115-122 (fp32)",
    "video_10s_s_estimate": 80.0,
}
TARGETS = {"pretrain_speedup": 2.0, "inference_speedup": 2.0, "video_speedup": 3.0, "mfu": 0.70}
DERIVED = ("cpu_s", "peak_flop_per_s", "mfu", "speedup_vs_fp32", "speedup_vs_official", "cpu_speedup_vs_official",
           "official_peak_above_import_mib", "max_abs_logit_diff_vs_fp32", "fp32_logit_abs_max",
           "speedup_vs_official_pipeline", "score_diff_vs_official_pipeline", "speedup_vs_official_estimate")


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _entry(bench: str, case: str, params: dict[str, Any], metrics: dict[str, Any] | None = None,
           timing: dict[str, Any] | None = None, skipped: str | None = None, notes: str = "") -> dict[str, Any]:
    return {"bench": bench, "case": case, "params": params, "metrics": metrics or {}, "timing": timing,
            "skipped": skipped, "notes": notes}


def _mib(n: int | None) -> float | None:
    return None if n is None else n / MIB


def _device(spec: dict[str, Any]) -> torch.device:
    return torch.device(spec["device"])


def _sync(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def model_inputs(cfg: Any, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Seeded random clips of the configured sizes: video (B, 3, F, S, S) in [0, 1], audio (B, T, M)."""
    g = torch.Generator().manual_seed(1)
    v, a = cfg.model.video, cfg.model.audio
    video = torch.rand(batch, 3, v.num_frames, v.image_size, v.image_size, generator=g)
    audio = torch.randn(batch, a.num_frames, a.num_mel_bins, generator=g)
    return video.to(device), audio.to(device)


def _timing_kwargs(spec: dict[str, Any], warmed: int = 0) -> dict[str, Any]:
    return {"iters": spec["iters"], "warmup": max(0, spec["warmup"] - warmed),
            "max_foreign_share": spec["max_foreign_share"], "max_repeats": spec["max_repeats"]}


def _flops_or_warm(spec: dict[str, Any], fn: Callable[[], Any]) -> tuple[int, int]:
    """(FLOPs of one call, warm-up calls done): counted on the first call unless an earlier case did.

    The count does not depend on the precision, and the counter's per-op overhead is large for
    small models, so the suite counts once per network and batch.
    """
    if spec.get("flops") is not None:
        return int(spec["flops"]), 0
    return count_flops(fn)[1], 1


def _memory(rss_import: int | None) -> dict[str, Any]:
    peak = peak_rss_bytes()
    return {"peak_rss_mib": _mib(peak), "rss_after_import_mib": _mib(rss_import),
            "peak_above_import_mib": None if rss_import is None else _mib(peak - rss_import)}


def _cuda_memory(device: torch.device) -> dict[str, Any]:
    return {"peak_allocated_mib": _mib(torch.cuda.max_memory_allocated(device))} if device.type == "cuda" else {}


# --------------------------------------------------------------------------------------------------
# Model cases (each runs in its own process with --isolate)
# --------------------------------------------------------------------------------------------------


def bench_peak(spec: dict[str, Any]) -> list[dict[str, Any]]:
    device = _device(spec)
    size = 256 if spec["quick"] else (8192 if device.type == "cuda" else 2048)
    out = []
    for precision, dtype in PRECISIONS.items():
        if precision == "fp16" and device.type != "cuda":
            continue
        flops = matmul_peak_flops(dtype or torch.float32, device, size=size, repeats=3 if spec["quick"] else 7,
                                  min_seconds=0.02 if spec["quick"] else 0.3)
        out.append(_entry("peak", f"matmul {precision}", {"precision": precision, "size": size},
                          {"flop_per_s": flops, "load_1m": (loadavg() or [None])[0]}))
    return out


def bench_pretrain(spec: dict[str, Any]) -> list[dict[str, Any]]:
    from havic.losses import loss_options, pretraining_losses
    from havic.models import build_model

    p = spec["params"]
    device, batch, precision, optimizer = _device(spec), p["batch"], p["precision"], p["optimizer"]
    cfg = from_container(spec["config"])
    rss_import = current_rss_bytes()
    reset_peak_rss()
    torch.manual_seed(0)
    model = build_model(cfg.model, "pretrain").to(device).train()
    options = loss_options(cfg.loss)
    video, audio = model_inputs(cfg, batch, device)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = None
    if optimizer != "none":
        # One group with the configured decay: the update costs the same as training's parameter groups
        # (havic.lit.schedules), whose import would pull in Lightning.
        tc = cfg.train
        kwargs = {"fused": True} if optimizer == "adamw_fused" else {}
        opt = torch.optim.AdamW(params, lr=float(tc.lr), betas=tuple(float(b) for b in tc.betas),
                                weight_decay=float(tc.weight_decay), **kwargs)
    losses: list[float] = []

    def step() -> None:
        with autocast(device.type, precision):
            out = model(video, audio)
            loss = pretraining_losses(out, **options)["total"]
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            for q in params:
                q.grad = None
        losses.append(float(loss.detach()))

    flops, warmed = _flops_or_warm(spec, step)
    timing = time_iterations(step, sync=_sync(device), **_timing_kwargs(spec, warmed=warmed))
    median = timing.median_s
    metrics = {"seconds": median, "samples_per_s": batch / median, "flops": flops, "flop_per_s": flops / median,
               "loss": losses[-1], "loss_finite": all(math.isfinite(x) for x in losses),
               **_memory(rss_import), **_cuda_memory(device)}
    what = "fwd+bwd" if optimizer == "none" else f"fwd+bwd+{optimizer}"
    return [_entry("pretrain", f"{precision} {what}", dict(p), metrics, timing.summary())]


def bench_inference(spec: dict[str, Any]) -> list[dict[str, Any]]:
    from havic.models import build_model
    from havic.precision import cast_matmul_weights

    p = spec["params"]
    device, batch, precision = _device(spec), p["batch"], p["precision"]
    cfg = from_container(spec["config"])
    rss_import = current_rss_bytes()
    reset_peak_rss()
    torch.manual_seed(0)
    model = build_model(cfg.model, "detector").to(device).eval()
    if p.get("weights", "fp32") != "fp32":
        cast_matmul_weights(model, PRECISIONS[p["weights"]])
    run = model
    if p.get("compile"):
        import torch._inductor.config as inductor_config

        # Freezing folds the (eval-mode, no-grad) weights into the graph as constants: inference only.
        inductor_config.freezing = True
        run = torch.compile(model)
    video, audio = model_inputs(cfg, batch, device)
    if p.get("channels_last"):
        video = video.contiguous(memory_format=torch.channels_last_3d)

    def forward() -> Tensor:
        with torch.inference_mode(), autocast(device.type, precision):
            return run(video, audio).logit

    extra: dict[str, Any] = {}
    if p.get("compile"):
        t0 = time.perf_counter()
        forward()
        extra["compile_s"] = time.perf_counter() - t0
        flops, warmed = int(spec["flops"]), 1       # the counter cannot see inside compiled kernels
    else:
        flops, warmed = _flops_or_warm(spec, forward)
    timing = time_iterations(forward, sync=_sync(device), **_timing_kwargs(spec, warmed=warmed))
    logits = forward()
    median = timing.median_s
    metrics = {"seconds": median, "samples_per_s": batch / median, "flops": flops, "flop_per_s": flops / median,
               "logits": [float(x) for x in logits.float().cpu()], **extra, **_memory(rss_import),
               **_cuda_memory(device)}
    name = f"{precision} b{batch}" + (f", {p['weights']} weights" if p.get("weights", "fp32") != "fp32" else "")
    name += ", torch.compile" if p.get("compile") else ""
    return [_entry("inference", name, dict(p), metrics, timing.summary())]


# --------------------------------------------------------------------------------------------------
# Whole-video scoring
# --------------------------------------------------------------------------------------------------


def synthetic_talking_video(path: Path, seconds: float = 10.0, fps: float = 10.0, size: int = 224) -> Path:
    """A photographed face (scikit-image's astronaut) drifting on grey, with a voiced, pulsing tone."""
    import cv2
    from skimage import data

    from havic.data.video import write_video

    face = cv2.resize(data.astronaut(), (size - 24, size - 24), interpolation=cv2.INTER_AREA)
    n = round(seconds * fps)
    frames = np.full((n, size, size, 3), 110, dtype=np.uint8)
    for j in range(n):
        t = j / fps
        dx, dy = int(12 + 10 * math.sin(1.3 * t)), int(12 + 8 * math.cos(0.9 * t))
        frames[j, dy:dy + face.shape[0], dx:dx + face.shape[1]] = face
    sr = 16000
    t = np.arange(round(seconds * sr)) / sr
    f0 = 2 * np.pi * np.cumsum(120 + 25 * np.sin(2 * np.pi * 0.5 * t)) / sr
    voice = sum(np.sin(k * f0) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) ** 2
    return write_video(path, frames, fps, audio=(0.25 * voice).astype(np.float32), sample_rate=sr)


def _wav_roundtrip(samples: np.ndarray, path: Path, sr: int) -> np.ndarray:
    """Write 16-bit PCM wav and read it back, as the official pipeline extracts the track to a file."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    with wave.open(str(path), "rb") as r:
        data = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0


def official_pipeline_score(file: Path, model: nn.Module, cfg: Any, detector: Any, workdir: Path,
                            max_seconds: float, stride: int, stats: dict[str, Any]) -> float | None:
    """Score one video the way the official evaluation script does (havic-spec §14), with our model.

    The costs kept: frames decoded on the 1/fps grid and written as PNG files; the face detector
    run on each frame file alone at full resolution (crop margin 1.0), each face written as PNG;
    the faces read back and resized; the audio track written to and read from a wav file; one fbank
    per window; all windows in one fp32 batch. Where a frame has no face the official script skips
    the whole video; here the previous box is used instead, so that the cost of a whole video is
    measured, and the misses are counted in ``stats["frames_without_face"]``.

    Returns:
        sigmoid(mean window logit), or None with fewer frames than one window.
    """
    import cv2
    from PIL import Image

    from havic.data.face import expand_boxes
    from havic.data.video import iter_frames_at, probe, read_audio
    from havic.inference import audio_features

    fps, n_frames = float(cfg.data.fps), int(cfg.model.video.num_frames)
    size = int(cfg.model.video.image_size)
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "frames").mkdir(parents=True)
    (workdir / "faces").mkdir()
    info = probe(file)
    grid = np.arange(math.ceil(info.duration * fps)) / fps
    grid = grid[grid < info.duration]
    n_png = min(grid.size, round(max_seconds * fps) + 2)  # the official script writes a few frames beyond 10 s
    for j, (_, frame) in enumerate(iter_frames_at(file, grid[:n_png], size=(info.width, info.height))):
        cv2.imwrite(str(workdir / "frames" / f"{j:05d}.png"), frame[:, :, ::-1])
    files = sorted((workdir / "frames").glob("*.png"))[: round(max_seconds * fps)]
    box, misses, waiting = None, 0, []
    for j, f in enumerate(files):
        rgb = cv2.imread(str(f))[:, :, ::-1]
        dets = detector.detect(np.ascontiguousarray(rgb)[None])[0]
        if len(dets):
            box = dets[:1, :4]
        else:
            misses += 1
        if box is None:
            waiting.append((j, rgb))     # no face yet: these frames take the first box found
            continue
        for k, image in [*waiting, (j, rgb)]:
            x1, y1, x2, y2 = expand_boxes(box, image.shape[0], image.shape[1], margin=1.0)[0]
            cv2.imwrite(str(workdir / "faces" / f"face_{k:02d}.png"), image[y1:y2, x1:x2, ::-1])
        waiting = []
    # The official script drops a video with any face miss; the cost baseline keeps the nearest box.
    stats["frames_without_face"] = misses
    faces = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR))
             for f in sorted((workdir / "faces").glob("*.png"))]
    n = len(faces)
    if n < n_frames:
        return None
    n -= (n - n_frames) % stride
    clip = torch.from_numpy(np.stack(faces[:n])).permute(3, 0, 1, 2).float().div(255.0)  # (3, n, S, S)
    starts = list(range(0, n - n_frames + 1, stride))
    video = torch.stack([clip[:, s:s + n_frames] for s in starts])
    features = audio_features(cfg)
    sr = features.sample_rate
    wav = _wav_roundtrip(read_audio(file, sr), workdir / "audio.wav", sr)
    used = int(n / grid.size * wav.size)
    seg = int(used * n_frames / n)
    hop = int(seg * stride / n_frames)
    audio = []
    for k in range(len(starts)):
        a = min(k * hop, used - seg)
        piece = wav[a:a + seg]
        audio.append(features(piece - piece.mean()))
    with torch.inference_mode():
        logits = model(video, torch.stack(audio)).logit
    stats["n_windows"] = len(starts)
    return float(torch.sigmoid(logits.float().mean()))


def _face_detector(spec: dict[str, Any], cfg: Any) -> Any:
    from havic.data.face import build_detector

    face = cfg.data.face
    if face.detector == "retinaface":
        return build_detector("retinaface", face.weights, conf_threshold=float(face.conf_threshold))
    return build_detector("haar")


def bench_video(spec: dict[str, Any]) -> list[dict[str, Any]]:
    from havic.inference import VideoScorer, build_cropper
    from havic.models import build_model

    p = spec["params"]
    pipeline, precision = p["pipeline"], p["precision"]
    device = _device(spec)
    cfg = from_container(spec["config"])
    file = Path(spec["video"])
    fps = float(cfg.data.fps)
    stride = max(1, round(0.4 * fps))       # the official hop: 2 frames at 5 fps = 0.4 s
    max_seconds = 10.0
    rss_import = current_rss_bytes()
    reset_peak_rss()
    torch.manual_seed(0)
    model = build_model(cfg.model, "detector").to(device).eval()
    workdir = Path(spec["workdir"]) / f"video_{pipeline}_{precision}"
    result: dict[str, Any] = {}
    if pipeline == "official":
        detector = _face_detector(spec, cfg)

        def once() -> None:
            result["score"] = official_pipeline_score(file, model, cfg, detector, workdir, max_seconds, stride,
                                                      result)
    else:
        # The scorer prepares the model for its precision (matmul weights stored in bf16) in place.
        scorer = VideoScorer(model, cfg, build_cropper(cfg), batch_size=int(p["batch_size"]),
                             hop_s=stride / fps, max_seconds=max_seconds, device=device, precision=precision)

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
    timing = time_iterations(once, sync=_sync(device), iters=spec["video_iters"], warmup=0,
                             max_foreign_share=spec["max_foreign_share"], max_repeats=0)
    shutil.rmtree(workdir, ignore_errors=True)
    metrics = {"seconds": timing.median_s, "videos_per_min": 60.0 / timing.median_s, "score": result.get("score"),
               "n_windows": result.get("n_windows"), **_memory(rss_import)}
    for key in ("n_frames", "n_detector_calls", "frames_without_face"):
        if key in result:
            metrics[key] = result[key]
    params = dict(p, seconds_scored=max_seconds, video=str(file), detector=cfg.data.face.detector)
    name = f"{pipeline} pipeline {precision}"
    name += f" b{p['batch_size']}" + (f", {precision} weights" if precision != "fp32" else "") if pipeline == "ours" \
        else " (one batch)"
    return [_entry("video", name, params, metrics, timing.summary())]


# --------------------------------------------------------------------------------------------------
# Preprocessing and cache reads
# --------------------------------------------------------------------------------------------------


def _official_layout(records: list[Any], cache: Any, out: Path) -> list[tuple[list[Path], Path]]:
    """The official training layout of the same clips: one PNG per face crop and a wav file per clip."""
    import cv2

    layout = []
    for r in records:
        data = cache.load_clip(r)
        folder = out / f"{r.key}_{r.clip}"
        folder.mkdir(parents=True, exist_ok=True)
        pngs = []
        for i, crop in enumerate(data.frames):
            pngs.append(folder / f"face_{i:02d}.png")
            cv2.imwrite(str(pngs[-1]), crop[:, :, ::-1])
        layout.append((pngs, folder / "clip.wav"))
    return layout


def bench_data(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import cv2
    from PIL import Image

    from havic.data.cache import ClipCache, build_index, entry_path, video_key
    from havic.data.datasets import ClipDataset
    from havic.data.manifest import ManifestRow
    from havic.data.preprocess import PreprocessSettings, process_video
    from havic.data.video import read_audio
    from havic.inference import audio_features

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

    timing = time_iterations(preprocess, **_timing_kwargs(spec))
    res = outcome["result"]
    if not res.ok:
        raise RuntimeError(f"{file}: preprocessing failed at {res.stage}: {res.reason} ({res.detail})")
    n_frames = res.n_clips * settings.num_frames
    entry = entry_path(root, video_key(str(file)))
    clip_s = res.n_clips * settings.clip_seconds
    bytes_per_hour = entry.stat().st_size / clip_s * 3600
    build_index(root, [ManifestRow(path=str(file), label=0, split="train")])
    cache = ClipCache(root)
    records = cache.records()
    # The same crops as PNG files (the official cache) for the size comparison.
    png_bytes = sum(len(cv2.imencode(".png", c[:, :, ::-1])[1]) for r in records for c in cache.load_clip(r).frames)
    out = [_entry("data", "preprocess", {"clips": res.n_clips, "detector": settings.detector},
                  {"seconds": timing.median_s, "frames_per_s": n_frames / timing.median_s,
                   "video_s_per_s": clip_s / timing.median_s, "cache_gb_per_hour": bytes_per_hour / 1e9,
                   "official_png_crops_gb_per_hour": png_bytes / clip_s * 3600 / 1e9,
                   "entry_bytes": entry.stat().st_size}, timing.summary())]

    # Reads: our cache (one npz per video, JPEG crops, raw fbank) against the official layout.
    dataset = ClipDataset(cache, records, num_frames=settings.num_frames, image_size=settings.image_size,
                          audio_frames=int(cfg.model.audio.num_frames), num_mel_bins=settings.num_mel_bins,
                          length_policy=cfg.data.audio.length_policy, norm_mean=float(cfg.data.audio.norm_mean),
                          norm_std=float(cfg.data.audio.norm_std))
    reps = max(1, round((4 if spec["quick"] else 60) / len(records)))
    features = audio_features(cfg)
    sr = features.sample_rate
    official_dir = Path(spec["workdir"]) / "official_layout"
    layout = _official_layout(records, cache, official_dir)
    wave_all = read_audio(file, sr)
    for (pngs, wav), r in zip(layout, records):
        start = round(r.start_s * sr)
        _wav_roundtrip(wave_all[start:start + round(settings.clip_seconds * sr)], wav, sr)

    def read_ours() -> None:
        for _ in range(reps):
            for i in range(len(dataset)):
                dataset[i]

    def read_official() -> None:
        size = settings.image_size
        for _ in range(reps):
            for pngs, wav in layout:
                frames = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in pngs]
                torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float().div(255.0)
                with wave.open(str(wav), "rb") as w:
                    x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
                features(x - x.mean())

    n_reads = reps * len(records)
    for name, fn in (("cache read (ours: npz, JPEG, raw fbank)", read_ours),
                     ("cache read (official: PNG files, wav, fbank per read)", read_official)):
        t = time_iterations(fn, **_timing_kwargs(spec))
        out.append(_entry("data", name, {"clips": len(records), "reads": n_reads},
                          {"seconds": t.median_s, "clips_per_s": n_reads / t.median_s}, t.summary()))
    shutil.rmtree(official_dir, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------------
# GPU options
# --------------------------------------------------------------------------------------------------


def bench_gpu(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """SDPA kernels, torch.compile, fused AdamW and channels-last on a CUDA device (bf16)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from havic.models import build_model

    device = _device(spec)
    cfg = from_container(spec["config"])
    batch = 4
    torch.manual_seed(0)
    model = build_model(cfg.model, "detector").to(device).eval()
    video, audio = model_inputs(cfg, batch, device)
    out: list[dict[str, Any]] = []

    def infer(m: nn.Module, v: Tensor, kernel: Any = None) -> Callable[[], Tensor]:
        def fn() -> Tensor:
            with torch.inference_mode(), autocast("cuda", "bf16"), \
                    (sdpa_kernel(kernel) if kernel is not None else contextlib.nullcontext()):
                return m(v, audio).logit
        return fn

    flops = count_flops(infer(model, video))[1]   # the same for every variant below

    def run(name: str, fn: Callable[[], Any], params: dict[str, Any]) -> None:
        try:
            torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            fn()                                   # first call: kernel selection, compilation
            torch.cuda.synchronize(device)
            first = time.perf_counter() - t0
            t = time_iterations(fn, sync=_sync(device), **_timing_kwargs(spec, warmed=1))
            out.append(_entry("gpu", name, params, {
                "seconds": t.median_s, "samples_per_s": batch / t.median_s, "flops": flops,
                "flop_per_s": flops / t.median_s, "first_call_s": first, **_cuda_memory(device)}, t.summary()))
        except Exception as err:  # noqa: BLE001 - a kernel missing on this GPU is a result, not a failure
            out.append(_entry("gpu", name, params, skipped=f"{type(err).__name__}: {err}"))

    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        run(f"inference bf16 b{batch} sdpa={backend.lower()}", infer(model, video, getattr(SDPBackend, backend)),
            {"batch": batch, "precision": "bf16", "sdpa": backend.lower()})
    channels_last = video.contiguous(memory_format=torch.channels_last_3d)
    run(f"inference bf16 b{batch} channels_last_3d", infer(model, channels_last),
        {"batch": batch, "precision": "bf16", "channels_last": True})
    run(f"inference bf16 b{batch} torch.compile", infer(torch.compile(model), video),
        {"batch": batch, "precision": "bf16", "compile": True})
    for optimizer in ("adamw", "adamw_fused"):
        params = {"batch": 2, "precision": "bf16", "optimizer": optimizer}
        try:
            got = bench_pretrain(dict(spec, params=params, flops=None))
            got[0]["bench"] = "gpu"
            out += got
        except Exception as err:  # noqa: BLE001
            out.append(_entry("gpu", f"pretrain bf16 {optimizer}", params, skipped=f"{type(err).__name__}: {err}"))
    return out


def gpu_skips(reason: str) -> list[dict[str, Any]]:
    names = ["inference bf16 b4 sdpa=flash_attention", "inference bf16 b4 sdpa=efficient_attention",
             "inference bf16 b4 sdpa=cudnn_attention", "inference bf16 b4 sdpa=math",
             "inference bf16 b4 channels_last_3d", "inference bf16 b4 torch.compile",
             "pretrain bf16 b2 AdamW foreach", "pretrain bf16 b2 AdamW fused"]
    return [_entry("gpu", n, {}, skipped=reason) for n in names]


# --------------------------------------------------------------------------------------------------
# Running cases
# --------------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "peak": bench_peak, "pretrain": bench_pretrain, "inference": bench_inference, "video": bench_video,
    "data": bench_data, "gpu": bench_gpu,
}


def run_case(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One case in this process: thread settings first (they are the benchmark's, not the library's)."""
    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    entries = RUNNERS[spec["bench"]](spec)
    for e in entries:
        e["case_wall_s"] = time.perf_counter() - t0
    return entries


def plan(cfg: Any, only: list[str], cuda: bool, compile_cases: bool) -> list[tuple[str, dict[str, Any]]]:
    """(benchmark, params) of every case, in run order."""
    cases: list[tuple[str, dict[str, Any]]] = []
    lowp = ["bf16", "fp16"] if cuda else ["bf16"]
    if "peak" in only:
        cases.append(("peak", {}))
    if "pretrain" in only:
        for precision in ["fp32", *lowp]:
            cases.append(("pretrain", {"batch": 2, "precision": precision, "optimizer": "none"}))
        cases.append(("pretrain", {"batch": 2, "precision": "bf16", "optimizer": "adamw"}))
        cases.append(("pretrain", {"batch": 2, "precision": "bf16", "optimizer": "adamw_fused"}))
    if "inference" in only:
        for batch in (1, 4):
            for precision in ["fp32", *lowp]:
                cases.append(("inference", {"batch": batch, "precision": precision}))
            cases.append(("inference", {"batch": batch, "precision": "bf16", "weights": "bf16"}))
            if compile_cases:
                cases.append(("inference", {"batch": batch, "precision": "bf16", "compile": True}))
    if "video" in only:
        cases.append(("video", {"pipeline": "official", "precision": "fp32"}))
        cases.append(("video", {"pipeline": "ours", "precision": "fp32", "batch_size": 8}))
        cases.append(("video", {"pipeline": "ours", "precision": "bf16", "batch_size": 8}))
    if "data" in only:
        cases.append(("data", {}))
    if "gpu" in only and cuda:
        cases.append(("gpu", {}))
    return cases


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return (out.stdout.strip() + ("+modified" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------------
# Derived figures, targets and the table
# --------------------------------------------------------------------------------------------------


def _find(entries: list[dict[str, Any]], bench: str, **params: Any) -> dict[str, Any] | None:
    for e in entries:
        if e["bench"] == bench and not e["skipped"] and all(e["params"].get(k) == v for k, v in params.items()):
            return e
    return None


def derive(entries: list[dict[str, Any]], full_size: bool, threads: int = 2) -> list[dict[str, Any]]:
    """Add MFU, same-run speed-ups, official comparisons and logit differences; return the targets."""
    peaks = {e["params"]["precision"]: e["metrics"]["flop_per_s"] for e in entries
             if e["bench"] == "peak" and not e["skipped"]}
    for e in entries:
        m, prm = e["metrics"], e["params"]
        prec = prm.get("precision")
        if e["timing"] and e["timing"].get("cpu_s"):
            m["cpu_s"] = float(np.median(e["timing"]["cpu_s"]))
        if "flop_per_s" in m and prec in peaks and e["bench"] != "peak":
            m["peak_flop_per_s"] = peaks[prec]
            m["mfu"] = m["flop_per_s"] / peaks[prec]
        if e["bench"] == "pretrain" and not e["skipped"]:
            base = _find(entries, "pretrain", batch=prm["batch"], precision="fp32", optimizer=prm["optimizer"])
            if base is not None:
                m["speedup_vs_fp32"] = base["metrics"]["seconds"] / m["seconds"]
            if full_size and prm["batch"] == 2 and prm["optimizer"] == "none":
                m["speedup_vs_official"] = OFFICIAL["pretrain_fwd_bwd_s"] / m["seconds"]
                m["cpu_speedup_vs_official"] = OFFICIAL["pretrain_fwd_bwd_cpu_s"] / m["cpu_s"]
                m["official_peak_above_import_mib"] = OFFICIAL["pretrain_peak_above_import_mib"]
        if e["bench"] == "inference" and not e["skipped"]:
            base = _find(entries, "inference", batch=prm["batch"], precision="fp32")
            if base is not None:
                m["speedup_vs_fp32"] = base["metrics"]["seconds"] / m["seconds"]
                ref = np.array(base["metrics"]["logits"])
                m["max_abs_logit_diff_vs_fp32"] = float(np.abs(np.array(m["logits"]) - ref).max())
                m["fp32_logit_abs_max"] = float(np.abs(ref).max())
            if full_size and prm["batch"] in OFFICIAL["inference_s"]:
                m["speedup_vs_official"] = OFFICIAL["inference_s"][prm["batch"]] / m["seconds"]
                m["cpu_speedup_vs_official"] = OFFICIAL["inference_cpu_s"][prm["batch"]] / m["cpu_s"]
                m["official_peak_above_import_mib"] = OFFICIAL["inference_peak_above_import_mib"][prm["batch"]]
        if e["bench"] == "video" and not e["skipped"]:
            base = _find(entries, "video", pipeline="official")
            if base is not None:
                m["speedup_vs_official_pipeline"] = base["metrics"]["seconds"] / m["seconds"]
                if base["metrics"].get("score") is not None and m.get("score") is not None:
                    m["score_diff_vs_official_pipeline"] = abs(m["score"] - base["metrics"]["score"])
            if full_size:
                m["speedup_vs_official_estimate"] = OFFICIAL["video_10s_s_estimate"] / m["seconds"]
    return targets(entries, full_size, threads)


def _best(entries: list[dict[str, Any]], bench: str, key: str, **params: Any) -> dict[str, Any] | None:
    found = [e for e in entries if e["bench"] == bench and not e["skipped"] and key in e["metrics"]
             and all(e["params"].get(k) == v for k, v in params.items())]
    return max(found, key=lambda e: e["metrics"][key], default=None)


def targets(entries: list[dict[str, Any]], full_size: bool, threads: int = 2) -> list[dict[str, Any]]:
    """The issue's targets, each with its value and whether it is met.

    Speed-ups against the official figures are wall-time ratios at the official 2 threads; with
    another thread count they are CPU-second ratios (the work per step, which a thread count
    does not change much) and say so. Inference targets are judged on the default fast path (bf16
    autocast, eager); the torch.compile figures are listed beside them.
    """
    out: list[dict[str, Any]] = []
    if not full_size:
        return out  # a reduced model says nothing about the targets (its matrices are far from the peak's)
    key, how = ("speedup_vs_official", "wall") if threads == 2 else ("cpu_speedup_vs_official", "CPU-s")

    def add(name: str, goal: str, value: float | None, met: bool | None, source: str) -> None:
        out.append({"target": name, "goal": goal, "value": value, "met": met, "from": source})

    def speed_and_memory(label: str, e: dict[str, Any] | None, goal: float, memory: bool = True) -> None:
        if e is None or key not in e["metrics"]:
            return
        m = e["metrics"]
        add(f"{label} vs official ({how})", f">= {goal}x", m[key], m[key] >= goal, e["case"])
        if memory:
            add(f"{label} peak RSS above import (MiB)", f"<= {m['official_peak_above_import_mib']}",
                m["peak_above_import_mib"], m["peak_above_import_mib"] <= m["official_peak_above_import_mib"],
                e["case"])

    def same_run(label: str, e: dict[str, Any] | None, goal: float) -> None:
        # Our fp32 path does the official arithmetic (the same FLOP count, havic-spec §16), so this
        # ratio holds on any machine, while the official figures were taken on one machine only.
        if e is not None and "speedup_vs_fp32" in e["metrics"]:
            v = e["metrics"]["speedup_vs_fp32"]
            add(f"{label} vs our fp32 (same run)", f">= {goal}x", v, v >= goal, e["case"])

    pretrain = _best(entries, "pretrain", key, batch=2, optimizer="none")
    speed_and_memory("pretraining fwd+bwd b2", pretrain, TARGETS["pretrain_speedup"])
    same_run("pretraining fwd+bwd b2", pretrain, TARGETS["pretrain_speedup"])
    for batch in (1, 4):
        eager = [e for e in entries if e["bench"] == "inference" and not e["skipped"]
                 and e["params"].get("batch") == batch and not e["params"].get("compile")]
        best = max(eager, key=lambda e: e["metrics"].get(key, 0), default=None)
        speed_and_memory(f"detector inference b{batch}", best, TARGETS["inference_speedup"])
        same_run(f"detector inference b{batch}", best, TARGETS["inference_speedup"])
        compiled = _best(entries, "inference", key, batch=batch, compile=True)
        speed_and_memory(f"detector inference b{batch}, torch.compile", compiled, TARGETS["inference_speedup"],
                         memory=False)
        same_run(f"detector inference b{batch}, torch.compile", compiled, TARGETS["inference_speedup"])
    e = _best(entries, "video", "speedup_vs_official_pipeline", pipeline="ours")
    if e:
        v = e["metrics"]["speedup_vs_official_pipeline"]
        add("10 s video vs official pipeline (same run, wall)", f">= {TARGETS['video_speedup']}x", v,
            v >= TARGETS["video_speedup"], e["case"])
    for bench in ("pretrain", "inference"):
        for precision in PRECISIONS:
            e = _best(entries, bench, "mfu", precision=precision)
            if e:
                v = e["metrics"]["mfu"]
                add(f"{bench} {precision} model FLOP utilisation (best case)", f">= {TARGETS['mfu']:.0%}", v,
                    v >= TARGETS["mfu"], e["case"])
    return out


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return format(x, spec)


def _loads(values: Any) -> str:
    return "unknown" if not values else " / ".join(f"{x:.2f}" for x in values)


def _throughput(m: dict[str, Any]) -> str:
    if "samples_per_s" in m:
        return f"{m['samples_per_s']:.3g} samples/s"
    if "videos_per_min" in m:
        return f"{m['videos_per_min']:.3g} videos/min"
    if "frames_per_s" in m:
        return f"{m['frames_per_s']:.3g} frames/s; cache {m['cache_gb_per_hour']:.2f} GB/h " \
               f"(PNG crops {m['official_png_crops_gb_per_hour']:.2f})"
    if "clips_per_s" in m:
        return f"{m['clips_per_s']:.3g} clips/s"
    return ""


def _row(e: dict[str, Any]) -> str:
    m, t = e["metrics"], e["timing"] or {}
    if e["bench"] == "peak":
        return f"| peak | {e['case']} ({e['params']['size']}²) | | | | {m['flop_per_s'] / 1e9:.0f} | | | | | |"
    gf = _fmt(m.get("flop_per_s") and m["flop_per_s"] / 1e9, ".0f")
    mfu = f"{100 * m['mfu']:.0f}%" if m.get("mfu") else ""
    mem = f"{m['peak_rss_mib']:.0f} ({m['peak_above_import_mib']:.0f})" if m.get("peak_above_import_mib") else ""
    rel = m.get("speedup_vs_fp32") or m.get("speedup_vs_official_pipeline")
    rel_s = f"{rel:.2f}x" if rel else ""
    if "max_abs_logit_diff_vs_fp32" in m and e["params"].get("precision") != "fp32":
        rel_s += f", Δlogit {m['max_abs_logit_diff_vs_fp32']:.1e}"
    if m.get("compile_s"):
        rel_s += f", compile {m['compile_s']:.0f} s"
    off = m.get("speedup_vs_official") or m.get("speedup_vs_official_estimate")
    off_s = f"{off:.2f}x" if off else ""
    if m.get("cpu_speedup_vs_official"):
        off_s += f" ({m['cpu_speedup_vs_official']:.2f}x)"
    others = t.get("max_foreign_share")
    others_s = "" if others is None else f"{100 * others:.0f}%"
    return (f"| {e['bench']} | {e['case']} | {m['seconds']:.3g} | {_fmt(m.get('cpu_s'), '.3g')} | {_throughput(m)} "
            f"| {gf} | {mfu} | {mem} | {rel_s} | {off_s} | {others_s} |")


def markdown(report: dict[str, Any]) -> str:
    """The results as markdown: environment and load, one table of cases, skipped cases, the targets."""
    env = report["environment"]
    lines = [
        f"`{report['command']}` ({report['created']}, commit {report['commit']}): {env['cpu']}, {env['cores']} "
        f"cores, {env['torch_threads']} torch threads, torch {env['torch']}"
        + (f", {env['cuda_device']}" if env.get("cuda") else "") + f"; `{report['config']['variant']}` variant, "
        + ("full size." if report["full_size"] else "reduced size (not comparable with the official figures)."),
        f"Load average {_loads(report['load']['before'])} before and {_loads(report['load']['after'])} after the run "
        f"({env['cores']} cores). "
        "*others*: share of the machine's CPU time that other processes used during the worst timed call. "
        "*vs official*: official wall time / ours (official CPU-seconds / ours in brackets; havic-spec §16). "
        "Peak RSS in MiB, in brackets above the RSS after `import torch`.",
        "",
        "| benchmark | case | median s | CPU s | throughput | GFLOP/s | MFU | peak RSS | vs fp32 / baseline "
        "| vs official | others |",
        "|---|---|---:|---:|---|---:|---:|---:|---|---|---:|",
    ]
    lines += [_row(e) for e in report["entries"] if not e["skipped"]]
    skipped: dict[str, list[str]] = {}
    for e in report["entries"]:
        if e["skipped"]:
            skipped.setdefault(e["skipped"], []).append(f"{e['bench']}: {e['case']}")
    if skipped:
        lines.append("")
        lines += [f"Skipped ({reason}): {'; '.join(cases)}." for reason, cases in skipped.items()]
    if report["targets"]:
        lines += ["", "| target | goal | value | met | case |", "|---|---|---:|---|---|"]
        for tg in report["targets"]:
            lines.append(f"| {tg['target']} | {tg['goal']} | {_fmt(tg['value'])} | {_fmt(tg['met'])} | {tg['from']} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def default_video(workdir: Path, quick: bool) -> Path:
    """megamind.avi from the shared assets (a real 11 s talking face) or a synthetic talking face."""
    asset = ASSETS / "media" / "megamind.avi"
    if not quick and asset.is_file():
        return asset
    return synthetic_talking_video(workdir / "talking_face.mp4", seconds=10.4, fps=10.0, size=224)


def face_overrides(cfg: Any) -> list[str]:
    """Point RetinaFace at the shared FaceX-Zoo weights when none are configured, else use Haar."""
    if cfg.data.face.detector != "retinaface" or cfg.data.face.weights is not None:
        return []
    weights = ASSETS / "facexzoo" / "models"
    if weights.is_dir():
        return [f"data.face.weights={weights}"]
    return ["data.face.detector=haar"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("args", nargs="*", help="YAML config files and key=value overrides")
    parser.add_argument("--quick", action="store_true", help="tiny configuration, one timed call (CI)")
    parser.add_argument("--out", default="runs/benchmark", help="folder for benchmark.json and benchmark.md")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                        help=f"benchmarks to run, of {', '.join(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per case (default 3, quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls per case (default 1)")
    parser.add_argument("--video-iters", type=int, default=None, help="timed calls per video case (default 2, quick 1)")
    parser.add_argument("--video", default=None, help="video to score and preprocess (default: megamind.avi)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda where available)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile inference cases")
    parser.add_argument("--max-repeats", type=int, default=2,
                        help="extra calls per case to replace calls disturbed by other processes (default 2)")
    iso = parser.add_mutually_exclusive_group()
    iso.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                     help="one fresh process per case (default without --quick)")
    iso.add_argument("--no-isolate", dest="isolate", action="store_false")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="only recompute the targets and the table of an earlier benchmark.json into --out")
    ns = parser.parse_args(argv)
    if ns.render:
        print(render(Path(ns.render), Path(ns.out)))
        return 0

    files = [a for a in ns.args if "=" not in a]
    overrides = [a for a in ns.args if "=" in a]
    if ns.quick:
        files = [str(CONFIG_DIR / "tiny.yaml"), *files]
    cfg = load_config(files, overrides)
    cfg = load_config(files, [*face_overrides(cfg), *overrides])
    full_size = cfg.model == load_config([], [f"model.variant={cfg.model.variant}"]).model
    device = torch.device(ns.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    isolate = (not ns.quick) if ns.isolate is None else ns.isolate
    # Spawned case processes read the thread count from the environment as well.
    os.environ["OMP_NUM_THREADS"] = str(ns.threads)
    torch.set_num_threads(ns.threads)

    out_dir = Path(ns.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="havic-bench-"))
    entries: list[dict[str, Any]] = []
    load_before = loadavg()
    started = time.perf_counter()
    try:
        needs_video = {"video", "data"} & set(ns.only)
        video = Path(ns.video) if ns.video else (default_video(workdir, ns.quick) if needs_video else None)
        base = {
            "config": to_container(cfg), "quick": ns.quick, "threads": ns.threads, "device": str(device),
            "iters": ns.iters or (1 if ns.quick else 3),
            "warmup": (0 if ns.quick else 1) if ns.warmup is None else ns.warmup,
            "video_iters": ns.video_iters or (1 if ns.quick else 2),
            "max_foreign_share": None if ns.quick else 0.05, "max_repeats": 0 if ns.quick else ns.max_repeats,
            "workdir": str(workdir), "video": None if video is None else str(video),
        }
        compile_cases = "inference" in ns.only and not ns.quick and not ns.no_compile
        if "inference" in ns.only and not compile_cases:
            why = "--no-compile" if ns.no_compile else "--quick (compilation takes minutes; full runs measure it)"
            entries += [_entry("inference", f"bf16 b{b}, torch.compile",
                               {"batch": b, "precision": "bf16", "compile": True}, skipped=f"not run: {why}")
                        for b in (1, 4)]
        if "gpu" in ns.only and device.type != "cuda":
            entries += gpu_skips("no CUDA device: the GPU options (SDPA kernel choice, torch.compile, fused AdamW, "
                                 "channels-last) are measured only where CUDA is available")
        flops: dict[tuple[Any, ...], int] = {}
        for bench, params in plan(cfg, ns.only, device.type == "cuda", compile_cases):
            key = (bench, params.get("batch"))
            spec = dict(base, bench=bench, params=params, flops=flops.get(key))
            label = f"{bench} {params}"
            print(f"[benchmark] {label} ...", flush=True)
            try:
                got = run_isolated(run_case, spec) if isolate else run_case(spec)
            except Exception as err:  # noqa: BLE001 - one failing case is reported, the others still run
                traceback.print_exc()
                got = [_entry(bench, label, params, skipped=f"failed: {type(err).__name__}: {err}")]
            for e in got:
                m = e["metrics"]
                if "flops" in m and e["bench"] in ("pretrain", "inference"):
                    flops.setdefault(key, m["flops"])
                print(f"[benchmark]   {e['case']}: " + (e["skipped"] or ", ".join(
                    f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float))), flush=True)
            entries += got
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "schema": "havic-benchmark/1",
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python tools/benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": _git_commit(),
        "environment": machine_info(),
        "config": {"variant": cfg.model.variant, "files": files, "overrides": overrides,
                   "face_detector": cfg.data.face.detector},
        "full_size": full_size,
        "protocol": {"iters": base["iters"], "warmup": base["warmup"], "video_iters": base["video_iters"],
                     "max_foreign_share": base["max_foreign_share"], "max_repeats": base["max_repeats"],
                     "isolate": isolate, "device": str(device)},
        "load": {"before": load_before, "after": loadavg()},
        "wall_s": time.perf_counter() - started,
        "official": OFFICIAL,
        "entries": entries,
    }
    report["targets"] = derive(entries, full_size, ns.threads)
    print(write_report(report, out_dir))
    return 0


def write_report(report: dict[str, Any], out_dir: Path) -> str:
    """Write benchmark.json and benchmark.md to `out_dir`; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    table = markdown(report)
    (out_dir / "benchmark.md").write_text(table, encoding="utf-8")
    return table


def render(path: Path, out_dir: Path) -> str:
    """Recompute the derived figures and targets of an earlier benchmark.json and write both files again."""
    report = json.loads(path.read_text(encoding="utf-8"))
    for e in report["entries"]:
        for k in DERIVED:
            e["metrics"].pop(k, None)
    report["targets"] = derive(report["entries"], report["full_size"], report["environment"]["torch_threads"])
    return write_report(report, out_dir)


if __name__ == "__main__":
    sys.exit(main())
