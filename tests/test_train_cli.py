"""tools/train.py end to end, in process, on synthetic clips (``train.synthetic_clips``, tiny configs)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from havic.config import CONFIG_DIR, load_config, to_container
from havic.lit.base import CONFIG_KEY
from havic.checkpoints import read_weights
from havic.models import build_model
from havic.cli.train import main
from tiny_cache import build_tiny_cache  # the data tests' tiny cache

PRETRAIN = str(CONFIG_DIR / "pretrain" / "tiny.yaml")
FINETUNE = str(CONFIG_DIR / "finetune" / "tiny.yaml")


def _run_dir(parent: Path) -> Path:
    (run,) = [p for p in parent.iterdir() if p.is_dir()]
    return run


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _train_losses(run: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["train/loss"]) for r in _metrics(run) if r.get("train/loss")}


def _decreases(losses: dict[int, float], k: int = 4, factor: float = 0.8) -> bool:
    values = [losses[s] for s in sorted(losses)]
    return sum(values[-k:]) / k < factor * sum(values[:k]) / k


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("pretrain")
    assert main([PRETRAIN, f"train.run_dir={parent}", "train.preview_every_n_steps=16"]) == 0
    return _run_dir(parent)


def test_pretraining_run_learns_and_writes_its_run_folder(pretrain_run: Path):
    losses = _train_losses(pretrain_run)
    assert len(losses) == 32  # 16 clips / batch 4 x 8 epochs
    assert _decreases(losses)
    rows = _metrics(pretrain_run)
    for term in ("rec_video", "rec_audio", "contrastive", "contrastive_acc", "cross_video", "cross_audio"):
        assert any(r.get(f"train/{term}") for r in rows) and any(r.get(f"val/{term}") for r in rows)
    lrs = [float(r["lr-AdamW/all"]) for r in rows if r.get("lr-AdamW/all")]
    assert max(lrs) == pytest.approx(2e-3) and lrs[0] == pytest.approx(2e-3 / 25)  # warm-up 1 epoch = 4 steps
    saved = load_config([pretrain_run / "config.yaml"], defaults=None)
    assert to_container(saved) == to_container(load_config([PRETRAIN], [f"train.run_dir={pretrain_run.parent}",
                                                                         "train.preview_every_n_steps=16"]))
    assert sorted(p.name for p in (pretrain_run / "previews").iterdir()) == ["step_0000016.png", "step_0000032.png"]
    ckpt = torch.load(pretrain_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt[CONFIG_KEY] == to_container(saved) and ckpt["global_step"] == 32
    weights = read_weights(pretrain_run / "export" / "last.safetensors")
    assert weights.kind == "pretrain" and weights.metadata["global_step"] == "32"
    for key, value in weights.state_dict.items():
        torch.testing.assert_close(value, ckpt["state_dict"][f"model.{key}"], rtol=0, atol=0)
    build_model(weights.config.model, "pretrain").load_state_dict(weights.state_dict, strict=True)
    assert (pretrain_run / "export" / "best.safetensors").is_file()


def test_finetuning_from_the_pretraining_checkpoint_learns(pretrain_run: Path, tmp_path: Path):
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    assert main([FINETUNE, f"train.run_dir={tmp_path}", f"train.init_from={ckpt}", "train.wandb=true"]) == 0
    run = _run_dir(tmp_path)
    assert _decreases(_train_losses(run))
    rows = _metrics(run)
    assert any(r.get("train/bce_audio") for r in rows) and any(r.get("train/bce_video") for r in rows)
    val = [r for r in rows if r.get("val/auc")]
    assert len(val) == 6 and float(val[-1]["val/num_clips"]) == 8
    lr_pre = [float(r["lr-AdamW/pretrained"]) for r in rows if r.get("lr-AdamW/pretrained")]
    lr_new = [float(r["lr-AdamW/new"]) for r in rows if r.get("lr-AdamW/new")]
    assert lr_pre[0] == pytest.approx(3e-4) and lr_new[0] == pytest.approx(3e-3)
    assert lr_pre[16] == pytest.approx(3e-4)  # warm restart after 4 epochs of 4 steps
    assert list((run / "wandb").glob("offline-run-*")), "W&B offline run folder missing"
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best[CONFIG_KEY]["train"]["stage"] == "finetune"
    weights = read_weights(run / "export" / "best.safetensors")
    assert weights.kind == "detector" and weights.config.train.init_from == str(ckpt)
    assert weights.metadata["heads"] == "trained"      # a fine-tuning export scores without a flag
    build_model(weights.config.model, "detector").load_state_dict(weights.state_dict, strict=True)


def test_resume_repeats_the_uninterrupted_trajectory(tmp_path: Path):
    # 8 clips / batch 4: 2 steps per epoch, 4 epochs; the first run stops after 2 epochs.
    common = [PRETRAIN, "train.synthetic_clips=8", "train.trainer.max_epochs=4", "train.export=false"]
    main(common + [f"train.run_dir={tmp_path / 'full'}"])
    main(common + [f"train.run_dir={tmp_path / 'first'}", "train.trainer.max_steps=4"])
    mid = _run_dir(tmp_path / "first") / "checkpoints" / "last.ckpt"
    main(common + [f"train.run_dir={tmp_path / 'resumed'}", f"train.resume={mid}"])
    full = _train_losses(_run_dir(tmp_path / "full"))
    first = _train_losses(_run_dir(tmp_path / "first"))
    resumed = _train_losses(_run_dir(tmp_path / "resumed"))
    assert sorted(first) == list(range(4)) and sorted(resumed) == list(range(4, 8))
    assert {**first, **resumed} == full  # bit-identical: same masks, drop-path, order and schedule


def test_gradient_accumulation_run_steps_as_computed(tmp_path: Path, capsys):
    # 10 clips / batch 4 = 3 batches per epoch (drop_last off for fine-tuning); global batch 8 -> 2 per step.
    assert main([FINETUNE, f"train.run_dir={tmp_path}", "train.allow_scratch=true", "train.synthetic_clips=10",
                 "data.batch_size=4", "train.global_batch_size=8", "train.trainer.max_epochs=3", "train.export=false"]) == 0
    out = capsys.readouterr().out
    assert "effective batch 8 = 4 per device x 1 process(es) x 2 accumulation step(s)" in out
    ckpt = torch.load(_run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6  # ceil(3 / 2) = 2 steps per epoch, the partial one included
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 6


def test_cli_errors_name_the_problem(tmp_path: Path, capsys):
    for items, message in (
        ([PRETRAIN, f"train.run_dir={tmp_path}", "train.schedule=cosine"], "train.schedule='cosine'"),
        ([FINETUNE, f"train.run_dir={tmp_path}", f"train.init_from={tmp_path / 'nope.ckpt'}"],
         "train.init_from=.*file not found"),
        ([PRETRAIN, "train.lrr=1"], "train.lrr"),
        ([PRETRAIN, f"train.run_dir={tmp_path}", "train.synthetic_clips=0"], "data.cache_dir is not set"),
        ([PRETRAIN, f"train.run_dir={tmp_path}", f"data.cache_dir={tmp_path}"],
         "both train.synthetic_clips=16 and data.cache_dir"),
    ):
        assert main(items) == 2, message                # bad input: nothing was done
        err = capsys.readouterr().err
        assert err.startswith("error: ") and re.search(message, err), err


def test_a_run_that_never_validates_still_saves_and_exports_its_last_weights(tmp_path: Path, caplog):
    # 8 clips / batch 4 = 2 steps per epoch; 3 epochs and validation every 5: no validation at all.
    assert main([PRETRAIN, f"train.run_dir={tmp_path}", "train.synthetic_clips=8", "train.trainer.max_epochs=3",
                 "train.trainer.check_val_every_n_epoch=5"]) == 0
    run = _run_dir(tmp_path)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]   # no best, no temporary file
    assert [p.relative_to(run).as_posix() for p in run.rglob("*.ckpt")] == ["checkpoints/last.ckpt"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    assert sorted(p.name for p in (run / "export").iterdir()) == ["last.safetensors"]
    assert read_weights(run / "export" / "last.safetensors").metadata["global_step"] == "6"
    assert ("this run never validates (train.trainer.check_val_every_n_epoch=5 is above "
            "train.trainer.max_epochs=3)") in caplog.text


def test_finetuning_on_the_clip_cache_validates_on_the_val_split(pretrain_run: Path, tmp_path: Path):
    cache = build_tiny_cache(tmp_path / "cache")  # train: 8 clips with audio (+1 without), val: 2, test: 4
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    assert main([FINETUNE, f"train.run_dir={tmp_path / 'runs'}", f"train.init_from={ckpt}", "train.synthetic_clips=0",
                 f"data.cache_dir={cache}", "data.batch_size=2", "data.eval_batch_size=3",
                 "train.trainer.max_epochs=2", "train.export=false"]) == 0
    run = _run_dir(tmp_path / "runs")
    val = [r for r in _metrics(run) if r.get("val/auc")]
    assert [float(r["val/num_clips"]) for r in val] == [2.0, 2.0]
    assert len(_train_losses(run)) == 8  # 8 weighted draws per epoch / batch 2, two epochs


def test_pretraining_on_the_clip_cache_learns(tmp_path: Path):
    cache = build_tiny_cache(tmp_path / "cache")  # 8 training clips with audio, 1 without (excluded)
    assert main([PRETRAIN, f"train.run_dir={tmp_path / 'runs'}", "train.synthetic_clips=0",
                 f"data.cache_dir={cache}", "data.batch_size=4", "train.trainer.max_epochs=12",
                 "train.export=false", "train.wandb=false"]) == 0
    losses = _train_losses(_run_dir(tmp_path / "runs"))
    assert len(losses) == 24  # 8 clips / batch 4 (drop_last) x 12 epochs
    assert _decreases(losses)


def test_bf16_mixed_precision_run(tmp_path: Path):
    assert main([PRETRAIN, f"train.run_dir={tmp_path}", "train.synthetic_clips=8", "train.trainer.max_epochs=2",
                 "train.trainer.precision=bf16-mixed", "train.export=false", "train.wandb=false"]) == 0
    losses = _train_losses(_run_dir(tmp_path))
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
