"""Derived figures and targets of the benchmark suite.

Two kinds of ratio judge a run. Against the official code's figures (:data:`OFFICIAL`, measured
once on one 2-core machine): meaningful only at full size and, in wall time, only at the same
thread count. Against our own fp32 path in the same run: our fp32 path does the official
arithmetic, so that ratio holds on any machine. :func:`derive` adds both to the entries, with
model FLOP utilisation (achieved FLOP/s over the matmul peak of the same precision) and the bf16
logits' distance to fp32, and returns the targets with their values.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from havic.precision import PRECISIONS

__all__ = ["DERIVED", "OFFICIAL", "TARGETS", "derive", "targets"]

# The official code's costs on this 2-core machine, docs/official-differences.md#official-cpu-timings
# (torch 2.13.0+cpu, 2 threads, clean pass, median of 3). Peak RSS is ru_maxrss / 1024 (MiB).
# "above import" subtracts what the process held besides the fp32 weights right after building the
# model (RSS after build - weights), so that it compares with our peak above the RSS after
# `import torch` (our CUDA build of torch alone maps about 500 MiB, the CPU build about 200 MiB).
OFFICIAL = {
    "source": "official code, docs/official-differences.md#official-cpu-timings (torch 2.13.0+cpu, 2 threads)",
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
# The goals: speed-ups over the official code and our fp32 path, model FLOP utilisation.
TARGETS = {"pretrain_speedup": 2.0, "inference_speedup": 2.0, "video_speedup": 3.0, "mfu": 0.70}
# The metrics that derive() adds: a re-rendered report drops them and derives them again.
DERIVED = ("cpu_s", "peak_flop_per_s", "mfu", "speedup_vs_fp32", "speedup_vs_official", "cpu_speedup_vs_official",
           "official_peak_above_import_mib", "max_abs_logit_diff_vs_fp32", "fp32_logit_abs_max",
           "speedup_vs_official_pipeline", "score_diff_vs_official_pipeline", "speedup_vs_official_estimate")


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
        # Our fp32 path does the official arithmetic (the same FLOP count as the official model, see
        # docs/official-differences.md#official-cpu-timings), so this ratio holds on any machine,
        # while the official figures were taken on one machine only.
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

