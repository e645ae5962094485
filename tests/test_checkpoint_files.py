"""Checkpoint files: reading state dicts safely, safetensors, and this project's weights files."""
from __future__ import annotations

import argparse

import pytest
import torch

from havic import checkpoints as ck
from havic.config import CONFIG_DIR, load_config
from havic.models import build_model


class Opaque:
    """A non-tensor object that a weights-only load must refuse to unpickle."""

    def __init__(self) -> None:
        self.value = 3


def tiny_sd():
    return {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}},
    lambda sd: {"state_dict": sd, "global_step": 7},
    lambda sd: {"model_state_dict": sd},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
])
def test_load_state_dict_file_unwraps(tmp_path, wrap):
    sd = tiny_sd()
    torch.save(wrap(sd), tmp_path / "c.pth")
    got = ck.load_state_dict_file(tmp_path / "c.pth")
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_safetensors_round_trip_with_metadata(tmp_path):
    sd = tiny_sd()
    ck.save_safetensors(tmp_path / "w.safetensors", sd, {"config": '{"seed": 1}'})
    got = ck.load_state_dict_file(tmp_path / "w.safetensors")
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert ck.read_safetensors_metadata(tmp_path / "w.safetensors")["config"] == '{"seed": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left


@pytest.mark.parametrize("payload", [Opaque(), argparse.Namespace(lr=0.1)])
def test_pickled_objects_are_refused(tmp_path, payload):
    torch.save({"model": tiny_sd(), "args": payload}, tmp_path / "c.pth")
    with pytest.raises(ck.CheckpointError, match=r"c\.pth: refused"):
        ck.load_state_dict_file(tmp_path / "c.pth")


def test_unusable_files_are_explained(tmp_path):
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_state_dict_file(tmp_path / "absent.pth")
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(ck.CheckpointError, match=r"t\.pth: expected a dict of tensors, found a Tensor"):
        ck.load_state_dict_file(tmp_path / "t.pth")
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "o.pth")
    with pytest.raises(ck.CheckpointError, match=r"o\.pth: no state dict found.*epoch \(int\)"):
        ck.load_state_dict_file(tmp_path / "o.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match=r"junk\.pth: not a readable torch checkpoint"):
        ck.load_state_dict_file(tmp_path / "junk.pth")


def test_weights_file_round_trip_carries_config_and_kind(tmp_path):
    cfg = load_config([CONFIG_DIR / "tiny.yaml"], ["model.variant=official"])
    model = build_model(cfg.model, "detector")
    path = ck.save_weights(tmp_path / "w.safetensors", model.state_dict(), cfg, "detector", note="x")
    w = ck.read_weights(path)
    assert w.kind == "detector" and w.config.model.variant == "official" and w.metadata["note"] == "x"
    assert w.state_dict.keys() == model.state_dict().keys()
    assert all(torch.equal(w.state_dict[k], v) for k, v in model.state_dict().items())


def test_read_weights_rejects_foreign_files_by_name(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"classifier.output_layer.weight": torch.zeros(1, 768)}, plain)
    with pytest.raises(ck.CheckpointError, match=r"plain\.pth.*convert_weights.py official"):
        ck.read_weights(plain)
    bare = tmp_path / "bare.safetensors"
    ck.save_safetensors(bare, {"a": torch.zeros(1)}, {})
    with pytest.raises(ck.CheckpointError, match="without havic metadata"):
        ck.read_weights(bare)
    with pytest.raises(ck.CheckpointError, match="no such"):
        ck.read_weights(tmp_path / "missing.safetensors")


def test_stored_config_of_weights_files(tmp_path):
    cfg = load_config([CONFIG_DIR / "tiny.yaml"], ["model.variant=official"])
    path = ck.save_weights(tmp_path / "w.safetensors", tiny_sd(), cfg, "pretrain")
    assert ck.stored_config(path).model.variant == "official"
    ck.save_safetensors(tmp_path / "bare.safetensors", tiny_sd(), {})
    torch.save(tiny_sd(), tmp_path / "plain.pth")
    for other in ("bare.safetensors", "plain.pth", "missing.safetensors"):
        assert ck.stored_config(tmp_path / other) is None
