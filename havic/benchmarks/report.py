"""The benchmark report: ``benchmark.json`` (every entry, the environment, the targets) and ``benchmark.md``.

The markdown is one line of environment and load, a table of the cases, the skipped cases with
their reasons and the table of targets. :func:`render` rebuilds both files from a stored
``benchmark.json``, deriving its figures again (after a change to the targets, say).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from havic.benchmarks.targets import DERIVED, derive

__all__ = ["markdown", "render", "write_report"]


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
        "*vs official*: official wall time / ours (official CPU-seconds / ours in brackets; official "
        "figures: docs/official-differences.md#official-cpu-timings). "
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

