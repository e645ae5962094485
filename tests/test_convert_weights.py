"""``havic convert`` (tools/convert_weights.py): the three conversions from the command line."""
from __future__ import annotations

import json

import torch

from havic import checkpoints as ck
from havic.cli import convert_weights
from havic.config import CONFIG_DIR, from_container

from checkpoint_layouts import official_state_dict, random_state_dict, small, small_official, upstream_layout


def test_tool_init_pretrain_then_detector(tmp_path, capsys):
    cfg = small("official")
    am_layout, mar_layout = upstream_layout(cfg.model, audiomae_decoder_blocks=1)
    audiomae, marlin = random_state_dict(am_layout, 0), random_state_dict(mar_layout, 1)
    torch.save({"model": audiomae}, tmp_path / "audiomae.pth")
    torch.save(marlin, tmp_path / "marlin.pt")
    tiny = str(CONFIG_DIR / "tiny.yaml")
    pt, det = tmp_path / "pt.safetensors", tmp_path / "det.safetensors"
    rc = convert_weights.main(["init-pretrain", "--audiomae", str(tmp_path / "audiomae.pth"), "--marlin",
                               str(tmp_path / "marlin.pt"), "--out", str(pt), tiny, "model.variant=official"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped (AudioMAE's decoder" in out and "left at their current values" in out
    meta = ck.read_safetensors_metadata(pt)
    stored = from_container(json.loads(meta["config"]))
    assert meta["kind"] == "pretrain" and stored.model.variant == "official" and stored.model.dim == 32
    weights = ck.load_state_dict_file(pt)
    assert torch.equal(weights["audio_encoder.patch_embed.weight"], audiomae["patch_embed.proj.weight"].transpose(2, 3))
    assert torch.equal(weights["video_decoder.heads.1.bias"], marlin["decoder.head.bias"])
    assert convert_weights.main(["pretrain-to-detector", "--in", str(pt), "--out", str(det)]) == 0
    assert "using the config stored in" in capsys.readouterr().out
    detector = ck.load_state_dict_file(det)
    assert torch.equal(detector["video_encoder.blocks.1.attn.qkv.weight"], marlin["encoder.blocks.1.attn.qkv.weight"])
    assert "head.layers.0.weight" in detector and "video_decoder.heads.0.weight" not in detector


def test_tool_official_conversion(tmp_path, capsys):
    cfg = small_official()
    sd = official_state_dict(cfg.model, "detector")
    torch.save(sd, tmp_path / "ft.pth")
    out = tmp_path / "ft.safetensors"
    args = ["official", "--in", str(tmp_path / "ft.pth"), "--kind", "detector", "--out", str(out),
            str(CONFIG_DIR / "tiny.yaml"), "model.depth=12", "model.taps=[3,6,9,12]"]
    assert convert_weights.main(args) == 0
    text = capsys.readouterr().out
    assert "ignored 32" in text and "dead self-attention block" in text
    ours, _ = ck.convert_official_havic(sd, "detector", cfg.model)
    got = ck.load_state_dict_file(out)
    assert got.keys() == ours.keys() and all(torch.equal(got[k], ours[k]) for k in ours)
    assert convert_weights.main([*args[:4], "pretrain", *args[5:]]) == 2  # wrong kind: explained, no output
    assert "use kind='detector'" in capsys.readouterr().err
