"""Train HAVIC: pretraining or fine-tuning (train.stage) from YAML files and key=value overrides.

    python tools/train.py configs/pretrain/lrs2.yaml data.root=/data/LRS2 data.cache_dir=/cache/lrs2
    python tools/train.py configs/finetune/fakeavceleb.yaml data.cache_dir=/cache/favc \\
        train.init_from=runs/lrs2-pretrain-<stamp>/export/best.safetensors train.trainer.devices=4
    python tools/train.py configs/pretrain/tiny.yaml            # smoke run on synthetic clips

Writes the run folder <train.run_dir>/<name>-<timestamp> (see havic.lit.runs): every run ends with
checkpoints/last.ckpt and export/last.safetensors (best.* once a validation ran), or fails. Several
devices or nodes use DDP (torchrun and SLURM launches are detected); train.resume=<.ckpt> continues a run.
"""
from __future__ import annotations

import sys

from havic.cli._common import EXIT_FAILED, fail, make_parser
from havic.config import ConfigError, load_config


def parse_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    p = make_parser(__doc__)
    p.add_argument("items", nargs="+", metavar="CONFIG | key=value",
                   help="configuration files (merged in order), then key=value overrides")
    items = p.parse_args(argv).items
    files = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    if not files:
        p.error("give at least one configuration file")
    return files, overrides


def main(argv: list[str] | None = None) -> int:
    files, overrides = parse_args(argv)
    from havic.checkpoints import CheckpointError
    from havic.lit.runs import finish_run, prepare_run
    from havic.utils.logging import global_rank, setup_logging

    setup_logging()
    try:
        cfg = load_config(files, overrides)
        run = prepare_run(cfg)
    except (ConfigError, CheckpointError) as err:
        return fail(err)
    setup_logging(file=run.run_dir / "train.log")
    if global_rank() == 0:
        print(run.summary(), flush=True)
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=cfg.train.resume, weights_only=True)
    try:
        exported = finish_run(run)
    except (RuntimeError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    for name, path in exported.items():
        print(f"exported {name} weights: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
