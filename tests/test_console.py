"""What a training run tells the user: a forgotten init_from stops it, and the stack's chatter is filtered."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from havic.config import CONFIG_DIR
from havic.utils.logging import MessageFilter, quiet_console

ROOT = Path(__file__).resolve().parents[1]
FINETUNE_TINY = str(CONFIG_DIR / "finetune" / "tiny.yaml")


def train(tmp_path: Path, *items: str) -> subprocess.CompletedProcess:
    args = [FINETUNE_TINY, f"train.run_dir={tmp_path / 'runs'}", "train.synthetic_clips=8", "data.batch_size=4",
            "train.trainer.max_epochs=1", "train.export=false", *items]
    return subprocess.run([sys.executable, "-m", "havic", "train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "default"})


def test_finetuning_without_init_from_stops_in_one_line_unless_allowed(tmp_path: Path):
    res = train(tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: fine-tuning without pretrained weights: set train.init_from=<pretraining weights>, or "
        "train.allow_scratch=true to start the encoders at random (the w/o HCP ablation)")
    assert not (tmp_path / "runs").exists()  # stopped before the run folder


def test_a_training_run_prints_no_tips_or_known_deprecations(tmp_path: Path):
    res = train(tmp_path, "train.allow_scratch=true")
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout + res.stderr
    for chatter in ("Tip:", "litlogger", "was configured so", "to estimate number of stepping batches", "LeafSpec"):
        assert chatter not in text, chatter
    # Lightning's other messages still show.
    assert "GPU available:" in text and "`Trainer.fit` stopped: `max_epochs=1` reached." in text
    assert "fine-tuning from scratch (train.allow_scratch)" in text


def test_quiet_console_drops_only_the_known_messages():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    handler = Keep()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_console()
            quiet_console()  # twice adds nothing
            logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
            logger.info("`Trainer(limit_val_batches=1.0)` was configured so 100% of the batches will be used..")
            logger.info("GPU available: False, used: False")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
            warnings.warn("some other API is deprecated", FutureWarning)
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, as a UserWarning", UserWarning)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert records == ["GPU available: False, used: False"]
    assert sum(isinstance(f, MessageFilter) for f in logger.filters) == 1
    assert [(w.category, str(w.message)) for w in caught] == [
        (FutureWarning, "some other API is deprecated"),
        (UserWarning, "`isinstance(treespec, LeafSpec)` is deprecated, as a UserWarning")]
