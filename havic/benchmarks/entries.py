"""Result entries of the benchmark suite and the helpers every case shares.

A case is a function of one *spec*, a picklable dict (it crosses into a fresh process):

    bench, params: the benchmark and the case's parameters (e.g. ``{"batch": 4, "precision": "bf16"}``);
    config: the configuration as a plain container (:func:`havic.config.to_container`);
    quick, threads, device: the run's settings;
    iters, warmup, video_iters, max_foreign_share, max_repeats: the timing protocol;
    flops: the FLOPs an earlier case counted for the same network and batch, or None;
    workdir, video: a scratch folder and the video to score and preprocess.

It returns a list of *entries*, JSON-ready dicts (:func:`entry`) that the report keeps as they are.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from havic.benchmarks.timing import count_flops, peak_rss_bytes

__all__ = ["MIB", "cuda_metrics", "entry", "flops_or_warm", "mib", "rss_metrics", "spec_device", "sync_of",
           "timing_kwargs"]

MIB = 2**20


def entry(bench: str, case: str, params: dict[str, Any], metrics: dict[str, Any] | None = None,
          timing: dict[str, Any] | None = None, skipped: str | None = None, notes: str = "") -> dict[str, Any]:
    """One result: a case's metrics and timing summary, or the reason it was skipped."""
    return {"bench": bench, "case": case, "params": params, "metrics": metrics or {}, "timing": timing,
            "skipped": skipped, "notes": notes}


def mib(n: int | None) -> float | None:
    """Bytes in MiB (None stays None)."""
    return None if n is None else n / MIB


def spec_device(spec: dict[str, Any]) -> torch.device:
    """The device a case runs on."""
    return torch.device(spec["device"])


def sync_of(device: torch.device) -> Callable[[], None] | None:
    """What ends a timed call on `device`: CUDA work is asynchronous, CPU work is not."""
    return torch.cuda.synchronize if device.type == "cuda" else None


def timing_kwargs(spec: dict[str, Any], warmed: int = 0) -> dict[str, Any]:
    """The protocol's :func:`~havic.benchmarks.timing.time_iterations` arguments, less `warmed` warm-up calls."""
    return {"iters": spec["iters"], "warmup": max(0, spec["warmup"] - warmed),
            "max_foreign_share": spec["max_foreign_share"], "max_repeats": spec["max_repeats"]}


def flops_or_warm(spec: dict[str, Any], fn: Callable[[], Any]) -> tuple[int, int]:
    """(FLOPs of one call, warm-up calls done): counted on the first call unless an earlier case did.

    The count does not depend on the precision, and the counter's per-op overhead is large for
    small models, so the suite counts once per network and batch.
    """
    if spec.get("flops") is not None:
        return int(spec["flops"]), 0
    return count_flops(fn)[1], 1


def rss_metrics(rss_import: int | None) -> dict[str, Any]:
    """Peak resident set of the process, and above the resident set after ``import torch`` (MiB)."""
    peak = peak_rss_bytes()
    return {"peak_rss_mib": mib(peak), "rss_after_import_mib": mib(rss_import),
            "peak_above_import_mib": None if rss_import is None else mib(peak - rss_import)}


def cuda_metrics(device: torch.device) -> dict[str, Any]:
    """The CUDA allocator's peak (MiB) on a CUDA device; nothing on the CPU."""
    return {"peak_allocated_mib": mib(torch.cuda.max_memory_allocated(device))} if device.type == "cuda" else {}
