"""The command line: ``havic <command> [args]``, one module per command.

Each module here is a thin argparse front end with a ``main(argv) -> int`` over library functions;
``tools/<module>.py`` runs the same ``main`` as a script, and the wheel installs ``havic`` (this
dispatcher) and one ``havic-<command>`` console script per command. Exit codes: 0 done, 1 the job
ran but failed, 2 bad input or usage (nothing was done).
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

# command -> (module under havic.cli, one-line description); modules are imported only when run.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "pretrain or fine-tune HAVIC (train.stage) from configs and key=value overrides"),
    "preprocess": ("preprocess", "decode, crop faces and compute fbanks of a manifest into a clip cache"),
    "build-manifest": ("build_manifest", "write a manifest CSV for a dataset folder (LRS2, FakeAVCeleb, ...)"),
    "infer": ("infer", "score whole videos with sliding windows: one row per input"),
    "evaluate": ("evaluate", "ACC / AP / AUC of predictions or of a detector on a manifest"),
    "convert": ("convert_weights", "convert official HAVIC, AudioMAE + MARLIN or pretraining weights"),
    "export": ("export", "write a folder to publish on the Hugging Face Hub: weights, config, model card"),
    "model-info": ("model_info", "parameter counts of the networks of a configuration"),
    "benchmark": ("benchmark", "speed and memory benchmarks with same-run baselines"),
    "demo": ("demo", "the whole pipeline on a generated dataset, with the results table"),
    "analysis-demo": ("analysis_demo", "probes of the demo's pretrained HAVIC per tap vs its random-init twin"),
    "probe": ("probe", "SSR-DFD linear probes on stored features: train, evaluate, matrix, fuse, silence-audit"),
    "extract-features": ("extract_features", "frozen-encoder features of videos into a resumable feature store"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: havic <command> [args]   (havic <command> --help for its options)\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``havic <command> ...``; returns the command's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"havic: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"havic.cli.{COMMANDS[command][0]}")
    return int(module.main(rest) or 0)

