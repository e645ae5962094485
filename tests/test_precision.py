"""Inference precision: autocast contexts, matmul weights stored in bf16, and preparation checks."""
from __future__ import annotations

import pytest
import torch

from havic.benchmarks import model_inputs
from havic.config import CONFIG_DIR, load_config
from havic.models import build_model
from havic.precision import autocast, cast_matmul_weights, check_precision, prepare_for_inference


def test_autocast_precisions():
    lin = torch.nn.Linear(4, 4)
    with autocast("cpu", "fp32"):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "int8")


def test_check_precision():
    assert check_precision("fp32", "cpu") is None
    assert check_precision("bf16", "cpu") is torch.bfloat16
    assert check_precision("fp16", "cuda") is torch.float16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="expected one of"):
        check_precision("fp8", "cuda")


def test_cast_matmul_weights_gives_bit_identical_autocast_logits_and_keeps_the_keys():
    cfg = load_config([CONFIG_DIR / "tiny.yaml"])
    torch.manual_seed(0)
    model = build_model(cfg.model, "detector").eval()
    video, audio = model_inputs(cfg, 3, torch.device("cpu"))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(video, audio).logit
    keys = list(model.state_dict())
    assert cast_matmul_weights(model, torch.bfloat16) > 0
    assert list(model.state_dict()) == keys
    linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(m.weight.dtype == torch.float32 for m in norms)
    assert model.video_encoder.blocks[0].attn.q_bias.dtype == torch.float32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video, audio).logit
    assert torch.equal(out, ref)  # autocast rounds the same float32 weights, once per pass instead of once
    assert cast_matmul_weights(model, torch.bfloat16) == 0


def test_prepare_for_inference_fp32_changes_nothing_but_the_mode():
    cfg = load_config([CONFIG_DIR / "tiny.yaml"])
    model = build_model(cfg.model, "detector").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert prepare_for_inference(model, "fp32", torch.device("cpu")) is model
    assert not model.training
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
