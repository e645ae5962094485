"""Running the benchmark suite: the configuration, the plan of cases, one process per case, the report.

:func:`run_suite` runs every planned case, each in a fresh process with ``isolate`` (so that its
peak resident set is its own), carries the FLOP count of a network from its first case to the
others, turns a failing case into a skipped entry and returns the report that
:func:`havic.benchmarks.report.write_report` writes.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from havic.benchmarks.cases_data import bench_data, bench_video
from havic.benchmarks.cases_features import FEATURE_EXTRACTORS, bench_features
from havic.benchmarks.cases_model import bench_gpu, bench_inference, bench_peak, bench_pretrain, gpu_skips
from havic.benchmarks.entries import entry
from havic.benchmarks.media import default_video, face_overrides
from havic.benchmarks.targets import OFFICIAL, derive
from havic.benchmarks.timing import loadavg, machine_info, run_isolated
from havic.config import CONFIG_DIR, load_config, split_items, to_container

__all__ = ["BENCHMARKS", "RUNNERS", "SuiteOptions", "git_commit", "plan", "run_case", "run_suite", "suite_config"]

BENCHMARKS = ("peak", "pretrain", "inference", "video", "data", "gpu", "features")

RUNNERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "peak": bench_peak, "pretrain": bench_pretrain, "inference": bench_inference, "video": bench_video,
    "data": bench_data, "gpu": bench_gpu, "features": bench_features,
}


@dataclass
class SuiteOptions:
    """How the suite runs (the command line's options).

    Attributes:
        only: the benchmarks run, of :data:`BENCHMARKS`.
        quick: the tiny configuration, one timed call, no disturbance check, no compilation.
        threads: torch intra-op threads.
        iters: timed calls per case (None: 3, quick 1).
        warmup: warm-up calls per case (None: 1, quick 0).
        video_iters: timed calls per video case (None: 2, quick 1).
        video: the video scored and preprocessed (None: :func:`~havic.benchmarks.media.default_video`).
        device: "cuda" or "cpu" (None: CUDA where available).
        compile: run the torch.compile inference cases (never with `quick`).
        max_repeats: extra calls per case to replace calls disturbed by other processes.
        isolate: one fresh process per case (None: unless `quick`).
    """

    only: Sequence[str] = BENCHMARKS
    quick: bool = False
    threads: int = 2
    iters: int | None = None
    warmup: int | None = None
    video_iters: int | None = None
    video: str | None = None
    device: str | None = None
    compile: bool = True
    max_repeats: int = 2
    isolate: bool | None = None


def suite_config(items: Sequence[str], quick: bool) -> tuple[Any, list[str], list[str]]:
    """(configuration, YAML files, overrides) of command-line items; `quick` puts ``tiny.yaml`` first.

    The face detector is pointed at the shared weights, or Haar, unless the items configure it.
    """
    files, overrides = split_items(items)
    if quick:
        files = [str(CONFIG_DIR / "tiny.yaml"), *files]
    cfg = load_config(files, overrides)
    return load_config(files, [*face_overrides(cfg), *overrides]), files, overrides


def run_case(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One case in this process: thread settings first (they are the benchmark's, not the library's)."""
    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    entries = RUNNERS[spec["bench"]](spec)
    for e in entries:
        e["case_wall_s"] = time.perf_counter() - t0
    return entries


def plan(cfg: Any, only: Sequence[str], cuda: bool, compile_cases: bool) -> list[tuple[str, dict[str, Any]]]:
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
    if "features" in only:
        cases += [("features", {"extractor": name, "batch_size": 8}) for name in FEATURE_EXTRACTORS]
    return cases


def git_commit() -> str | None:
    """The checkout's short commit, with "+modified" for uncommitted changes to tracked files; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return (out.stdout.strip() + ("+modified" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _run_cases(cases: list[tuple[str, dict[str, Any]]], base: dict[str, Any], isolate: bool) -> list[dict[str, Any]]:
    """The entries of `cases`, each case run with `base` as its spec; a failing case becomes a skipped entry."""
    entries: list[dict[str, Any]] = []
    flops: dict[tuple[Any, ...], int] = {}
    for bench, params in cases:
        key = (bench, params.get("batch"))
        spec = dict(base, bench=bench, params=params, flops=flops.get(key))
        label = f"{bench} {params}"
        print(f"[benchmark] {label} ...", flush=True)
        try:
            got = run_isolated(run_case, spec) if isolate else run_case(spec)
        except Exception as err:  # noqa: BLE001 - one failing case is reported, the others still run
            traceback.print_exc()
            got = [entry(bench, label, params, skipped=f"failed: {type(err).__name__}: {err}")]
        for e in got:
            m = e["metrics"]
            if "flops" in m and e["bench"] in ("pretrain", "inference"):
                flops.setdefault(key, m["flops"])
            print(f"[benchmark]   {e['case']}: " + (e["skipped"] or ", ".join(
                f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float))), flush=True)
        entries += got
    return entries


def run_suite(cfg: Any, options: SuiteOptions, *, files: Sequence[str] = (), overrides: Sequence[str] = (),
              command: str = "") -> dict[str, Any]:
    """Run the planned cases of `cfg` (:func:`suite_config`) and return the report with its targets.

    Sets the torch thread count of this process and ``OMP_NUM_THREADS`` for the case processes.
    `files`, `overrides` and `command` are recorded in the report.
    """
    full_size = cfg.model == load_config([], [f"model.variant={cfg.model.variant}"]).model
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    isolate = (not options.quick) if options.isolate is None else options.isolate
    # Spawned case processes read the thread count from the environment as well.
    os.environ["OMP_NUM_THREADS"] = str(options.threads)
    torch.set_num_threads(options.threads)

    workdir = Path(tempfile.mkdtemp(prefix="havic-bench-"))
    entries: list[dict[str, Any]] = []
    load_before = loadavg()
    started = time.perf_counter()
    try:
        needs_video = {"video", "data", "features"} & set(options.only)
        video = Path(options.video) if options.video else (default_video(workdir, options.quick) if needs_video
                                                             else None)
        base = {
            "config": to_container(cfg), "quick": options.quick, "threads": options.threads, "device": str(device),
            "iters": options.iters or (1 if options.quick else 3),
            "warmup": (0 if options.quick else 1) if options.warmup is None else options.warmup,
            "video_iters": options.video_iters or (1 if options.quick else 2),
            "max_foreign_share": None if options.quick else 0.05,
            "max_repeats": 0 if options.quick else options.max_repeats,
            "workdir": str(workdir), "video": None if video is None else str(video),
        }
        compile_cases = "inference" in options.only and not options.quick and options.compile
        if "inference" in options.only and not compile_cases:
            why = "--no-compile" if not options.compile else "--quick (compilation takes minutes; full runs measure it)"
            entries += [entry("inference", f"bf16 b{b}, torch.compile",
                              {"batch": b, "precision": "bf16", "compile": True}, skipped=f"not run: {why}")
                        for b in (1, 4)]
        if "gpu" in options.only and device.type != "cuda":
            entries += gpu_skips("no CUDA device: the GPU options (SDPA kernel choice, torch.compile, fused AdamW, "
                                 "channels-last) are measured only where CUDA is available")
        entries += _run_cases(plan(cfg, options.only, device.type == "cuda", compile_cases), base, isolate)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "schema": "havic-benchmark/1",
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "commit": git_commit(),
        "environment": machine_info(),
        "config": {"variant": cfg.model.variant, "files": list(files), "overrides": list(overrides),
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
    report["targets"] = derive(entries, full_size, options.threads)
    return report
