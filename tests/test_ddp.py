"""Two processes on CPU (gloo): the global contrastive loss and a DDP training run through tools/train.py.

Plain ``strategy="ddp"`` inside pytest would relaunch the pytest command for rank 1, so the
Lightning run is a subprocess of tools/train.py, and the loss check uses raw torch.distributed in
processes started by ``torch.multiprocessing.spawn`` (workers are module-level so they pickle).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from havic.config import CONFIG_DIR, load_config
from havic.lit.pretrain import pretraining_terms
from havic.data.synthetic_clips import SyntheticClips, batch_of
from havic.losses import loss_options
from havic.models import build_model
from havic.models.masking import MaskIds

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_TINY = CONFIG_DIR / "pretrain" / "tiny.yaml"
WORLD, BATCH = 2, 6  # 3 clips per rank


def _setup():
    """The same model, batch and masks in every process; drop-path off so the passes are deterministic."""
    cfg = load_config([PRETRAIN_TINY], ["model.video_drop_path=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg.model, "pretrain")
    m = cfg.model
    clips = SyntheticClips(BATCH, num_frames=m.video.num_frames, image_size=m.video.image_size,
                           audio_frames=m.audio.num_frames, num_mel_bins=m.audio.num_mel_bins)
    batch = batch_of(clips, list(range(BATCH)))
    ids = model.draw_masks(BATCH, torch.device("cpu"), torch.Generator().manual_seed(1))
    options = loss_options(cfg.loss)
    contrast_only = {**options, "rec_weight": 0.0, "cross_weight": 0.0, "contrastive_weight": 1.0}
    return model, batch, ids, {"contrastive_only": contrast_only, "default": options}


def _losses_and_grads(model, video, audio, ids, options, gather):
    result = {}
    for name, opts in options.items():
        model.zero_grad(set_to_none=True)
        terms = pretraining_terms(model(video, audio, ids_keep=ids), opts, gather)
        terms["total"].backward()
        grads = torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in model.parameters()])
        result[name] = {"total": terms["total"].detach(), "contrastive": terms["contrastive"].detach(),
                        "accuracy": terms["contrastive_acc"], "grads": grads.clone()}
    return result


def _contrastive_worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model, batch, ids, options = _setup()
        part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        local_ids = MaskIds(video=ids.video[part], audio=ids.audio[part])

        def gather(x):  # what LightningModule.all_gather(x, sync_grads=True) does under DDP
            return torch.stack(torch.distributed.nn.functional.all_gather(x))

        result = _losses_and_grads(model, batch["video"][part], batch["audio"][part], local_ids, options, gather)
        per_device = pretraining_terms(model(batch["video"][part], batch["audio"][part], ids_keep=local_ids),
                                       options["default"])["contrastive"].detach()
        for values in result.values():
            for key in ("total", "grads"):  # DDP averages gradients (and we average the logged totals)
                dist.all_reduce(values[key])
                values[key] /= WORLD
        if rank == 0:
            torch.save({"result": result, "per_device": per_device}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_global_contrastive_over_two_ranks_equals_single_process(tmp_path: Path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_contrastive_worker, args=(str(tmp_path / "init"), str(out)), nprocs=WORLD, join=True)
    ddp = torch.load(out, weights_only=True)
    model, batch, ids, options = _setup()
    single = _losses_and_grads(model, batch["video"], batch["audio"], ids, options, gather=None)
    for name in options:
        got, want = ddp["result"][name], single[name]
        torch.testing.assert_close(got["contrastive"], want["contrastive"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["accuracy"], want["accuracy"])
        torch.testing.assert_close(got["total"], want["total"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["grads"], want["grads"], rtol=1e-4, atol=1e-7, msg=name)
    assert ddp["result"]["contrastive_only"]["grads"].abs().max() > 1e-3  # the check is not vacuous
    # Per-device grouping (official) sees fewer negatives: a different, smaller loss.
    assert ddp["per_device"] < single["default"]["contrastive"] - 0.1


def test_gather_segments_concatenates_in_rank_order():
    from havic.lit.pretrain import gather_segments

    out_type = dataclasses.make_dataclass("Out", ["audio_segments", "video_segments"])
    out = out_type(torch.zeros(2, 3, 4), torch.ones(2, 3, 4))
    gathered = gather_segments(out, lambda x: torch.stack([x, x + 10]))
    assert gathered.audio_segments.shape == (4, 3, 4)
    assert gathered.audio_segments[2:].eq(10).all() and gathered.video_segments[:2].eq(1).all()


@pytest.mark.slow
def test_ddp_training_run_through_the_cli(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env.pop("HAVIC_RUN_DIR", None)
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), str(PRETRAIN_TINY), f"train.run_dir={tmp_path}",
           "train.trainer.devices=2", "train.contrastive_group=global", "train.trainer.max_epochs=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world size 2 (DDPStrategy)" in proc.stdout
    (run,) = list(tmp_path.iterdir())  # both ranks used one run folder
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # 16 clips / (4 per device x 2 ranks) = 2 steps per epoch
    assert (run / "export" / "last.safetensors").is_file() and (run / "csv" / "metrics.csv").is_file()
