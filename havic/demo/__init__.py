"""``make demo``: the whole method on a synthetic dataset, end to end, on a CPU in minutes.

The demo is an application of the library, not part of it (nothing under ``havic/`` outside the
command line imports it):

* :mod:`havic.demo.settings`: what it generates and runs (``configs/demo/demo.yaml``);
* :mod:`havic.demo.pipeline`: the stages (data, manifests, preprocessing, pretraining,
  fine-tuning with and without pretraining, scoring, evaluation, report), each one running the
  project's commands in this process;
* :mod:`havic.demo.report`: the results table and the run folder's report;
* the synthetic world the data stage writes: talking faces (:mod:`havic.demo.faces`) with
  synthesised speech (:mod:`havic.demo.speech`), fakes made from them (:mod:`havic.demo.fakes`),
  planned and written as mp4 files with labels (:mod:`havic.demo.world`).

``havic demo`` (``python tools/demo.py``, :mod:`havic.cli.demo`) is its command line.
"""
from havic.demo.pipeline import METHODS, STAGES, Demo, DemoPaths, default_run_dir
from havic.demo.report import format_table
from havic.demo.settings import DEMO_CONFIG, QUICK_CONFIG, DemoError, DemoSettings, load_settings

__all__ = [
    "DEMO_CONFIG",
    "METHODS",
    "QUICK_CONFIG",
    "STAGES",
    "Demo",
    "DemoError",
    "DemoPaths",
    "DemoSettings",
    "default_run_dir",
    "format_table",
    "load_settings",
]
