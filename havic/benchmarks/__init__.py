"""The benchmark suite: speed and memory of pretraining, inference, whole-video scoring and the data path.

The suite is an application of the library (nothing under ``havic/`` outside the command line
imports it); ``havic benchmark`` (``python tools/benchmark.py``, :mod:`havic.cli.benchmark`) is its
command line.

* :mod:`havic.benchmarks.timing`: measurement on a shared machine: timed calls and the CPU time
  other processes took meanwhile, peak memory, FLOP counts, the matmul peak, fresh processes;
* :mod:`havic.benchmarks.cases_model`: matmul peak, a pretraining step, detector inference and
  the GPU options; :mod:`havic.benchmarks.cases_data`: a 10 s video scored end to end,
  preprocessing and cache reads (:mod:`havic.benchmarks.entries`: what a case takes and returns);
* :mod:`havic.benchmarks.official`: the official pipeline's costs, run in the same run as baseline;
* :mod:`havic.benchmarks.media`: the video the media cases use and the face detector weights;
* :mod:`havic.benchmarks.targets`: model FLOP utilisation, same-run and official ratios, targets;
* :mod:`havic.benchmarks.report`: ``benchmark.json`` and the markdown table;
* :mod:`havic.benchmarks.suite`: the plan of cases, one process per case, the report.

Protocol (as for the official figures, docs/official-differences.md#official-cpu-timings): 2 torch
threads by default, one warm-up and three timed calls per case, the median reported; a call during
which other processes took more than 5 % of the machine is repeated (at most twice) and the share is
reported either way. Each precision runs in fp32 and under bf16 autocast (fp16 too on CUDA). Every
case runs in a fresh process so that its peak resident set is its own.

On a machine shared with another busy process, 2-thread timings are distorted far beyond the lost
core: every parallel region waits at its barrier for the thread that the scheduler parked, so runs
of many small operations (the face detector, bf16 casts, norms) slow down up to tenfold. There, one
thread on the remaining core gives clean single-thread figures; their CPU-seconds compare with the
official CPU-seconds (docs/official-differences.md#official-cpu-timings), and the same-run ratios
stay valid.
"""
from havic.benchmarks.cases_data import bench_data, bench_video
from havic.benchmarks.cases_model import bench_gpu, bench_inference, bench_peak, bench_pretrain, model_inputs
from havic.benchmarks.official import official_inputs, official_pipeline_score
from havic.benchmarks.report import markdown, render, write_report
from havic.benchmarks.suite import BENCHMARKS, SuiteOptions, plan, run_case, run_suite, suite_config
from havic.benchmarks.targets import OFFICIAL, TARGETS, derive
from havic.benchmarks.timing import (
    PeakMemory,
    Timing,
    count_flops,
    machine_info,
    matmul_peak_flops,
    run_isolated,
    time_iterations,
)

__all__ = [
    "BENCHMARKS",
    "OFFICIAL",
    "TARGETS",
    "PeakMemory",
    "SuiteOptions",
    "Timing",
    "bench_data",
    "bench_gpu",
    "bench_inference",
    "bench_peak",
    "bench_pretrain",
    "bench_video",
    "count_flops",
    "derive",
    "machine_info",
    "markdown",
    "matmul_peak_flops",
    "model_inputs",
    "official_inputs",
    "official_pipeline_score",
    "plan",
    "render",
    "run_case",
    "run_isolated",
    "run_suite",
    "suite_config",
    "time_iterations",
    "write_report",
]
