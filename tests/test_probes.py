"""The SSR-DFD probe: pooling bounds, the loss identity, padded batches = batch size 1, released probes, training."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from havic.analysis.pooling import pad_sequences, pool
from havic.analysis.probes import FrameProbe, fake_probability, frame_probability, probe_loss
from havic.analysis.ssr_checkpoint import load_probe, load_ssr_probe, save_probe
from havic.analysis.training import ProbeConfig, SequenceSet, score_probe, train_probe
from havic.checkpoints.files import CheckpointError
from havic.metrics import binary_metrics


def test_lse_lies_between_max_and_max_plus_log_t():
    logits = torch.randn(6, 9) * 3
    lse, mx = pool(logits, how="lse"), logits.max(dim=1).values
    assert torch.all(lse >= mx) and torch.all(lse <= mx + math.log(9) + 1e-6)
    # equal logits reach the upper bound: c + log T (the length term the paper keeps)
    assert torch.allclose(pool(torch.full((1, 9), 0.3)), torch.tensor([0.3 + math.log(9)]))
    assert torch.allclose(pool(torch.full((1, 9), 0.3), how="lme"), torch.tensor([0.3]))


def test_masked_pooling_ignores_padding():
    logits = torch.tensor([[1.0, 2.0, 50.0], [0.5, -1.0, 3.0]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.allclose(pool(logits, valid, "max"), torch.tensor([2.0, 3.0]))
    assert torch.allclose(pool(logits, valid, "mean"), torch.tensor([1.5, 2.5 / 3]))
    assert torch.allclose(pool(logits, valid, "lse")[0], torch.tensor(math.log(math.e + math.e ** 2)))


def test_two_class_cross_entropy_on_minus_s_s_is_bce_on_2s():
    s, y = torch.randn(32) * 4, torch.randint(0, 2, (32,))
    ce = F.cross_entropy(torch.stack([-s, s], dim=1), y)
    assert torch.allclose(probe_loss(s, y), ce, atol=1e-6)
    assert torch.allclose(fake_probability(s), torch.softmax(torch.stack([-s, s], 1), 1)[:, 1], atol=1e-6)
    assert frame_probability(torch.zeros(1)).item() == 0.5


@pytest.mark.parametrize("head, pooling", [("linear", "lse"), ("linear", "mean"), ("linear", "max"),
                                           ("linear", "lme"), ("transformer", "lse")])
def test_padded_batches_give_what_batch_size_one_gives(head, pooling):
    seqs = [torch.randn(t, 12) for t in (5, 1, 9, 3)]
    labels = torch.tensor([1, 0, 1, 0])
    probe = FrameProbe(12, head, pooling, **({"d_model": 16, "ffn_dim": 32} if head == "transformer" else {})).eval()
    x, valid = pad_sequences(seqs)
    out = probe(x, valid)
    batched_loss = probe_loss(out.score, labels, reduction="sum")
    batched_grads = torch.autograd.grad(batched_loss, list(probe.parameters()))
    singles, single_loss, single_grads = [], 0.0, [torch.zeros_like(p) for p in probe.parameters()]
    for s, y in zip(seqs, labels):
        o = probe(s[None])
        loss = probe_loss(o.score, y[None], reduction="sum")
        singles.append(o.score)
        single_loss = single_loss + loss
        single_grads = [a + b for a, b in zip(single_grads, torch.autograd.grad(loss, list(probe.parameters())))]
        assert torch.allclose(out.frame_logits[len(singles) - 1, : len(s)], o.frame_logits[0], atol=1e-5)
    assert torch.allclose(out.score, torch.cat(singles), atol=1e-5)
    assert torch.allclose(batched_loss, single_loss, atol=1e-5)
    for a, b in zip(batched_grads, single_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_released_ssr_probe_loads_and_scores_like_a_hand_computation(assets_dir, tmp_path):
    loaded = load_ssr_probe(assets_dir / "ssr-dfd" / "wav2vec2_probe_epoch48.ckpt")
    assert (loaded.input_type, loaded.feats_dim) == ("audio", 3840)
    sd = torch.load(assets_dir / "ssr-dfd" / "wav2vec2_probe_epoch48.ckpt", weights_only=True)["state_dict"]
    w, b = sd["head.weight"][0].double(), float(sd["head.bias"])
    assert b == pytest.approx(-1.24, abs=0.01)  # the negative bias absorbing log T
    feats = torch.randn(7, 3840) * 5
    hand = math.log(sum(math.exp(float(w @ (f.double() / f.double().norm())) + b) for f in feats))
    [scored] = score_probe(loaded.probe, {"v": feats})
    assert scored.score == pytest.approx(hand, abs=1e-4)
    # our export keeps their tensors and settings and reads back to the same scores
    save_probe(tmp_path / "p.safetensors", loaded.probe, loaded.input_type, feature="wav2vec2/last")
    again = load_probe(tmp_path / "p.safetensors")
    assert again.settings == {"feature": "wav2vec2/last"} and again.input_type == "audio"
    assert score_probe(again.probe, {"v": feats})[0].score == pytest.approx(scored.score, abs=1e-6)


def test_ssr_import_is_strict(tmp_path):
    bad = {"state_dict": {"head.weight": torch.zeros(1, 4), "head.bias": torch.zeros(1), "extra": torch.zeros(1)},
           "hyper_parameters": {"config": {"model_hparams": {"input_type": "video", "feats_dim": 4}}}}
    torch.save(bad, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match="extra"):
        load_ssr_probe(tmp_path / "extra.ckpt")
    del bad["state_dict"]["extra"]
    bad["hyper_parameters"]["config"]["model_hparams"]["feats_dim"] = 5
    torch.save(bad, tmp_path / "dim.ckpt")
    with pytest.raises(CheckpointError, match="feats_dim 5"):
        load_ssr_probe(tmp_path / "dim.ckpt")


def _synthetic(n: int, seed: int) -> tuple[dict, dict]:
    """Videos of 4-20 frames; a fake has a few frames pushed along one direction (a local edit)."""
    g = torch.Generator().manual_seed(seed)
    feats, labels = {}, {}
    for i in range(n):
        t = int(torch.randint(4, 21, (1,), generator=g))
        x = torch.randn(t, 8, generator=g)
        y = i % 2
        if y:
            x[:3, 0] += 8.0
        feats[f"v{seed}-{i}"], labels[f"v{seed}-{i}"] = x, y
    return feats, labels


def test_probe_trains_to_auc_one_on_separable_features(tmp_path):
    (ft, lt), (fv, lv), (fs, ls) = _synthetic(40, 1), _synthetic(12, 2), _synthetic(30, 3)
    probe, info = train_probe(SequenceSet(ft, lt), SequenceSet(fv, lv),
                              ProbeConfig(lr=5e-2, max_epochs=30, patience=5, batch_size=4), out_dir=tmp_path)
    scored = score_probe(probe, fs, ls)
    assert binary_metrics([v.label for v in scored], [v.score for v in scored])["auc"] == 1.0
    assert 0 <= info["best_epoch"] < 30 and info["best_val_loss"] < 0.69


def test_non_finite_rows_are_dropped_and_empty_videos_skipped():
    probe = FrameProbe(4).eval()
    x = torch.randn(5, 4)
    holed = torch.cat([x[:2], torch.full((2, 4), float("nan")), x[2:]])
    scored = score_probe(probe, {"clean": x, "holed": holed, "empty": torch.full((3, 4), float("nan"))})
    assert [v.video_id for v in scored] == ["clean", "holed"]
    assert scored[1].score == pytest.approx(scored[0].score, abs=1e-6) and len(scored[1].frame_logits) == 5
