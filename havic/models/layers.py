"""Transformer building blocks shared by encoders, decoders and fusion.

See docs/official-differences.md#attention-and-blocks.

All attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`, so the fused
kernels (flash / memory-efficient) are used on GPUs and the math kernel on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp
from torch import Tensor, nn

QKV_BIAS_MODES = ("qv", "qkv", "none")


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    return rearrange(x, "b n (h d) -> b h n d", h=num_heads)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    return rearrange(x, "b h n d -> b n (h d)")


def _check_heads(dim: int, num_heads: int) -> None:
    if dim % num_heads:
        raise ValueError(f"width {dim} is not divisible by {num_heads} heads")


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection.

    Args:
        dim: token width.
        num_heads: number of heads (head width = dim / num_heads).
        qkv_bias: ``"qv"`` learns query and value biases with the key bias fixed at zero
            (BEiT/MARLIN style, the encoders and decoders), ``"qkv"`` a full learnable bias
            (timm style, the fusion and semantic blocks), ``"none"`` no bias.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: str = "qv") -> None:
        super().__init__()
        if qkv_bias not in QKV_BIAS_MODES:
            raise ValueError(f"qkv_bias={qkv_bias!r}: expected one of {QKV_BIAS_MODES}")
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.qkv_bias = qkv_bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias == "qkv")
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def _qkv_bias(self) -> Tensor | None:
        if self.qkv_bias == "qv":
            # A key bias adds the same value to every score of a query row, which the softmax
            # cancels; it is therefore fixed at zero rather than learnt.
            return torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        return self.qkv.bias

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        qkv = F.linear(x, self.qkv.weight, self._qkv_bias())
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Per-sample stochastic depth: drop the residual branch of whole samples.

    Our own rather than timm's ``drop_path``: timm scales the mask before multiplying, which rounds
    differently (1 ulp) and so changes training trajectories against the released code's order;
    and :class:`Block` switches it per call (``stochastic=False`` for the deterministic teacher).

    Args:
        x: (B, ...) residual branch output.
        rate: probability of dropping a sample's branch.
        training: apply only when true.
    """
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask / keep


class Block(nn.Module):
    """Pre-norm Transformer block: x + DP(Attn(LN(x))); x + DP(MLP(LN(x))).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: see :class:`Attention`.
        drop_path: stochastic-depth rate of both residual branches.
        norm_eps: epsilon of both LayerNorms (PyTorch's 1e-5; AudioMAE's blocks use 1e-6).
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: str = "qv", drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))  # Linear -> exact GELU -> Linear
        self.drop_path = drop_path

    def forward(self, x: Tensor, stochastic: bool = True) -> Tensor:
        """x: (B, N, C) -> (B, N, C). ``stochastic=False`` disables drop-path in train mode."""
        active = self.training and stochastic
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, active)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, active)


class HierarchicalCrossAttention(nn.Module):
    """Decoder cross-attention to one encoder level ("HiA", docs/official-differences.md#decoder-cross-attention).

    The encoder feature is projected to the decoder width; queries come from the normalised
    decoder stream; there is no output projection; the residual is added to the *normalised*
    query and the sum normalised again. These semantics match the released weights.

    Args:
        dim: decoder width.
        encoder_dim: width of the encoder feature it reads.
        num_heads: attention heads.
    """

    def __init__(self, dim: int, encoder_dim: int, num_heads: int) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.encoder_proj = nn.Linear(encoder_dim, dim)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """x: (B, N, dim) decoder stream; memory: (B, M, encoder_dim) -> (B, N, dim)."""
        xq = self.norm_q(x)
        mem = self.norm_k(self.encoder_proj(memory))
        q, k, v = (_split_heads(t, self.num_heads) for t in (self.q(xq), self.k(mem), self.v(mem)))
        return self.norm_out(xq + _merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossModalAttention(nn.Module):
    """One direction of the audio-visual interaction (docs/official-differences.md#fusion-cross-attention).

    ``h = X + Wo·Attn(Wq LN(X), Wk LN(Y), Wv Y)``; returns ``h + MLP(LN(h))``. Values are read from
    the *un-normalised* context, as in the released weights.

    Args:
        dim: token width of both streams.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: (B, N, C) query stream; context: (B, M, C) -> (B, N, C)."""
        q = _split_heads(self.q(self.norm_q(x)), self.num_heads)
        k = _split_heads(self.k(self.norm_k(context)), self.num_heads)
        v = _split_heads(self.v(context), self.num_heads)
        h = x + self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return h + self.mlp(self.norm2(h))


def init_weights(module: nn.Module, linear: str = "xavier_uniform") -> None:
    """Xavier init for every Linear (zero bias) and (1, 0) for every LayerNorm below ``module``."""
    init = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}[linear]
    for m in module.modules():
        if isinstance(m, nn.Linear):
            init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
