"""Model cases of the benchmark suite: matmul peak, a pretraining step, detector inference, GPU options.

Every case builds its network from the spec's configuration with seed 0 and feeds it seeded random
inputs (:func:`model_inputs`), so that cases, precisions and runs see the same numbers. See
:mod:`havic.benchmarks.entries` for the spec a case receives and the entries it returns.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from havic.benchmarks.entries import (
    cuda_metrics,
    entry,
    flops_or_warm,
    rss_metrics,
    spec_device,
    sync_of,
    timing_kwargs,
)
from havic.benchmarks.timing import (
    count_flops,
    current_rss_bytes,
    loadavg,
    matmul_peak_flops,
    reset_peak_rss,
    time_iterations,
)
from havic.config import from_container
from havic.precision import PRECISIONS, autocast, cast_matmul_weights

__all__ = ["bench_gpu", "bench_inference", "bench_peak", "bench_pretrain", "gpu_skips", "model_inputs"]


def model_inputs(cfg: Any, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Seeded random clips of the configured sizes: video (B, 3, F, S, S) in [0, 1], audio (B, T, M)."""
    g = torch.Generator().manual_seed(1)
    v, a = cfg.model.video, cfg.model.audio
    video = torch.rand(batch, 3, v.num_frames, v.image_size, v.image_size, generator=g)
    audio = torch.randn(batch, a.num_frames, a.num_mel_bins, generator=g)
    return video.to(device), audio.to(device)


def bench_peak(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Square matrix products in each precision: the denominators of model FLOP utilisation."""
    device = spec_device(spec)
    size = 256 if spec["quick"] else (8192 if device.type == "cuda" else 2048)
    out = []
    for precision, dtype in PRECISIONS.items():
        if precision == "fp16" and device.type != "cuda":
            continue
        flops = matmul_peak_flops(dtype or torch.float32, device, size=size, repeats=3 if spec["quick"] else 7,
                                  min_seconds=0.02 if spec["quick"] else 0.3)
        out.append(entry("peak", f"matmul {precision}", {"precision": precision, "size": size},
                         {"flop_per_s": flops, "load_1m": (loadavg() or [None])[0]}))
    return out


def bench_pretrain(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One pretraining step (forward, losses, backward and, with ``params["optimizer"]``, the update)."""
    from havic.losses import loss_options, pretraining_losses
    from havic.models import build_model

    p = spec["params"]
    device, batch, precision, optimizer = spec_device(spec), p["batch"], p["precision"], p["optimizer"]
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

    flops, warmed = flops_or_warm(spec, step)
    timing = time_iterations(step, sync=sync_of(device), **timing_kwargs(spec, warmed=warmed))
    median = timing.median_s
    metrics = {"seconds": median, "samples_per_s": batch / median, "flops": flops, "flop_per_s": flops / median,
               "loss": losses[-1], "loss_finite": all(math.isfinite(x) for x in losses),
               **rss_metrics(rss_import), **cuda_metrics(device)}
    what = "fwd+bwd" if optimizer == "none" else f"fwd+bwd+{optimizer}"
    return [entry("pretrain", f"{precision} {what}", dict(p), metrics, timing.summary())]


def bench_inference(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Detector forward passes of one batch; the logits are kept for the comparison with fp32."""
    from havic.models import build_model

    p = spec["params"]
    device, batch, precision = spec_device(spec), p["batch"], p["precision"]
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
        flops, warmed = flops_or_warm(spec, forward)
    timing = time_iterations(forward, sync=sync_of(device), **timing_kwargs(spec, warmed=warmed))
    logits = forward()
    median = timing.median_s
    metrics = {"seconds": median, "samples_per_s": batch / median, "flops": flops, "flop_per_s": flops / median,
               "logits": [float(x) for x in logits.float().cpu()], **extra, **rss_metrics(rss_import),
               **cuda_metrics(device)}
    name = f"{precision} b{batch}" + (f", {p['weights']} weights" if p.get("weights", "fp32") != "fp32" else "")
    name += ", torch.compile" if p.get("compile") else ""
    return [entry("inference", name, dict(p), metrics, timing.summary())]


def bench_gpu(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """SDPA kernels, torch.compile, fused AdamW and channels-last on a CUDA device (bf16)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from havic.models import build_model

    device = spec_device(spec)
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
            t = time_iterations(fn, sync=sync_of(device), **timing_kwargs(spec, warmed=1))
            out.append(entry("gpu", name, params, {
                "seconds": t.median_s, "samples_per_s": batch / t.median_s, "flops": flops,
                "flop_per_s": flops / t.median_s, "first_call_s": first, **cuda_metrics(device)}, t.summary()))
        except Exception as err:  # noqa: BLE001 - a kernel missing on this GPU is a result, not a failure
            out.append(entry("gpu", name, params, skipped=f"{type(err).__name__}: {err}"))

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
            out.append(entry("gpu", f"pretrain bf16 {optimizer}", params, skipped=f"{type(err).__name__}: {err}"))
    return out


def gpu_skips(reason: str) -> list[dict[str, Any]]:
    """The GPU cases as skipped entries, where there is no CUDA device."""
    names = ["inference bf16 b4 sdpa=flash_attention", "inference bf16 b4 sdpa=efficient_attention",
             "inference bf16 b4 sdpa=cudnn_attention", "inference bf16 b4 sdpa=math",
             "inference bf16 b4 channels_last_3d", "inference bf16 b4 torch.compile",
             "pretrain bf16 b2 AdamW foreach", "pretrain bf16 b2 AdamW fused"]
    return [entry("gpu", n, {}, skipped=reason) for n in names]
