"""Loss functions against hand-computed values, brute-force references and invariants."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from havic.losses import (
    ContrastiveResult,
    detection_bce,
    reconstruction_loss,
    segment_contrastive_loss,
    semantic_mse,
    soft_negative_weights,
)


# ---------------------------------------------------------------- references (test-only loops)
def brute_force_contrastive(audio, video, tau, soft=True):
    """Paper Eq. 2-3 written out with explicit loops over rows and columns, in Python floats."""
    b, s, _ = audio.shape
    a = [x / x.norm() for x in audio.double().reshape(b * s, -1)]
    v = [x / x.norm() for x in video.double().reshape(b * s, -1)]
    n = b * s
    sim = [[float(a[r] @ v[c]) / tau for c in range(n)] for r in range(n)]

    def weight(r, c):
        i, t, j, u = r // s, r % s, c // s, c % s
        if soft and i == j and t != u:
            return 1 - 2 / (1 + math.exp(abs(t - u)))  # 1 - 2 * sigmoid(-|t - u|)
        return 1.0

    total = 0.0
    for r in range(n):
        den_a2v = sum(weight(r, c) * math.exp(sim[r][c]) for c in range(n))
        den_v2a = sum(weight(r, c) * math.exp(sim[c][r]) for c in range(n))
        total += -math.log(math.exp(sim[r][r]) / den_a2v) - math.log(math.exp(sim[r][r]) / den_v2a)
    return total / (2 * n)


def official_contrastive(audio, video, tau, soft=True):
    """The official formulation: plain exp and -log(p + 1e-8). Returns (loss, p of each row)."""
    b, s, d = audio.shape
    a = F.normalize(audio.reshape(b * s, d), dim=-1)
    v = F.normalize(video.reshape(b * s, d), dim=-1)
    m = a @ v.T / tau
    w = soft_negative_weights(s, b, soft, dtype=m.dtype)
    losses, probs = [], []
    for mat in (m, m.T):
        e = torch.exp(mat)
        p = e.diagonal() / (w * e).sum(dim=1)
        losses.append(-torch.log(p + 1e-8).mean())
        probs.append(p)
    return (losses[0] + losses[1]) / 2, torch.cat(probs)


# ---------------------------------------------------------------- soft negative weights
def test_weight_table_matches_spec():
    w = soft_negative_weights(8, 1, dtype=torch.float64)
    expected = [0.4621, 0.7616, 0.9051, 0.9640, 0.9866, 0.9951, 0.9982]
    for dt, value in enumerate(expected, start=1):
        assert round(float(w[0, dt]), 4) == value
        assert round(float(w[7 - dt, 7]), 4) == value
    assert torch.all(w.diagonal() == 1)


def test_weights_symmetric_and_one_across_samples():
    b, s = 3, 4
    w = soft_negative_weights(s, b)
    assert w.shape == (b * s, b * s)
    assert torch.equal(w, w.T)
    for i in range(b):
        for j in range(b):
            block = w[i * s:(i + 1) * s, j * s:(j + 1) * s]
            if i != j:
                assert torch.all(block == 1)  # other samples are full negatives, same segment included
            else:
                assert torch.allclose(block, soft_negative_weights(s, 1))
    assert torch.all(soft_negative_weights(s, b, soft=False) == 1)
    assert torch.all(soft_negative_weights(1, 5) == 1)  # S=1: no same-sample negatives


def test_weights_reject_bad_sizes():
    with pytest.raises(ValueError, match="n_segments"):
        soft_negative_weights(0, 2)


# ---------------------------------------------------------------- contrastive loss
@pytest.mark.parametrize(
    "b,s,d,soft", [(2, 8, 16, True), (3, 4, 8, True), (4, 1, 8, True), (2, 3, 5, False), (1, 5, 6, True)]
)
def test_contrastive_matches_brute_force(b, s, d, soft):
    audio = torch.randn(b, s, d, dtype=torch.float64)
    video = torch.randn(b, s, d, dtype=torch.float64) + 0.5 * audio
    out = segment_contrastive_loss(audio, video, temperature=0.07, soft_negatives=soft)
    assert isinstance(out, ContrastiveResult) and out.loss.dim() == 0
    assert out.loss.item() == pytest.approx(brute_force_contrastive(audio, video, 0.07, soft), rel=1e-10)


def test_soft_weights_change_the_loss():
    audio, video = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    soft = segment_contrastive_loss(audio, video).loss
    hard = segment_contrastive_loss(audio, video, soft_negatives=False).loss
    assert soft < hard  # weights < 1 only shrink the denominator


def test_hard_and_clip_level_equal_cross_entropy():
    audio, video = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    for s_audio, s_video, soft in ((audio, video, False), (audio[:, :1], video[:, :1], True)):
        a = F.normalize(s_audio.flatten(0, 1), dim=-1)
        v = F.normalize(s_video.flatten(0, 1), dim=-1)
        logits = a @ v.T / 0.07
        target = torch.arange(len(a))
        expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        got = segment_contrastive_loss(s_audio, s_video, soft_negatives=soft).loss
        assert torch.allclose(got, expected, atol=1e-6)


def test_official_epsilon_variant_agrees():
    # Realistic regime (correlated features, full width): the +1e-8 changes the value by < 1e-6.
    audio = torch.randn(4, 8, 768, dtype=torch.float64)
    video = audio + torch.randn(4, 8, 768, dtype=torch.float64)
    official, _ = official_contrastive(audio, video, 0.07)
    assert abs(official.item() - segment_contrastive_loss(audio, video).loss.item()) < 1e-6
    # In general the gap is exactly mean log(1 + 1e-8 / p) <= mean 1e-8 / p (positive p can be tiny).
    audio, video = torch.randn(3, 4, 16, dtype=torch.float64), torch.randn(3, 4, 16, dtype=torch.float64)
    official, p = official_contrastive(audio, video, 0.07)
    ours = segment_contrastive_loss(audio, video).loss
    gap = (ours - official).item()
    assert gap == pytest.approx(torch.log1p(1e-8 / p).mean().item(), rel=1e-6)
    assert 0 < gap <= (1e-8 / p).mean().item()


def test_perfect_alignment_accuracy_one_low_loss():
    # B*S = 16 random directions in 256-D are nearly orthogonal: every positive dominates its row.
    audio = torch.randn(2, 8, 256)
    out = segment_contrastive_loss(audio, audio.clone())
    assert out.accuracy.item() == 1.0
    assert out.loss.item() < 1e-3
    assert not out.accuracy.requires_grad


def test_accuracy_counts_misaligned_rows():
    # Video segments are the audio segments shifted by one row: no positive is the argmax.
    audio = torch.randn(2, 4, 256)
    video = audio.flatten(0, 1).roll(1, dims=0).reshape(2, 4, 256)
    out = segment_contrastive_loss(audio, video)
    assert out.accuracy.item() == 0.0
    assert out.loss.item() > 5.0


def test_accuracy_averages_both_directions():
    # Cosines [[0.49, 0.10], [0.87, 0.99]]: both audio rows pick their positive (a->v 1.0), but
    # video 0 is closer to audio 1 (v->a 0.5), so the mean is 0.75.
    audio = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    video = torch.tensor([[[0.5, 0.9], [0.1, 1.0]]])
    assert segment_contrastive_loss(audio, video).accuracy.item() == pytest.approx(0.75)
    assert segment_contrastive_loss(video, audio).accuracy.item() == pytest.approx(0.75)


def test_contrastive_gradcheck_float64():
    audio = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    video = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, v: segment_contrastive_loss(a, v, temperature=0.5).loss, (audio, video)
    )


def test_large_logits_stable_where_official_overflows():
    # tau = 0.01: |M| up to 100 and exp(100) overflows float32 (max ~ exp(88.7)); the official
    # form gives inf / inf = nan, the log-sum-exp form stays finite. (At tau = 0.07, exp <= 1.6e6
    # is safe in float32, so no claim is made there.)
    audio = torch.randn(2, 4, 32)
    official, _ = official_contrastive(audio, audio.clone(), 0.01)
    assert not torch.isfinite(official)
    out = segment_contrastive_loss(audio, audio.clone(), temperature=0.01)
    assert torch.isfinite(out.loss) and out.loss.item() >= 0
    video = torch.randn(2, 4, 32)
    out = segment_contrastive_loss(audio, video, temperature=0.01)
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(
        brute_force_contrastive(audio, video, 0.01), rel=1e-5
    )


def test_similarity_in_float32_under_autocast():
    audio, video = torch.randn(2, 8, 64).bfloat16(), torch.randn(2, 8, 64).bfloat16()
    reference = segment_contrastive_loss(audio.double(), video.double()).loss  # ~4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = segment_contrastive_loss(audio, video)
    assert out.loss.dtype == torch.float32
    # Measured: a bf16 similarity matmul is off by 2e-4 to 2e-3 here; float32 by < 1e-6.
    assert abs(out.loss.item() - reference.item()) < 1e-5


def test_contrastive_rejects_bad_shapes():
    with pytest.raises(ValueError, match="audio_seg and video_seg"):
        segment_contrastive_loss(torch.randn(2, 4, 8), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="temperature"):
        segment_contrastive_loss(torch.randn(2, 4, 8), torch.randn(2, 4, 8), temperature=0.0)


# ---------------------------------------------------------------- reconstruction loss
@pytest.fixture
def rec_case():
    """B=2, L=3, P=2 with zero target: squared error per token is 1, 4, 2 | 0, 9, 1 (total 17)."""
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], [[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]]])
    target = torch.zeros(2, 3, 2)
    mask = torch.tensor([[True, False, True], [False, True, False]])  # masked errors 1 + 2 + 9 = 12
    return pred, target, mask


def test_reconstruction_hand_computed(rec_case):
    pred, target, mask = rec_case
    assert reconstruction_loss(pred, target, None, tokens="all").item() == pytest.approx(17 / 12)
    assert reconstruction_loss(pred, target, mask, tokens="all").item() == pytest.approx(17 / 12)
    assert reconstruction_loss(pred, target, mask, tokens="masked").item() == pytest.approx(12 / 6)
    assert reconstruction_loss([pred], target, mask).item() == pytest.approx(2.0)  # default "masked"


def test_reconstruction_averages_layers(rec_case):
    pred, target, mask = rec_case
    layers = [pred, 2 * pred]  # second layer: errors x4 -> 68/12 (all), 8.0 (masked)
    assert reconstruction_loss(layers, target, mask, tokens="all").item() == pytest.approx((17 + 68) / 24)
    assert reconstruction_loss(layers, target, mask, tokens="masked").item() == pytest.approx(5.0)


def test_reconstruction_masked_equals_per_sample_mean_with_equal_counts():
    pred, target = torch.randn(3, 10, 4), torch.randn(3, 10, 4)
    mask = torch.rand(3, 10).argsort(dim=1) < 6  # 6 masked tokens per sample
    per_sample = torch.stack([((pred[i] - target[i])[mask[i]] ** 2).mean() for i in range(3)]).mean()
    assert torch.allclose(reconstruction_loss(pred, target, mask), per_sample, atol=1e-6)


def test_reconstruction_ignores_visible_nan(rec_case):
    pred, target, mask = rec_case
    pred = pred.clone()
    pred[0, 1] = float("nan")  # visible token
    assert reconstruction_loss(pred, target, mask).item() == pytest.approx(2.0)


def test_reconstruction_upcasts_half(rec_case):
    pred, target, mask = rec_case
    out = reconstruction_loss(pred.half(), target.half(), mask)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(2.0)


def test_reconstruction_errors(rec_case):
    pred, target, mask = rec_case
    with pytest.raises(ValueError, match=r"preds\[1\] has shape \(2, 3, 3\)"):
        reconstruction_loss([pred, torch.zeros(2, 3, 3)], target, mask)
    with pytest.raises(ValueError, match="mask has shape"):
        reconstruction_loss(pred, target, mask[:, :2])
    with pytest.raises(ValueError, match="needs a mask"):
        reconstruction_loss(pred, target, None, tokens="masked")
    with pytest.raises(ValueError, match="no masked"):
        reconstruction_loss(pred, target, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="tokens must be"):
        reconstruction_loss(pred, target, mask, tokens="visible")
    with pytest.raises(ValueError, match="empty"):
        reconstruction_loss([], target, mask)
    with pytest.raises(TypeError, match="bool"):
        reconstruction_loss(pred, target, mask.float())


# ---------------------------------------------------------------- semantic MSE
def test_semantic_mse_matches_mse_loss():
    pred, target = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    assert torch.allclose(semantic_mse(pred, target), F.mse_loss(pred, target))
    out = semantic_mse(pred.bfloat16(), target.bfloat16())
    assert out.dtype == torch.float32
    assert torch.allclose(out, F.mse_loss(pred.bfloat16().float(), target.bfloat16().float()))


def test_semantic_mse_keeps_graph():
    pred = torch.randn(4, 3, requires_grad=True)
    semantic_mse(pred, torch.zeros(4, 3)).backward()
    assert torch.allclose(pred.grad, 2 * pred.detach() / 12)


@pytest.mark.parametrize(
    "bad_pred,bad_target,kind",
    [(float("nan"), 0.0, "nan"), (0.0, float("inf"), "inf"), (float("inf"), float("inf"), "nan")],
)
def test_semantic_mse_raises_on_non_finite(bad_pred, bad_target, kind):
    pred, target = torch.randn(2, 3), torch.randn(2, 3)
    pred[0, 0], target[0, 0] = bad_pred, bad_target
    with pytest.raises(FloatingPointError, match=f"sem_a2v: loss is {kind}"):
        semantic_mse(pred, target, name="sem_a2v")


def test_semantic_mse_raises_on_overflow_of_finite_inputs():
    pred = torch.full((2, 3), 1e20)  # finite, but its square overflows float32
    with pytest.raises(FloatingPointError, match="overflow of finite inputs"):
        semantic_mse(pred, torch.zeros(2, 3))


def test_semantic_mse_shape_errors():
    with pytest.raises(ValueError, match=r"expected the target shape \(2, 4\)"):
        semantic_mse(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="empty"):
        semantic_mse(torch.zeros(0, 3), torch.zeros(0, 3))


# ---------------------------------------------------------------- detection BCE
def _bce(logit: float, label: int) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_detection_bce_hand_computed():
    logits = {
        "overall": torch.tensor([2.0, -1.0, 0.5]),
        "audio": torch.tensor([[0.3], [1.5], [-2.0]]),
        "video": torch.tensor([-0.7, 0.0, 3.0]),
    }
    labels = {
        "overall": torch.tensor([1, 0, 1]),
        "audio": torch.tensor([0.0, 1.0, 0.0]),
        "video": torch.tensor([True, False, True]),
    }
    expected = {
        "overall": (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.5, 1)) / 3,
        "audio": (_bce(0.3, 0) + _bce(1.5, 1) + _bce(-2.0, 0)) / 3,
        "video": (_bce(-0.7, 1) + _bce(0.0, 0) + _bce(3.0, 1)) / 3,
    }
    out = detection_bce(logits, labels)
    assert list(out) == ["overall", "audio", "video", "total"]
    for head, value in expected.items():
        assert out[head].item() == pytest.approx(value, rel=1e-6)
    assert out["total"].item() == pytest.approx(sum(expected.values()), rel=1e-6)
    weighted = detection_bce(logits, labels, weights={"audio": 0.5, "video": 0.0})
    assert weighted["total"].item() == pytest.approx(expected["overall"] + 0.5 * expected["audio"], rel=1e-6)


def test_detection_bce_subset_and_errors():
    logits = {"overall": torch.tensor([1.0, -1.0])}
    labels = {"overall": torch.tensor([1, 0]), "audio": torch.tensor([0, 0])}
    out = detection_bce(logits, labels)
    assert set(out) == {"overall", "total"} and torch.equal(out["total"], out["overall"])
    with pytest.raises(KeyError, match="'video'"):
        detection_bce({"video": torch.zeros(2)}, labels)
    with pytest.raises(ValueError, match="unknown head"):
        detection_bce({"visual": torch.zeros(2)}, labels)
    with pytest.raises(ValueError, match="unknown head"):
        detection_bce(logits, labels, weights={"visual": 1.0})
    with pytest.raises(ValueError, match=r"labels\['overall'\] has shape \(3,\)"):
        detection_bce(logits, {"overall": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"must be \(B,\) or \(B, 1\)"):
        detection_bce({"overall": torch.zeros(2, 2)}, labels)
