"""Training losses as pure, vectorised functions: reconstruction, contrastive, semantic, detection.

Models return tensors, these functions turn them into scalar loss terms, and the Lightning modules
weight and log them. Nothing here loops over the batch or the segments in Python, and lower
precisions (fp16, bf16) are upcast to float32 before any reduction; float64 inputs stay float64
(used by the gradient checks).
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ContrastiveResult",
    "DETECTION_HEADS",
    "detection_bce",
    "loss_options",
    "pretraining_losses",
    "reconstruction_loss",
    "segment_contrastive_loss",
    "semantic_mse",
    "soft_negative_weights",
]

DETECTION_HEADS = ("overall", "audio", "video")
REC_TOKENS = ("all", "masked")


def _upcast(x: Tensor) -> Tensor:
    """float64 stays float64; every other dtype (fp16, bf16, integers) becomes float32."""
    return x if x.dtype == torch.float64 else x.float()


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Disables autocast on `device` so a float32 matmul is not cast back down to fp16/bf16."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def reconstruction_loss(
    preds: Sequence[Tensor] | Tensor,
    target: Tensor,
    mask: Tensor | None,
    tokens: str = "masked",
) -> Tensor:
    """Hierarchical patch reconstruction loss, averaged over decoder layers.

    With `tokens="all"` (official code, docs/official-differences.md#reconstruction-loss) each layer's
    loss is the mean squared error over all tokens, visible and masked, and all patch values. With
    `tokens="masked"` (paper Eq. 1) it is the sum of squared errors over the masked tokens of the
    whole batch divided by `n_masked_tokens * P`; when every sample has the same number of masked
    tokens (as with the fixed-ratio masks used in pretraining) this equals the mean of the
    per-sample averages.
    The hierarchical loss is the mean of the per-layer losses.

    Args:
        preds: one (B, L, P) prediction per decoder layer, or a single (B, L, P) tensor.
        target: (B, L, P) target patches, in the same token order and value layout as `preds`.
        mask: (B, L) bool, True = masked (hidden from the encoder) token; required for
            `tokens="masked"`, only shape-checked for `tokens="all"`.
        tokens: "masked" (paper) or "all" (official).

    Returns:
        Scalar loss, float32 (float64 if the inputs are float64).

    Raises:
        ValueError: on an unknown `tokens`, no predictions, mismatched shapes, or a missing or
            all-False mask with `tokens="masked"`.
        TypeError: if `mask` is not boolean.
    """
    if tokens not in REC_TOKENS:
        raise ValueError(f"reconstruction_loss: tokens must be one of {REC_TOKENS}, got {tokens!r}")
    layers = [preds] if isinstance(preds, Tensor) else list(preds)
    if not layers:
        raise ValueError("reconstruction_loss: preds is empty, expected at least one (B, L, P) prediction")
    if target.dim() != 3:
        raise ValueError(f"reconstruction_loss: target must be (B, L, P), got shape {tuple(target.shape)}")
    for i, pred in enumerate(layers):
        if pred.shape != target.shape:
            raise ValueError(
                f"reconstruction_loss: preds[{i}] has shape {tuple(pred.shape)}, "
                f"expected the target shape {tuple(target.shape)}"
            )
    if mask is not None:
        if mask.shape != target.shape[:2]:
            raise ValueError(
                f"reconstruction_loss: mask has shape {tuple(mask.shape)}, expected (B, L) = {tuple(target.shape[:2])}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"reconstruction_loss: mask must be bool (True = masked), got {mask.dtype}")

    target = _upcast(target)
    if tokens == "all":
        per_layer = [F.mse_loss(_upcast(pred), target) for pred in layers]
    else:
        if mask is None:
            raise ValueError('reconstruction_loss: tokens="masked" needs a mask, got None')
        n_masked = mask.sum()
        if not bool(n_masked > 0):
            raise ValueError('reconstruction_loss: tokens="masked" but the mask has no masked (True) token')
        denom = n_masked.to(target.dtype) * target.size(-1)
        # torch.where rather than multiplying by the mask, so a non-finite value on a visible token
        # cannot leak into the loss as nan * 0.
        per_layer = [
            torch.where(mask.unsqueeze(-1), (_upcast(pred) - target).square(), 0.0).sum() / denom
            for pred in layers
        ]
    return torch.stack(per_layer).mean()


def soft_negative_weights(
    n_segments: int,
    batch_size: int,
    soft: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Denominator weights of the fine-grained contrastive loss (paper Eq. 3).

    See docs/official-differences.md#segment-contrastive-loss.

    Row and column index r = i * S + t (sample i, segment t). The weight is 1 everywhere except for
    two different segments of the same sample, where it is 1 - 2 sigmoid(-|t - t'|) =
    tanh(|t - t'| / 2): temporally close segments of one clip are weak negatives. The positive
    (diagonal) keeps weight 1. The matrix is symmetric.

    Args:
        n_segments: S, segments per sample (>= 1).
        batch_size: B, samples (>= 1).
        soft: False gives all ones (plain InfoNCE denominator).
        device: where to build the matrix.
        dtype: floating dtype; default the torch default dtype.

    Returns:
        (B*S, B*S) weights in (0, 1].
    """
    if n_segments < 1 or batch_size < 1:
        raise ValueError(
            f"soft_negative_weights: n_segments and batch_size must be >= 1, got {n_segments} and {batch_size}"
        )
    dtype = dtype or torch.get_default_dtype()
    n = batch_size * n_segments
    if not soft:
        return torch.ones(n, n, device=device, dtype=dtype)
    idx = torch.arange(n, device=device)
    sample, segment = idx // n_segments, idx % n_segments
    same_sample = sample[:, None] == sample[None, :]
    gap = (segment[:, None] - segment[None, :]).abs().to(dtype)
    soft_w = torch.tanh(gap / 2)  # Eq. 3: 1 - 2*sigmoid(-|dt|)
    return torch.where(same_sample & (gap > 0), soft_w, torch.ones_like(soft_w))


@dataclass(frozen=True)
class ContrastiveResult:
    """Output of `segment_contrastive_loss`.

    Attributes:
        loss: scalar, mean of the audio->video and video->audio losses (differentiable).
        accuracy: scalar in [0, 1], detached: fraction of rows whose most similar column is the
            positive (unweighted similarity), averaged over both directions.
    """

    loss: Tensor
    accuracy: Tensor


def segment_contrastive_loss(
    audio_seg: Tensor,
    video_seg: Tensor,
    temperature: float = 0.07,
    soft_negatives: bool = True,
) -> ContrastiveResult:
    """Fine-grained audio-visual contrastive loss with soft temporal negatives (paper Eq. 2-3).

    Segment features are L2-normalised and compared over all B*S rows, M = a v^T / temperature.
    For each direction (rows of M for audio->video, rows of M^T for video->audio)

        loss_dir = mean_r [ -M_rr + logsumexp_c (M_rc + log W_rc) ],

    with W from `soft_negative_weights`. This is -log(exp(M_rr) / sum_c W_rc exp(M_rc)) written
    in log-sum-exp form, which cannot overflow; the official code adds 1e-8 inside the log of the
    probability, which changes the value by about 1e-8 / p_rr. The similarity is computed in
    float32 (float64 if given float64) with autocast disabled. S = 1 gives the clip-level loss.

    Args:
        audio_seg: (B, S, D) audio segment features.
        video_seg: (B, S, D) video segment features, segment t aligned with audio segment t.
        temperature: softmax temperature tau (> 0).
        soft_negatives: False uses weight 1 for every negative (plain InfoNCE).

    Returns:
        ContrastiveResult(loss, accuracy), both scalars.
    """
    if audio_seg.dim() != 3 or audio_seg.shape != video_seg.shape:
        raise ValueError(
            "segment_contrastive_loss: audio_seg and video_seg must both be (B, S, D), got "
            f"{tuple(audio_seg.shape)} and {tuple(video_seg.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"segment_contrastive_loss: temperature must be > 0, got {temperature}")
    b, s, _ = audio_seg.shape
    dtype = torch.float64 if torch.float64 in (audio_seg.dtype, video_seg.dtype) else torch.float32
    with _autocast_off(audio_seg.device):
        a = F.normalize(audio_seg.to(dtype).flatten(0, 1), dim=-1)  # (B*S, D), row r = i*S + t
        v = F.normalize(video_seg.to(dtype).flatten(0, 1), dim=-1)
        logits = a @ v.T / temperature  # (B*S, B*S), rows = audio
        log_w = soft_negative_weights(s, b, soft_negatives, device=logits.device, dtype=dtype).log()
        positive = logits.diagonal()
        # W is symmetric, so the same log-weights serve the video->audio direction.
        loss_a2v = (torch.logsumexp(logits + log_w, dim=1) - positive).mean()
        loss_v2a = (torch.logsumexp(logits.T + log_w, dim=1) - positive).mean()
        loss = (loss_a2v + loss_v2a) / 2
        with torch.no_grad():
            target = torch.arange(b * s, device=logits.device)
            acc_a2v = (logits.argmax(dim=1) == target).to(dtype).mean()
            acc_v2a = (logits.argmax(dim=0) == target).to(dtype).mean()
            accuracy = (acc_a2v + acc_v2a) / 2
    return ContrastiveResult(loss=loss, accuracy=accuracy)


def semantic_mse(pred: Tensor, target: Tensor, *, name: str = "semantic_mse") -> Tensor:
    """Mean squared error over all elements, computed in float32, failing loudly if not finite.

    Used for the cross-modal semantic loss (docs/official-differences.md#semantic-targets-and-loss).
    The official "safe MSE" replaces NaN/Inf and returns a detached zero when the result is not
    finite, which hides divergence; here a non-finite result raises instead.

    Args:
        pred: predicted features, any shape, e.g. (B, N, D).
        target: target features of the same shape (typically computed under no_grad).
        name: label of the term in the error message (e.g. "semantic_a2v").

    Returns:
        Scalar loss, float32 (float64 if the inputs are float64).

    Raises:
        ValueError: on a shape mismatch or empty inputs.
        FloatingPointError: if the result is NaN or Inf; the message says which, and how many
            non-finite values `pred` and `target` hold.
    """
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred has shape {tuple(pred.shape)}, expected the target shape {tuple(target.shape)}")
    if pred.numel() == 0:
        raise ValueError(f"{name}: empty inputs of shape {tuple(pred.shape)}")
    loss = F.mse_loss(_upcast(pred), _upcast(target))
    if not bool(torch.isfinite(loss)):
        kind = "nan" if bool(torch.isnan(loss)) else "inf"
        bad_pred = int((~torch.isfinite(pred)).sum())
        bad_target = int((~torch.isfinite(target)).sum())
        cause = "overflow of finite inputs" if bad_pred == bad_target == 0 else "non-finite inputs"
        raise FloatingPointError(
            f"{name}: loss is {kind} ({cause}; pred has {bad_pred} and target has {bad_target} "
            f"non-finite values of {pred.numel()})"
        )
    return loss


def detection_bce(
    logits: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
) -> dict[str, Tensor]:
    """Binary cross-entropy with logits for each detection head, and their weighted sum.

    Heads are "overall", "audio" and "video". The official loss is L_ft = BCE(overall) + BCE(audio)
    + BCE(video), each averaged over the batch, all weights 1 (docs/official-differences.md#detector).
    Label 1 = fake.

    Args:
        logits: head name -> (B,) or (B, 1) logits; any non-empty subset of the heads.
        labels: head name -> (B,) targets in {0, 1} (float, int or bool); extra heads are ignored.
        weights: head name -> weight of its term in "total"; heads not listed weigh 1.

    Returns:
        Dict with one scalar float32 term per head in `logits` (in its order) and "total".

    Raises:
        ValueError: on no logits, an unknown head name in `logits` or `weights`, or shapes that
            are not (B,) / (B, 1) with matching B.
        KeyError: if a head in `logits` has no labels.
    """
    if not logits:
        raise ValueError("detection_bce: logits is empty")
    weights = dict(weights or {})
    for where, names in (("logits", logits), ("weights", weights)):
        unknown = [k for k in names if k not in DETECTION_HEADS]
        if unknown:
            raise ValueError(f"detection_bce: unknown head(s) {unknown} in {where}; expected among {DETECTION_HEADS}")
    terms: dict[str, Tensor] = {}
    for head, logit in logits.items():
        if head not in labels:
            raise KeyError(f"detection_bce: no labels for head {head!r} (labels has {sorted(labels)})")
        label = labels[head]
        if logit.dim() == 2 and logit.size(1) == 1:
            logit = logit.squeeze(1)
        if logit.dim() != 1:
            raise ValueError(f"detection_bce: logits[{head!r}] must be (B,) or (B, 1), got {tuple(logit.shape)}")
        if label.shape != logit.shape:
            raise ValueError(
                f"detection_bce: labels[{head!r}] has shape {tuple(label.shape)}, expected {tuple(logit.shape)}"
            )
        logit = _upcast(logit)
        terms[head] = F.binary_cross_entropy_with_logits(logit, label.to(logit.dtype))
    terms["total"] = sum(weights.get(head, 1.0) * term for head, term in terms.items())
    return terms


def pretraining_losses(
    out,
    *,
    rec_tokens: str = "masked",
    rec_weight: float = 1.0,
    contrastive_weight: float = 0.01,
    cross_weight: float = 1.0,
    temperature: float = 0.07,
    soft_negatives: bool = True,
    temporal_segments: bool = True,
) -> dict[str, Tensor]:
    """All pretraining terms of one :class:`havic.models.PretrainOutput` and their weighted sum.

    ``L = rec_weight * (rec_video + rec_audio) + contrastive_weight * contrastive
    + cross_weight * (cross_video + cross_audio)`` (paper Eq. 5). A weight of 0 removes the term
    from the total (the ablations "w/o L_rec / L_cl / L_cross") while it is still reported.
    ``temporal_segments=False`` contrasts one clip-level feature per sample (mean of the segments).

    Returns:
        ``rec_video, rec_audio, contrastive, contrastive_acc, cross_video, cross_audio, total``; all
        scalars, ``contrastive_acc`` detached.
    """
    a_seg, v_seg = out.audio_segments, out.video_segments
    if not temporal_segments:
        a_seg, v_seg = a_seg.mean(dim=1, keepdim=True), v_seg.mean(dim=1, keepdim=True)
    contrast = segment_contrastive_loss(a_seg, v_seg, temperature=temperature, soft_negatives=soft_negatives)
    terms = {
        "rec_video": reconstruction_loss(out.video_preds, out.video_target, out.video_hidden, rec_tokens),
        "rec_audio": reconstruction_loss(out.audio_preds, out.audio_target, out.audio_hidden, rec_tokens),
        "contrastive": contrast.loss,
        "contrastive_acc": contrast.accuracy,
        "cross_video": semantic_mse(out.video_from_audio, out.video_teacher, name="cross_video"),
        "cross_audio": semantic_mse(out.audio_from_video, out.audio_teacher, name="cross_audio"),
    }
    weighted = [
        (rec_weight, terms["rec_video"] + terms["rec_audio"]),
        (contrastive_weight, terms["contrastive"]),
        (cross_weight, terms["cross_video"] + terms["cross_audio"]),
    ]
    terms["total"] = sum((w * t for w, t in weighted if w != 0.0), terms["rec_video"].new_zeros(()))
    return terms


def loss_options(loss_cfg) -> dict:
    """Keyword arguments of :func:`pretraining_losses` from the ``loss`` config section."""
    keys = ("rec_tokens", "rec_weight", "contrastive_weight", "cross_weight", "temperature",
            "soft_negatives", "temporal_segments")
    return {k: loss_cfg[k] for k in keys}
