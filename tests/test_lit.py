"""Lightning layer: schedules, parameter groups, weights loading and export, modules, callbacks, data."""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from havic.config import CHOICES, CONFIG_DIR, ConfigError, load_config, to_container
from havic.data.adapters.fakeavceleb import CROSS_MANIPULATION_HELD_OUT
from havic.lit.base import CONFIG_KEY, enable_activation_checkpointing
from havic.lit.callbacks import BestCheckpoint, ReconstructionPreview, paste_reconstruction, render_preview
from havic.lit.finetune import FinetuneModule, validation_metrics
from havic.lit.pretrain import CONTRASTIVE_GROUPS, PretrainModule
from havic.checkpoints import CheckpointError, export_checkpoint, init_weights, read_weights, save_weights
from havic.lit.runs import MODULES, accumulation, build_module, make_run_dir, requested_world_size, resolve_strategy
from havic.lit.schedules import (
    RESTART_INTERVALS, SCHEDULES, Schedule, StepScheduler, build_optimizer, onecycle_beta1, onecycle_lr, param_groups,
    schedule_from_config, split_parameters, steps_per_epoch, warm_restarts_lr,
)
from havic.data.synthetic_clips import EpochShuffleSampler, SyntheticClips, batch_of
from havic.losses import loss_options, pretraining_losses
from havic.models import build_model

PRETRAIN_TINY = CONFIG_DIR / "pretrain" / "tiny.yaml"
FINETUNE_TINY = CONFIG_DIR / "finetune" / "tiny.yaml"


def _cfg(path=PRETRAIN_TINY, *overrides):
    return load_config([path], list(overrides))


def _clips(cfg, n=4, with_fakes=False):
    m = cfg.model
    return SyntheticClips(n, num_frames=m.video.num_frames, image_size=m.video.image_size,
                          audio_frames=m.audio.num_frames, num_mel_bins=m.audio.num_mel_bins, with_fakes=with_fakes)


# -- schedules ----------------------------------------------------------------------------------


def _torch_trajectory(make_scheduler, lr, steps):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=lr, betas=(0.95, 0.999))
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        opt.step()
        sched.step()
    return out


def test_official_schedule_hand_values():
    # The official OneCycle curve of docs/official-differences.md#pretraining-schedule.
    kw = dict(peak=1.5e-4, total_steps=1000, warmup_steps=100)
    assert onecycle_lr(0, **kw) == pytest.approx(6e-6)  # lr / 25
    assert onecycle_lr(50, **kw) == pytest.approx(7.9e-5, rel=2e-3)  # half-cosine ramp
    assert onecycle_lr(50, **kw) == pytest.approx(1.5e-4 - 0.72e-4 * (1 + math.cos(math.pi * 50 / 99)), rel=1e-12)
    assert onecycle_lr(99, **kw) == pytest.approx(1.5e-4)
    assert onecycle_lr(999, **kw) == pytest.approx(6e-10)  # lr / 25 / 1e4
    assert onecycle_lr(5000, **kw) == pytest.approx(6e-10)  # clamped, no error past the end
    beta = dict(total_steps=1000, warmup_steps=100)
    assert [round(onecycle_beta1(s, **beta), 12) for s in (0, 99, 999)] == [0.95, 0.85, 0.95]
    assert onecycle_beta1(549, **beta) == pytest.approx(0.90)  # middle of the decay phase


def test_official_schedule_equals_torch_onecycle_including_beta1():
    ref = _torch_trajectory(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.5e-4, total_steps=300, pct_start=0.1), 1.5e-4, 300)
    mine = _torch_trajectory(lambda o: StepScheduler(o, Schedule("official", total_steps=300, warmup_steps=30)),
                             1.5e-4, 300)
    np.testing.assert_allclose(np.array(mine), np.array(ref), rtol=1e-12, atol=0)


def test_paper_schedule_is_linear_warmup_then_the_same_cosine():
    s = Schedule("paper", total_steps=1000, warmup_steps=100)
    assert s.lr(0, 1.5e-4) == pytest.approx(6e-6)
    assert s.lr(33, 1.5e-4) == pytest.approx(6e-6 + (1.5e-4 - 6e-6) * 33 / 99)
    official = Schedule("official", total_steps=1000, warmup_steps=100)
    for step in (99, 300, 700, 999):
        assert s.lr(step, 1.5e-4) == pytest.approx(official.lr(step, 1.5e-4))
    assert s.beta1(50) is None


def test_warm_restarts_per_epoch_hand_values():
    # The official fine-tuning curve of docs/official-differences.md#fine-tuning-schedule.
    s = Schedule("warm_restarts", steps_per_epoch=7, restart_period=10, min_lr=1e-9)
    per_epoch = [s.lr(e * 7, 1e-5) for e in range(50)]
    assert per_epoch[0] == pytest.approx(1e-5)
    assert per_epoch[9] == pytest.approx(2.457e-7, rel=1e-3)  # epoch 10 (1-based)
    for epoch in (11, 21, 31, 41):  # 1-based restarts
        assert per_epoch[epoch - 1] == pytest.approx(1e-5)
        assert per_epoch[epoch - 2] < 3e-7
    assert all(s.lr(e * 7 + k, 1e-5) == per_epoch[e] for e in range(50) for k in range(7))  # constant within epochs
    assert s.lr(0, 1e-4) == pytest.approx(1e-4)  # the new-module group, x10


def test_warm_restarts_per_step_and_with_growing_cycles_match_torch():
    ref = _torch_trajectory(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=5, T_mult=2, eta_min=1e-9), 1e-5, 80)
    mine = [warm_restarts_lr(t, base=1e-5, period=5, mult=2) for t in range(80)]
    np.testing.assert_allclose(mine, [lr for lr, _ in ref], rtol=1e-9)
    s = Schedule("warm_restarts", steps_per_epoch=4, restart_period=40, restart_interval="step")
    assert s.lr(39, 1e-5) < s.lr(38, 1e-5) and s.lr(40, 1e-5) == pytest.approx(1e-5)


def test_accumulation_schedule_has_no_overflow():
    # 7 batches, accumulation 3: the optimizer steps after batches 3, 6 and 7 (Lightning); the official
    # OneCycleLR raised past its end (docs/official-differences.md#pretraining-schedule).
    assert steps_per_epoch(7, 3) == 3
    tc = _cfg(PRETRAIN_TINY, "train.schedule=official", "train.trainer.max_epochs=5", "train.warmup_epochs=1").train
    s = schedule_from_config(tc, num_batches=7, accumulate=3)
    assert (s.total_steps, s.steps_per_epoch, s.warmup_steps) == (15, 3, 3.0)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = StepScheduler(opt, s)
    lrs = []
    for _epoch in range(5):
        for batch in range(7):
            if (batch + 1) % 3 == 0 or batch == 6:
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
    assert len(lrs) == s.total_steps
    assert lrs[2] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-3 / 25 / 1e4)
    sched.step()  # one step too many (OneCycleLR raises here)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 25 / 1e4)


def test_step_scheduler_resumes_exactly_from_state():
    def fresh():
        model = torch.nn.Linear(2, 1)
        torch.manual_seed(0)
        opt = build_optimizer(param_groups(model, lr=1e-3, weight_decay=0.05), (0.95, 0.999))
        return model, opt, StepScheduler(opt, Schedule("official", total_steps=40, warmup_steps=8))

    def run(model, opt, sched, n):
        seen = []
        for _ in range(n):
            model(torch.ones(1, 2)).sum().backward()
            seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
            opt.step()
            opt.zero_grad()
            sched.step()
        return seen

    full = run(*fresh(), 30)
    model, opt, sched = fresh()
    head = run(model, opt, sched, 12)
    states = (model.state_dict(), opt.state_dict(), sched.state_dict())
    assert all(isinstance(v, (int, float, list)) for v in states[2].values())  # plain: weights_only loads it
    model2, opt2, sched2 = fresh()
    model2.load_state_dict(states[0])
    opt2.load_state_dict(states[1])
    # The official OneCycleLR resume failed here (docs/official-differences.md#pretraining-schedule).
    sched2.load_state_dict(states[2])  # no KeyError: 'initial_lr'
    assert head + run(model2, opt2, sched2, 18) == full


# -- parameter groups ---------------------------------------------------------------------------


def test_finetune_parameter_groups_names_and_learning_rates():
    cfg = _cfg(FINETUNE_TINY, "train.lr=1e-5", "train.head_lr_scale=10")
    model = build_model(cfg.model, "detector")
    split = split_parameters(model, FinetuneModule.pretrained_prefixes)
    assert list(split) == ["pretrained", "new"]
    names = {g: {n for n, _ in members} for g, members in split.items()}
    all_names = {n for n, _ in model.named_parameters()}
    assert names["pretrained"] | names["new"] == all_names and not names["pretrained"] & names["new"]
    backbone = ("video_encoder", "audio_encoder", "fusion")
    assert names["pretrained"] == {n for n in all_names if n.split(".")[0] in backbone}
    assert {n.split(".")[0] for n in names["new"]} == {"video_pools", "audio_pools", "video_layer_weights",
                                                      "audio_layer_weights", "head", "audio_head", "video_head"}
    groups = param_groups(model, lr=1e-5, weight_decay=0.05, pretrained_prefixes=FinetuneModule.pretrained_prefixes,
                          new_lr_scale=10.0)
    opt = build_optimizer(groups, (0.95, 0.999))
    assert [(g["name"], g["lr"], g["weight_decay"], g["betas"]) for g in opt.param_groups] == [
        ("pretrained", 1e-5, 0.05, (0.95, 0.999)), ("new", pytest.approx(1e-4), 0.05, (0.95, 0.999))]


def test_decay_exclusion_switch():
    model = build_model(_cfg(FINETUNE_TINY).model, "detector")
    prefixes = FinetuneModule.pretrained_prefixes
    assert list(split_parameters(model, prefixes, decay_all=True)) == ["pretrained", "new"]
    split = split_parameters(model, prefixes, decay_all=False)
    no_decay = {n for g in ("pretrained_no_decay", "new_no_decay") for n, _ in split[g]}
    for name in ("video_encoder.cls_tokens", "audio_encoder.pos_embed", "audio_encoder.modality",
                 "video_encoder.blocks.0.norm1.weight", "video_encoder.blocks.0.attn.q_bias",
                 "fusion.video_cross.q.bias", "video_layer_weights.logits", "head.layers.0.bias"):
        assert name in no_decay
    for name in ("video_encoder.blocks.0.mlp.fc1.weight", "video_encoder.patch_embed.weight", "head.layers.0.weight"):
        assert name not in no_decay
    groups = param_groups(model, lr=1e-5, weight_decay=0.05, pretrained_prefixes=prefixes, decay_all=False)
    assert {g["name"]: g["weight_decay"] for g in groups} == {
        "pretrained": 0.05, "pretrained_no_decay": 0.0, "new": 0.05, "new_no_decay": 0.0}
    pre = build_model(_cfg().model, "pretrain")
    names = {n for n, _ in split_parameters(pre, (), decay_all=False)["all_no_decay"]}
    assert {"video_decoder.mask_token", "audio_to_video.mask_token"} <= names


# -- weights: init, export ----------------------------------------------------------------------


def test_finetune_init_loads_backbone_ignores_decoders_and_keeps_heads_fresh():
    cfg = _cfg(FINETUNE_TINY)
    torch.manual_seed(1)
    source = build_model(cfg.model, "pretrain").state_dict()
    torch.manual_seed(2)
    detector = build_model(cfg.model, "detector")
    head_before = detector.head.state_dict()
    report = init_weights(detector, source, "finetune")
    assert report.loaded and all(k.split(".")[0] in ("video_encoder", "audio_encoder", "fusion") for k in report.loaded)
    assert {k.split(".")[0] for k in report.ignored} == {"video_decoder", "audio_decoder", "audio_to_video",
                                                         "video_to_audio"}
    assert {k.split(".")[0] for k in report.missing} == {"video_pools", "audio_pools", "video_layer_weights",
                                                         "audio_layer_weights", "head", "audio_head", "video_head"}
    for key in report.loaded:
        torch.testing.assert_close(detector.state_dict()[key], source[key], rtol=0, atol=0)
    for key, value in detector.head.state_dict().items():
        torch.testing.assert_close(value, head_before[key], rtol=0, atol=0)


def test_init_is_strict_about_keys_and_shapes():
    cfg = _cfg(FINETUNE_TINY)
    source = build_model(cfg.model, "pretrain").state_dict()
    detector = build_model(cfg.model, "detector")
    key = "video_encoder.blocks.0.attn.proj.weight"
    with pytest.raises(CheckpointError, match="missing from the checkpoint.*" + key.replace(".", r"\.")):
        init_weights(detector, {k: v for k, v in source.items() if k != key}, "finetune")
    with pytest.raises(CheckpointError, match="unexpected in the checkpoint.*encoder.extra"):
        init_weights(detector, {**source, "video_encoder.extra": torch.zeros(1)}, "finetune")
    with pytest.raises(CheckpointError, match="shape mismatches.*" + key.replace(".", r"\.")):
        init_weights(detector, {**source, key: torch.zeros(3, 3)}, "finetune")
    pretrainer = build_model(cfg.model, "pretrain")
    partial = {k: v for k, v in source.items() if not k.startswith("video_decoder.")}
    with pytest.raises(CheckpointError, match="video_decoder"):
        init_weights(pretrainer, partial, "pretrain")  # pretraining needs every tensor
    assert init_weights(pretrainer, source, "pretrain").missing == []


def test_init_from_a_weights_file_checks_the_network_structure(tmp_path: Path):
    source_cfg = _cfg(PRETRAIN_TINY, "model.audio_token_order=mel")  # same shapes, other token layout
    path = save_weights(tmp_path / "pre.safetensors", build_model(source_cfg.model, "pretrain").state_dict(),
                        source_cfg, "pretrain")
    with pytest.raises(CheckpointError, match="model.audio_token_order: weights 'mel', run 'time'"):
        build_module(_cfg(FINETUNE_TINY, f"train.init_from={path}"))
    module = build_module(_cfg(FINETUNE_TINY, f"train.init_from={path}", "model.audio_token_order=mel"))
    torch.testing.assert_close(module.model.video_encoder.norm.weight, read_weights(path).state_dict[
        "video_encoder.norm.weight"])


def test_finetuning_without_init_from_needs_allow_scratch(tmp_path: Path):
    from havic.lit.runs import check_train_config

    with pytest.raises(ConfigError, match="train.init_from=.*or train.allow_scratch=true"):
        check_train_config(_cfg(FINETUNE_TINY))
    check_train_config(_cfg(FINETUNE_TINY, "train.allow_scratch=true"))
    check_train_config(_cfg(PRETRAIN_TINY))  # pretraining from random weights is the method itself
    ablation = load_config([FINETUNE_TINY, CONFIG_DIR / "ablations" / "no_pretraining.yaml"])
    assert ablation.train.allow_scratch and ablation.train.init_from is None
    check_train_config(ablation)


def test_export_of_a_checkpoint_round_trips_weights_and_config(tmp_path: Path):
    cfg = _cfg(FINETUNE_TINY, "model.aux_heads=false")
    module = FinetuneModule(cfg)
    ckpt = {"state_dict": module.state_dict(), "epoch": 3, "global_step": 12}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "x.ckpt")
    weights = read_weights(export_checkpoint(tmp_path / "x.ckpt", tmp_path / "x.safetensors"))
    assert weights.kind == "detector" and to_container(weights.config) == to_container(cfg)
    assert weights.metadata["source"] == "x.ckpt" and weights.metadata["global_step"] == "12"
    rebuilt = build_model(weights.config.model, "detector")
    rebuilt.load_state_dict(weights.state_dict, strict=True)
    video, audio = torch.rand(2, 3, 4, 32, 32), torch.randn(2, 64, 32)
    module.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(video, audio).logit, module.model(video, audio).logit, rtol=0, atol=0)


def test_checkpoint_hook_stores_the_resolved_config():
    cfg = _cfg(PRETRAIN_TINY)
    module = PretrainModule(to_container(cfg))  # the plain-dict form is accepted too
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    assert ckpt[CONFIG_KEY] == to_container(cfg)


# -- modules ------------------------------------------------------------------------------------


def test_validation_masks_are_fixed_per_clip():
    cfg = _cfg(PRETRAIN_TINY)
    module = PretrainModule(cfg)
    clips = _clips(cfg, 4)
    both = module.validation_masks(batch_of(clips, [3, 1]))
    one, three = (module.validation_masks(batch_of(clips, [i])) for i in (1, 3))
    torch.testing.assert_close(both.video, torch.cat([three.video, one.video]))
    torch.testing.assert_close(both.audio, torch.cat([three.audio, one.audio]))
    assert not torch.equal(one.video, three.video)
    again = PretrainModule(_cfg(PRETRAIN_TINY, "train.val_mask_seed=5")).validation_masks(batch_of(clips, [1]))
    assert not torch.equal(again.video, one.video)


def test_activation_checkpointing_keeps_names_loss_and_gradients():
    cfg = _cfg(PRETRAIN_TINY, "model.video_drop_path=0.0")
    torch.manual_seed(3)
    plain = build_model(cfg.model, "pretrain")
    ckpt = build_model(cfg.model, "pretrain")
    ckpt.load_state_dict(plain.state_dict())
    assert enable_activation_checkpointing(ckpt) == 2 * cfg.model.depth
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    batch = batch_of(_clips(cfg, 2), [0, 1])
    ids = plain.draw_masks(2, torch.device("cpu"), torch.Generator().manual_seed(0))
    losses = []
    for model in (plain, ckpt):
        terms = pretraining_losses(model(batch["video"], batch["audio"], ids_keep=ids), **loss_options(cfg.loss))
        terms["total"].backward()
        losses.append(terms["total"].detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_reconstruction_preview_renders_a_png(tmp_path: Path):
    cfg = _cfg(PRETRAIN_TINY)
    module = PretrainModule(cfg)
    module.train()
    tensors = module.reconstruct(batch_of(_clips(cfg, 2), [0, 1]), num=1)
    assert module.training
    assert tensors["video_recon"].shape == (1, 3, 4, 32, 32) and tensors["audio_recon"].shape == (1, 64, 32)
    hidden_fraction = tensors["video_masked"].isnan().float().mean().item()
    assert hidden_fraction == pytest.approx(1 - 1 / 16)  # tiny grid: 1 of 16 positions kept at 0.9
    path = render_preview(tensors, tmp_path / "p.png", num_frames=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    filled = paste_reconstruction(tensors["video_masked"], tensors["video_recon"])
    hidden = tensors["video_masked"].isnan()
    assert not filled.isnan().any()
    assert torch.equal(filled[hidden], tensors["video_recon"][hidden])
    assert torch.equal(filled[~hidden], tensors["video_masked"][~hidden])


def test_preview_callback_writes_once_per_step_and_feeds_image_loggers(tmp_path: Path):
    cfg = _cfg(PRETRAIN_TINY)
    module = PretrainModule(cfg)
    sent = []
    image_logger = SimpleNamespace(log_image=lambda key, images, step: sent.append((key, images, step)))
    trainer = SimpleNamespace(global_step=3, is_global_zero=True, loggers=[image_logger, object()])
    cb = ReconstructionPreview(tmp_path, every_n_steps=3, num_frames=2)
    batch = batch_of(_clips(cfg, 2), [0, 1])
    for _ in range(2):  # two micro-batches of one accumulated step
        cb.on_train_batch_end(trainer, module, None, batch, 0)
    trainer.global_step = 4
    cb.on_train_batch_end(trainer, module, None, batch, 1)
    assert [p.name for p in cb.written] == ["step_0000003.png"]
    assert sent == [("preview/reconstruction", [str(tmp_path / "step_0000003.png")], 3)]


def test_finetune_loss_weights_and_optional_auxiliary_heads():
    batch = batch_of(_clips(_cfg(FINETUNE_TINY), 4, with_fakes=True), [0, 1, 2, 3])
    torch.manual_seed(0)
    module = FinetuneModule(_cfg(FINETUNE_TINY, "loss.audio_head_weight=0.5", "loss.video_head_weight=2.0"))
    module.eval()
    _, terms = module._scores(batch)
    expected = terms["overall"] + 0.5 * terms["audio"] + 2.0 * terms["video"]
    assert float(terms["total"]) == pytest.approx(float(expected))
    _, main_only = FinetuneModule(_cfg(FINETUNE_TINY, "model.aux_heads=false"))._scores(batch)
    assert set(main_only) == {"overall", "total"}
    silent = {**batch, "has_audio": torch.zeros(4, dtype=torch.bool)}
    out, _ = module._scores(silent)
    assert not out.has_audio  # no audio in the batch: the video head scores it (paper D.2)


def test_validation_metrics_hand_computed():
    m = validation_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert m == pytest.approx({"acc": 0.75, "ap": 0.5 * 1 + 0.5 * 2 / 3, "auc": 0.75})
    single = validation_metrics(np.array([0.2, 0.9]), np.array([1, 1]))
    assert single["acc"] == 0.5 and math.isnan(single["auc"]) and math.isnan(single["ap"])


def test_best_checkpoint_prefers_auc_then_acc(tmp_path: Path):
    cb = BestCheckpoint(tmp_path, [("val/auc", "max"), ("val/acc", "max")])
    saved = []
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={},
                              save_checkpoint=lambda path, weights_only=False: saved.append(trainer.current_epoch))
    for epoch, (auc, acc) in enumerate([(0.8, 0.7), (0.9, 0.6), (0.9, 0.65), (0.9, 0.65), (float("nan"), 1.0),
                                        (0.85, 0.99)]):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val/auc": auc, "val/acc": acc}
        cb.on_validation_end(trainer, None)
    assert saved == [0, 1, 2] and cb.best_metrics == {"val/auc": 0.9, "val/acc": 0.65}
    restored = BestCheckpoint(tmp_path, cb.keys)
    restored.load_state_dict(cb.state_dict())
    assert restored.best == cb.best and restored.best_epoch == 2
    low = BestCheckpoint(tmp_path, [("val/loss", "min")])
    assert low.score({"val/loss": 1.0}) > low.score({"val/loss": 2.0})


# -- runs: sizes, folders, configs --------------------------------------------------------------


def test_accumulation_from_the_global_batch():
    assert accumulation(112, 28, 4) == 1
    assert accumulation(112, 28, 1) == 4
    assert accumulation(None, 28, 3) == 1
    with pytest.raises(ConfigError, match="112 is not a multiple.*32 x 1"):
        accumulation(112, 32, 1)
    cfg = _cfg(PRETRAIN_TINY, "train.trainer.devices=[0,1]", "train.trainer.num_nodes=2")
    assert requested_world_size(cfg) == 4
    assert resolve_strategy(cfg, 4) == "ddp"
    assert resolve_strategy(_cfg(PRETRAIN_TINY, "loss.cross_weight=0"), 2) == "ddp_find_unused_parameters_true"
    assert resolve_strategy(cfg, 1) == "auto"


def test_run_dir_name_and_shared_folder(tmp_path: Path, monkeypatch):
    for var in ("HAVIC_RUN_DIR", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    cfg = _cfg(PRETRAIN_TINY, f"train.run_dir={tmp_path}")
    path = make_run_dir(cfg, now=datetime(2026, 1, 2, 3, 4, 5))
    assert path == tmp_path / "tiny-pretrain-20260102-030405" and path.is_dir()
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert make_run_dir(cfg).name == "tiny-pretrain-job77"
    monkeypatch.setenv("HAVIC_RUN_DIR", str(tmp_path / "shared"))
    assert make_run_dir(cfg) == tmp_path / "shared"


def test_training_choices_come_from_the_config_and_are_checked_when_it_loads():
    assert tuple(MODULES) == CHOICES["train.stage"]  # one module per stage
    assert (SCHEDULES, RESTART_INTERVALS, CONTRASTIVE_GROUPS) == (
        CHOICES["train.schedule"], CHOICES["train.restart_interval"], CHOICES["train.contrastive_group"])
    for key in ("train.stage", "train.schedule", "train.restart_interval", "train.contrastive_group"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "='bogus'"):
            _cfg(PRETRAIN_TINY, f"{key}=bogus")


def test_all_training_configs_load_and_cross_manip_folds_match_the_manifest_tool():
    for path in sorted((CONFIG_DIR / "pretrain").glob("*.yaml")) + sorted((CONFIG_DIR / "finetune").glob("*.yaml")):
        cfg = load_config([path])
        assert cfg.train.stage == path.parent.name
    for path in sorted((CONFIG_DIR / "ablations").glob("*.yaml")):
        content = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        assert len(content) == 1, path
        load_config([FINETUNE_TINY, path])
    folds = {load_config([p]).data.manifest for p in (CONFIG_DIR / "finetune").glob("fakeavceleb_xm_*.yaml")}
    assert folds == {f"manifests/fakeavceleb_xm.{category}.csv" for category in CROSS_MANIPULATION_HELD_OUT}
    lrs2 = load_config([CONFIG_DIR / "pretrain" / "lrs2.yaml"])
    assert (lrs2.train.global_batch_size, lrs2.train.trainer.max_epochs, lrs2.train.warmup_epochs, lrs2.train.lr) == (
        112, 200, 20, 1.5e-4)


# -- synthetic data -----------------------------------------------------------------------------


def test_synthetic_clips_are_deterministic_labelled_and_sized():
    cfg = _cfg(FINETUNE_TINY)
    clips = _clips(cfg, 8, with_fakes=True)
    a, b = clips[5], _clips(cfg, 8, with_fakes=True)[5]
    torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
    assert a["video"].shape == (3, 4, 32, 32) and a["audio"].shape == (64, 32)
    assert 0 <= a["video"].min() and a["video"].max() <= 1
    labels = [(clips[i]["audio_label"].item(), clips[i]["video_label"].item(), clips[i]["label"].item())
              for i in range(4)]
    assert labels == [(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
    sampler = EpochShuffleSampler(10, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(10)) and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
