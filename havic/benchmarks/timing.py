"""Measurement for the benchmark suite: timing on a shared machine, peak memory, FLOPs, matmul peak.

On a shared machine wall time alone misleads: another process can take half of the cores. Every
timed iteration therefore also records this process's CPU time and the CPU time that the rest of
the machine used meanwhile ("foreign" CPU seconds, from ``/proc/stat``). An iteration in which
other processes used more than a set share of the machine can be repeated, and the share is
reported with the result either way.

Peak memory is the resident-set high-water mark on the CPU (``VmHWM``, reset for a block through
``/proc/self/clear_refs`` on Linux; otherwise the peak of the whole process) and the caching
allocator's peak on CUDA devices. FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`
(FLOPs = 2 x multiply-accumulates), extended with the CPU flash-attention kernels, which it does
not count by itself. Model FLOP utilisation is achieved FLOP/s over :func:`matmul_peak_flops`
measured in the same dtype on the same machine.

Nothing here changes global torch settings (threads, backends); the caller decides them. Each case
of the suite runs in a fresh process (:func:`run_isolated`) and reports the machine it ran on
(:func:`machine_info`).
"""
from __future__ import annotations

import logging
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "Iteration",
    "PeakMemory",
    "Timing",
    "count_flops",
    "current_rss_bytes",
    "loadavg",
    "machine_busy_seconds",
    "machine_info",
    "matmul_peak_flops",
    "peak_rss_bytes",
    "reset_peak_rss",
    "run_isolated",
    "sdpa_backward_flops",
    "sdpa_flops",
    "time_iterations",
]

log = logging.getLogger(__name__)


_PROC_STAT = "/proc/stat"
_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


# --------------------------------------------------------------------------------------------------
# Machine load
# --------------------------------------------------------------------------------------------------


def loadavg() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS does not report them."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return None


def machine_busy_seconds() -> float | None:
    """CPU-seconds all processes on the machine have spent busy since boot (all cores), or None.

    Read from the aggregate ``cpu`` line of ``/proc/stat``: user + nice + system + irq + softirq +
    steal (idle and iowait are not busy; guest time is already inside user).
    """
    try:
        with open(_PROC_STAT, encoding="ascii") as f:
            fields_ = f.readline().split()
    except OSError:
        return None
    if not fields_ or fields_[0] != "cpu":
        return None
    ticks = [int(x) for x in fields_[1:9]] + [0] * max(0, 9 - len(fields_))
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


@dataclass
class Iteration:
    """One timed call.

    Attributes:
        wall_s: wall-clock seconds.
        cpu_s: CPU-seconds of this process (all its threads).
        foreign_cpu_s: CPU-seconds other processes used meanwhile (None where unknown). The
            ``/proc/stat`` tick (10 ms) makes values below about 0.05 s noise.
        foreign_share: ``foreign_cpu_s / (wall_s * cores)``: the share of the machine others took.
        load_1m: 1-minute load average at the end of the call.
    """

    wall_s: float
    cpu_s: float
    foreign_cpu_s: float | None
    foreign_share: float | None
    load_1m: float | None


@dataclass
class Timing:
    """Timed iterations of one measurement and the ones its figures use.

    Attributes:
        iterations: every timed iteration, in order (repeats of contaminated ones included).
        used: indices into ``iterations`` that the median is taken over.
        warmup_s: wall seconds of the warm-up calls.
        max_foreign_share: the contamination threshold (None: none applied).
    """

    iterations: list[Iteration]
    used: list[int]
    warmup_s: list[float] = field(default_factory=list)
    max_foreign_share: float | None = None

    @property
    def median_s(self) -> float:
        """Median wall seconds of the used iterations."""
        return statistics.median(self.iterations[i].wall_s for i in self.used)

    @property
    def clean(self) -> bool | None:
        """Whether every used iteration stayed under the threshold (None: unknown or no threshold)."""
        shares = [self.iterations[i].foreign_share for i in self.used]
        if self.max_foreign_share is None or any(s is None for s in shares):
            return None
        return all(s <= self.max_foreign_share for s in shares)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: median and per-iteration wall, CPU and foreign CPU seconds, load."""
        used = [self.iterations[i] for i in self.used]
        shares = [it.foreign_share for it in used if it.foreign_share is not None]
        return {
            "median_s": self.median_s,
            "wall_s": [it.wall_s for it in used],
            "cpu_s": [it.cpu_s for it in used],
            "foreign_cpu_s": [it.foreign_cpu_s for it in used],
            "max_foreign_share": max(shares) if shares else None,
            "load_1m": [it.load_1m for it in used],
            "clean": self.clean,
            "n_timed": len(self.iterations),
            "n_repeated": len(self.iterations) - len(self.used) if self.max_foreign_share is not None else 0,
            "warmup_s": list(self.warmup_s),
        }


def _timed_call(fn: Callable[[], Any], sync: Callable[[], None] | None, cores: int) -> Iteration:
    busy0, cpu0, t0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    fn()
    if sync is not None:
        sync()
    wall, cpu, busy1 = time.perf_counter() - t0, time.process_time() - cpu0, machine_busy_seconds()
    foreign = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - cpu)
    share = None if foreign is None or wall <= 0 else foreign / (wall * cores)
    load = loadavg()
    return Iteration(wall, cpu, foreign, share, None if load is None else load[0])


def time_iterations(
    fn: Callable[[], Any],
    *,
    iters: int = 3,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    max_foreign_share: float | None = None,
    max_repeats: int = 0,
) -> Timing:
    """Warm up, then time `iters` calls of `fn`, repeating calls that other processes disturbed.

    Args:
        fn: the work; its result is discarded.
        iters: timed calls the median is taken over.
        warmup: untimed calls first (caches, allocator, lazily built kernels).
        sync: called after `fn` inside the timed region (e.g. ``torch.cuda.synchronize``).
        max_foreign_share: a call during which other processes used more than this share of the
            machine's cores counts as contaminated and is repeated (None: no check).
        max_repeats: at most this many extra calls in all.

    Returns:
        A :class:`Timing`. Its median is over the clean calls when at least `iters` are clean,
        else over the `iters` least disturbed ones (``Timing.clean`` is then False).
    """
    if iters < 1 or warmup < 0 or max_repeats < 0:
        raise ValueError(f"need iters >= 1, warmup >= 0, max_repeats >= 0; got {iters}, {warmup}, {max_repeats}")
    cores = _cpu_count()
    warm = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        warm.append(time.perf_counter() - t0)
    runs = [_timed_call(fn, sync, cores) for _ in range(iters)]
    if max_foreign_share is not None:

        def is_clean(it: Iteration) -> bool:
            return it.foreign_share is None or it.foreign_share <= max_foreign_share

        while sum(map(is_clean, runs)) < iters and len(runs) < iters + max_repeats:
            runs.append(_timed_call(fn, sync, cores))
        order = sorted(range(len(runs)), key=lambda i: (not is_clean(runs[i]), runs[i].foreign_share or 0.0))
        used = sorted(order[:iters])
    else:
        used = list(range(iters))
    return Timing(runs, used, warm, max_foreign_share)


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        with open(_PROC_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux), or None."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """Resident-set high-water mark: ``VmHWM`` (since the last reset) or the process's ``ru_maxrss``."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(kib) * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a block: resident set on the CPU, allocator peak on a CUDA device.

    On the CPU the peak covers only the block when ``VmHWM`` could be reset (``scope="block"``),
    else the whole process so far (``scope="process"``). The resident set includes memory that the
    allocator keeps after earlier work, so a fresh process per measurement is the honest setting
    (:func:`run_isolated`).

    Args:
        device: where the work runs.

    Attributes:
        peak_bytes: the peak, set when the block ends.
        baseline_bytes: the resident set (CPU) or allocated bytes (CUDA) when the block began.
        scope: "block" or "process".
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self.baseline_bytes: int | None = None
        self.scope = "block"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.scope = "block" if reset_peak_rss() else "process"
            self.baseline_bytes = current_rss_bytes()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak_bytes = peak_rss_bytes()


# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------


def sdpa_flops(query_shape: tuple[int, ...], key_shape: tuple[int, ...], value_shape: tuple[int, ...],
               *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Attention forward FLOPs: ``Q K^T`` and ``P V``, 2 FLOPs per multiply-accumulate.

    Shapes are (B, heads, L, d): ``2 B h Lq Lk d_k + 2 B h Lq Lk d_v`` (softmax not counted, as for
    the explicit-matmul attention that FlopCounterMode counts through its bmm calls).
    """
    b, h, lq, dk = query_shape
    lk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * lq * lk * (dk + dv)


def sdpa_backward_flops(grad_out_shape: tuple[int, ...], query_shape: tuple[int, ...], key_shape: tuple[int, ...],
                        value_shape: tuple[int, ...], *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Attention backward FLOPs: the recomputed ``Q K^T`` and the four gradient products (dP, dV, dQ, dK)."""
    b, h, lq, dk = query_shape
    lk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * lq * lk * (3 * dk + 2 * dv)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    """The CPU flash-attention kernels that FlopCounterMode has no formula for."""
    aten = torch.ops.aten
    out: dict[Any, Callable[..., int]] = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", sdpa_flops),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", sdpa_backward_flops)):
        op = getattr(aten, name, None)
        if op is not None:
            out[op] = formula
    return out


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run `fn` once under a FLOP counter.

    Returns:
        (fn's result, FLOPs of the matrix products, convolutions and attention it ran, forward
        and, if it runs one, backward).
    """
    with FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        result = fn()
    return result, int(counter.get_total_flops())


def matmul_peak_flops(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    size: int = 2048,
    repeats: int = 5,
    min_seconds: float = 0.2,
) -> float:
    """The best FLOP/s of a square matrix product in `dtype` over `repeats` timed rounds.

    Each round repeats the product until it has run `min_seconds`; the best round is taken since
    interference only ever slows a round down. This is the denominator of model FLOP utilisation.
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b, out=out)
    sync()
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            n += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        best = max(best, 2.0 * size**3 * n / elapsed)
    return best


# --------------------------------------------------------------------------------------------------
# Isolation, environment
# --------------------------------------------------------------------------------------------------


def run_isolated(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` in a fresh spawned process and return its (picklable) result.

    A fresh process makes peak-memory figures independent of earlier measurements. `fn` must be
    importable by name (a module-level function). The child inherits the environment, so thread
    settings made through ``OMP_NUM_THREADS`` apply to it too. An exception in the child is
    raised here, with the child's traceback attached as its cause.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first ``name`` line of /proc/cpuinfo, or None (no such line, or no /proc)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    """Versions, CPU, cores, torch threads, low-precision CPU features and the CUDA device, if any."""
    flags = set((_cpuinfo_field("flags") or "").split())
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpuinfo_field("model name") or platform.processor() or platform.machine(),
        "cores": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_features": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni",
                                                         "amx_bf16", "amx_tile", "amx_int8")),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None,
        "cuda": torch.cuda.is_available(),
    }
    if info["cuda"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info

