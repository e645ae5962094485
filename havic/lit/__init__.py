"""Lightning training: the two stage modules, schedules, callbacks and run assembly.

``tools/train.py`` uses :func:`havic.lit.runs.prepare_run`; the modules can also be driven directly::

    module = PretrainModule(load_config(["configs/pretrain/tiny.yaml"]))
    pl.Trainer(max_steps=10).fit(module, datamodule=SyntheticDataModule(module.cfg, "pretrain", 16))
"""
from havic.lit.finetune import FinetuneModule
from havic.lit.pretrain import PretrainModule
from havic.lit.schedules import Schedule, StepScheduler

__all__ = ["FinetuneModule", "PretrainModule", "Schedule", "StepScheduler"]
