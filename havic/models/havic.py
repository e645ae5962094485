"""The two HAVIC networks: the pretrainer (stage 1) and the detector (stage 2).

Both return dataclasses of tensors; losses live in :mod:`havic.losses`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from havic.models.decoders import HierarchicalDecoder
from havic.models.encoders import AudioEncoder, EncoderOutput, VideoEncoder, strip_cls
from havic.models.fusion import AudioVisualFusion, SemanticTranslator
from havic.models.heads import LayerWeights, MeanPool, MLPHead, TokenAttentionPool
from havic.models.masking import MaskIds, hidden_mask, segment_keep, tube_keep
from havic.models.patching import AudioGrid, VideoGrid


def model_grids(cfg: Any) -> tuple[VideoGrid, AudioGrid]:
    """The video and audio token grids of a resolved model configuration."""
    v, a = cfg.video, cfg.audio
    video = VideoGrid(v.num_frames, v.image_size, v.tubelet_size, v.patch_size, cfg.num_segments)
    audio = AudioGrid(a.num_frames, a.num_mel_bins, a.patch_size, cfg.num_segments, cfg.audio_token_order)
    return video, audio


class _Backbone(nn.Module):
    """Encoders and fusion, shared by the pretrainer and the detector (same parameter names)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.video_grid, self.audio_grid = model_grids(cfg)
        self.num_segments = cfg.num_segments
        self.taps = tuple(sorted(cfg.taps))
        common = dict(dim=cfg.dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, taps=self.taps)
        self.video_encoder = VideoEncoder(self.video_grid, drop_path=cfg.video_drop_path, **common)
        self.audio_encoder = AudioEncoder(
            self.audio_grid, drop_path=cfg.audio_drop_path, cls_pos=cfg.audio_cls_pos, norm_eps=cfg.audio_norm_eps,
            **common,
        )
        self.fusion = AudioVisualFusion(
            cfg.dim, cfg.fusion_heads, cfg.mlp_ratio, cfg.fusion_double_residual, cfg.fusion_self_attention
        )

    def fuse(self, video: EncoderOutput, audio: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Fuse the last taps (CLS tokens take part) and return the patch tokens (B, Kv, D), (B, Ka, D)."""
        v, a = self.fusion(video.sequence(), audio.sequence())
        return strip_cls(v, self.num_segments), strip_cls(a, self.num_segments)


@dataclass
class PretrainOutput:
    """Everything the pretraining losses and previews need.

    Shapes: Lv/La full token counts, Kv/Ka visible tokens, S segments, D encoder width.

    Attributes:
        video_preds: one (B, Lv, Pv) reconstruction per decoder layer, shallowest first.
        audio_preds: one (B, La, Pa) reconstruction per decoder layer.
        video_target: (B, Lv, Pv) patches of the input clip.
        audio_target: (B, La, Pa) patches of the input fbank.
        video_hidden: (B, Lv) bool, True where a token was masked.
        audio_hidden: (B, La) bool.
        video_segments: (B, S, D) mean visible last-tap token per segment.
        audio_segments: (B, S, D).
        video_from_audio: (B, Lv, D) A2V prediction of the video features.
        audio_from_video: (B, La, D) V2A prediction of the audio features.
        video_teacher: (B, Lv, D) unmasked last-tap video features (no gradient).
        audio_teacher: (B, La, D).
        ids_keep: the visible-token indices used.
    """

    video_preds: list[Tensor]
    audio_preds: list[Tensor]
    video_target: Tensor
    audio_target: Tensor
    video_hidden: Tensor
    audio_hidden: Tensor
    video_segments: Tensor
    audio_segments: Tensor
    video_from_audio: Tensor
    audio_from_video: Tensor
    video_teacher: Tensor
    audio_teacher: Tensor
    ids_keep: MaskIds


class HavicPretrainer(_Backbone):
    """Stage 1: masked reconstruction, segment contrast and cross-modal semantic prediction.

    Args:
        cfg: a resolved model configuration (:func:`havic.config.model_config`).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        vg, ag = self.video_grid, self.audio_grid
        self.video_mask_ratio = cfg.video_mask_ratio
        self.audio_mask_ratio = cfg.audio_mask_ratio
        self.teacher_drop_path = cfg.teacher_drop_path
        dec = dict(encoder_dim=cfg.dim, dim=cfg.decoder_dim, num_heads=cfg.decoder_heads, taps=self.taps,
                   mlp_ratio=cfg.mlp_ratio)
        self.video_decoder = HierarchicalDecoder(
            vg.num_tokens, vg.patch_dim, vg.position_table(cfg.decoder_dim), drop_path=cfg.video_drop_path, **dec
        )
        self.audio_decoder = HierarchicalDecoder(
            ag.num_tokens, ag.patch_dim, ag.position_table(cfg.decoder_dim), drop_path=cfg.audio_drop_path,
            modality_token=True, mask_token_std=0.0, **dec,
        )
        self.audio_to_video = SemanticTranslator(
            ag.num_tokens, vg.num_tokens, cfg.num_segments, ag.position_table(cfg.dim), cfg.dim,
            cfg.semantic_heads, cfg.mlp_ratio, modality_token=True, mask_token_std=0.0,
        )
        self.video_to_audio = SemanticTranslator(
            vg.num_tokens, ag.num_tokens, cfg.num_segments, vg.position_table(cfg.dim), cfg.dim,
            cfg.semantic_heads, cfg.mlp_ratio,
        )

    def draw_masks(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> MaskIds:
        """Fresh visible-token indices: tube masking for video, stratified per segment for audio."""
        vg, ag = self.video_grid, self.audio_grid
        return MaskIds(
            video=tube_keep(batch, vg.time_steps, vg.tokens_per_step, self.video_mask_ratio, device, generator),
            audio=segment_keep(batch, ag.num_tokens, self.num_segments, self.audio_mask_ratio, device, generator),
        )

    @torch.no_grad()
    def teacher_features(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Unmasked last-tap patch features of the online encoders: (B, Lv, D), (B, La, D)."""
        last = (max(self.taps),)
        v = self.video_encoder(video, taps=last, stochastic=self.teacher_drop_path).patches()
        a = self.audio_encoder(audio, taps=last, stochastic=self.teacher_drop_path).patches()
        return v, a

    def forward(
        self, video: Tensor, audio: Tensor, ids_keep: MaskIds | None = None,
        generator: torch.Generator | None = None,
    ) -> PretrainOutput:
        """One pretraining pass (docs/official-differences.md#pretraining-forward).

        Args:
            video: (B, 3, T, H, W) RGB in [0, 1].
            audio: (B, T_a, F) normalised fbank.
            ids_keep: visible tokens to use; drawn with ``generator`` when None.
            generator: random source for the masks (same device as the inputs).
        """
        self.video_grid.check(video)
        self.audio_grid.check(audio)
        if video.shape[0] != audio.shape[0]:
            raise ValueError(f"batch sizes differ: video {video.shape[0]}, audio {audio.shape[0]}")
        b, s = video.shape[0], self.num_segments
        ids = self.draw_masks(b, video.device, generator) if ids_keep is None else ids_keep
        v_enc = self.video_encoder(video, ids.video)
        a_enc = self.audio_encoder(audio, ids.audio)
        v_vis, a_vis = v_enc.patches(), a_enc.patches()  # (B, Kv, D), (B, Ka, D)
        v_fused, a_fused = self.fuse(v_enc, a_enc)
        v_teacher, a_teacher = self.teacher_features(video, audio)
        v_taps = {t: v_enc.patches(t) for t in self.taps}
        a_taps = {t: a_enc.patches(t) for t in self.taps}
        return PretrainOutput(
            video_preds=self.video_decoder(v_fused, ids.video, v_taps),
            audio_preds=self.audio_decoder(a_fused, ids.audio, a_taps),
            video_target=self.video_grid.patchify(video),
            audio_target=self.audio_grid.patchify(audio),
            video_hidden=hidden_mask(ids.video, self.video_grid.num_tokens),
            audio_hidden=hidden_mask(ids.audio, self.audio_grid.num_tokens),
            video_segments=v_vis.view(b, s, -1, v_vis.shape[-1]).mean(dim=2),
            audio_segments=a_vis.view(b, s, -1, a_vis.shape[-1]).mean(dim=2),
            video_from_audio=self.audio_to_video(a_fused, ids.audio),
            audio_from_video=self.video_to_audio(v_fused, ids.video),
            video_teacher=v_teacher,
            audio_teacher=a_teacher,
            ids_keep=ids,
        )


@dataclass
class DetectorOutput:
    """Logits (1 = fake) of one batch.

    Attributes:
        logit: (B,) main head; for audio-less input this is the video head's logit.
        audio_logit: (B,) auxiliary audio head, None without audio or without auxiliary heads.
        video_logit: (B,) auxiliary video head, None without auxiliary heads.
        has_audio: whether the audio stream was used.
    """

    logit: Tensor
    audio_logit: Tensor | None
    video_logit: Tensor | None
    has_audio: bool = True

    def logits(self) -> dict[str, Tensor]:
        """Named logits for :func:`havic.losses.detection_bce` ("overall", "audio", "video")."""
        named = {"overall": self.logit, "audio": self.audio_logit, "video": self.video_logit}
        return {k: v for k, v in named.items() if v is not None}


class HavicDetector(_Backbone):
    """Stage 2: pools every encoder tap and both fused streams, then classifies.

    Args:
        cfg: a resolved model configuration (:func:`havic.config.model_config`).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        d, levels = cfg.dim, [str(t) for t in self.taps] + ["fusion"]
        adaptive = cfg.aggregation == "attention"

        def pools() -> nn.ModuleDict:
            return nn.ModuleDict({k: TokenAttentionPool(d, cfg.score_hidden) if adaptive else MeanPool() for k in levels})

        self.video_pools, self.audio_pools = pools(), pools()
        self.video_layer_weights = LayerWeights(len(self.taps), learnable=adaptive)
        self.audio_layer_weights = LayerWeights(len(self.taps), learnable=adaptive)
        hidden, drops = [2 * d, d], list(cfg.head_dropout)
        self.head = MLPHead(4 * d, hidden, drops)
        self.audio_head = MLPHead(d, hidden, drops) if cfg.aux_heads else None
        self.video_head = MLPHead(d, hidden, drops) if cfg.aux_heads else None

    @staticmethod
    def _aggregate(enc: EncoderOutput, pools: nn.ModuleDict, weights: LayerWeights) -> Tensor:
        """Pool each tap's patch tokens and mix the levels: (B, D)."""
        levels = torch.stack([pools[str(t)](enc.patches(t)) for t in sorted(enc.taps)], dim=1)
        return weights(levels)

    def forward(self, video: Tensor, audio: Tensor | None) -> DetectorOutput:
        """Score clips.

        Args:
            video: (B, 3, T, H, W) RGB in [0, 1].
            audio: (B, T_a, F) normalised fbank, or None for audio-less input (the auxiliary video
                head scores the clip, paper D.2).
        """
        self.video_grid.check(video)
        v_enc = self.video_encoder(video)
        v_agg = self._aggregate(v_enc, self.video_pools, self.video_layer_weights)
        if audio is None:
            if self.video_head is None:
                raise ValueError("audio-less input needs the auxiliary video head (model.aux_heads=true)")
            logit = self.video_head(v_agg)
            return DetectorOutput(logit=logit, audio_logit=None, video_logit=logit, has_audio=False)
        self.audio_grid.check(audio)
        if video.shape[0] != audio.shape[0]:
            raise ValueError(f"batch sizes differ: video {video.shape[0]}, audio {audio.shape[0]}")
        a_enc = self.audio_encoder(audio)
        a_agg = self._aggregate(a_enc, self.audio_pools, self.audio_layer_weights)
        v_fused, a_fused = self.fuse(v_enc, a_enc)
        features = torch.cat(
            [a_agg, v_agg, self.audio_pools["fusion"](a_fused), self.video_pools["fusion"](v_fused)], dim=1
        )
        return DetectorOutput(
            logit=self.head(features),
            audio_logit=self.audio_head(a_agg) if self.audio_head is not None else None,
            video_logit=self.video_head(v_agg) if self.video_head is not None else None,
        )


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Trainable parameters, frozen parameters and fixed (non-persistent) tables of ``module``."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in module.buffers())
    return {"trainable": trainable, "frozen": frozen, "fixed_tables": buffers}


def parameter_report(model: nn.Module) -> dict[str, dict[str, int]]:
    """:func:`count_parameters` per top-level child module and for the whole model ("total")."""
    report = {name: count_parameters(child) for name, child in model.named_children()}
    report["total"] = count_parameters(model)
    return report


MODEL_TYPES: Mapping[str, type[nn.Module]] = {"pretrain": HavicPretrainer, "detector": HavicDetector}
