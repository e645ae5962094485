"""Token grids, positional tables and masking invariants."""
from __future__ import annotations

import math

import pytest
import torch

from havic.models.masking import gather_tokens, hidden_mask, num_kept, scatter_tokens, segment_keep, tube_keep
from havic.models.patching import AudioGrid, VideoGrid
from havic.models.pos_embed import sincos_1d, sincos_2d

VIDEO = VideoGrid(num_frames=4, image_size=32, tubelet_size=2, patch_size=8, num_segments=2)
AUDIO_T = AudioGrid(num_frames=64, num_mel_bins=32, patch_size=8, num_segments=2, order="time")
AUDIO_M = AudioGrid(num_frames=64, num_mel_bins=32, patch_size=8, num_segments=2, order="mel")


def test_video_patchify_round_trip_and_value_order():
    video = torch.rand(2, 3, 4, 32, 32)
    patches = VIDEO.patchify(video)
    assert patches.shape == (2, VIDEO.num_tokens, 3 * 2 * 8 * 8)
    assert torch.equal(VIDEO.unpatchify(patches), video)
    # token (t=1, y=2, x=3), value (c=2, dt=1, dy=4, dx=5) is pixel (c, 2t+dt, 8y+dy, 8x+dx)
    tok = 1 * 16 + 2 * 4 + 3
    val = 2 * 128 + 1 * 64 + 4 * 8 + 5
    assert patches[1, tok, val] == video[1, 2, 3, 20, 29]


@pytest.mark.parametrize("grid", [AUDIO_T, AUDIO_M], ids=["time", "mel"])
def test_audio_patchify_round_trip(grid: AudioGrid):
    audio = torch.randn(3, 64, 32)
    patches = grid.patchify(audio)
    assert patches.shape == (3, 32, 64)
    assert torch.equal(grid.unpatchify(patches), audio)


def test_audio_time_order_tokens_and_segments_are_time_spans():
    audio = torch.zeros(1, 64, 32)
    audio[:, :8] = 1.0  # the first 8 frames, every mel bin
    touched = AUDIO_T.patchify(audio).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert touched == [0, 1, 2, 3]  # the first row: time patch 0, all 4 mel bands
    t, s = AUDIO_T.token_time(), AUDIO_T.segment_ids()
    assert t[s == 0].max() < t[s == 1].min()  # segments are contiguous, disjoint time spans
    assert set(AUDIO_T.token_mel()[s == 0].tolist()) == {0, 1, 2, 3}


def test_audio_mel_order_matches_official_layout():
    """Spec §2.2: frames 0..p-1 touch tokens {f * 8 + 0}; mel bins 0..p-1 touch tokens 0..cols-1."""
    audio = torch.zeros(1, 64, 32)
    audio[:, :8] = 1.0
    touched = AUDIO_M.patchify(audio).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert touched == [0, 8, 16, 24]
    audio = torch.zeros(1, 64, 32)
    audio[:, :, :8] = 1.0
    touched = AUDIO_M.patchify(audio).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert touched == list(range(8))
    # official "segments" are mel bands spanning the whole clip
    s = AUDIO_M.segment_ids()
    assert set(AUDIO_M.token_mel()[s == 0].tolist()) == {0, 1}
    assert set(AUDIO_M.token_time()[s == 0].tolist()) == set(range(8))


@pytest.mark.parametrize("grid", [AUDIO_T, AUDIO_M], ids=["time", "mel"])
def test_patch_embedding_conv_equals_linear_on_patches(grid: AudioGrid):
    """The conv kernel layout and the patch value order agree (decoder heads and converters rely on it)."""
    conv = torch.nn.Conv2d(1, 5, kernel_size=8, stride=8)
    audio = torch.randn(2, 64, 32)
    by_conv = conv(grid.to_image(audio)).flatten(2).transpose(1, 2)
    by_linear = grid.patchify(audio) @ conv.weight.view(5, -1).T + conv.bias
    torch.testing.assert_close(by_conv, by_linear)


def test_video_conv_equals_linear_on_patches():
    conv = torch.nn.Conv3d(3, 5, kernel_size=(2, 8, 8), stride=(2, 8, 8))
    video = torch.rand(2, 3, 4, 32, 32)
    by_conv = conv(video).flatten(2).transpose(1, 2)
    by_linear = VIDEO.patchify(video) @ conv.weight.view(5, -1).T + conv.bias
    torch.testing.assert_close(by_conv, by_linear)


def test_grid_rejects_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match="segments"):
        VideoGrid(num_frames=6, image_size=32, tubelet_size=2, patch_size=8, num_segments=2)
    with pytest.raises(ValueError, match="patch"):
        AudioGrid(num_frames=60, num_mel_bins=32, patch_size=8, num_segments=2)


def test_wrong_input_shape_names_expected_and_actual():
    with pytest.raises(ValueError, match=r"expected shape \(\*, 3, 4, 32, 32\), got \(2, 3, 4, 32, 31\)"):
        VIDEO.patchify(torch.rand(2, 3, 4, 32, 31))
    with pytest.raises(ValueError, match=r"expected shape \(\*, 64, 32\), got \(2, 32, 64\)"):
        AUDIO_T.patchify(torch.rand(2, 32, 64))


def test_sincos_tables_are_interleaved():
    table = sincos_1d(torch.arange(5), 8)
    p, i = 3, 2
    assert table[p, 2 * i] == pytest.approx(math.sin(p * 10000 ** (-i / 4)), abs=1e-6)
    assert table[p, 2 * i + 1] == pytest.approx(math.cos(p * 10000 ** (-i / 4)), abs=1e-6)
    two = sincos_2d(torch.tensor([1, 2]), torch.tensor([5, 6]), 8)
    torch.testing.assert_close(two[:, :4], sincos_1d(torch.tensor([1, 2]), 4))
    torch.testing.assert_close(two[:, 4:], sincos_1d(torch.tensor([5, 6]), 4))


def test_audio_position_table_is_the_same_per_token_in_both_orders():
    """Reordering tokens does not change what position each (time, mel) patch gets."""
    t_tab, m_tab = AUDIO_T.position_table(16), AUDIO_M.position_table(16)
    key_t = AUDIO_T.token_time() * 100 + AUDIO_T.token_mel()
    key_m = AUDIO_M.token_time() * 100 + AUDIO_M.token_mel()
    torch.testing.assert_close(t_tab[key_t.argsort()], m_tab[key_m.argsort()])


def test_official_keep_counts():
    assert num_kept(196, 0.9) == 19
    assert num_kept(64, 0.8125) == 12
    with pytest.raises(ValueError):
        num_kept(4, 0.9)


def test_tube_masking_keeps_the_same_positions_at_every_time_step():
    ids = tube_keep(5, time_steps=8, tokens_per_step=196, mask_ratio=0.9)
    assert ids.shape == (5, 8 * 19)
    steps = ids.view(5, 8, 19)
    assert torch.equal(steps // 196, torch.arange(8).view(1, 8, 1).expand(5, 8, 19))
    spatial = steps % 196
    assert torch.equal(spatial, spatial[:, :1].expand_as(spatial))
    assert all(len(set(row.tolist())) == 19 for row in spatial[:, 0])
    assert not torch.equal(spatial[0, 0], spatial[1, 0])  # independent across samples


def test_segment_masking_is_stratified():
    ids = segment_keep(4, num_tokens=512, num_segments=8, mask_ratio=0.8125)
    assert ids.shape == (4, 96)
    seg = (ids // 64).view(4, 8, 12)
    assert torch.equal(seg, torch.arange(8).view(1, 8, 1).expand(4, 8, 12))
    assert all(len(set(row.tolist())) == 96 for row in ids)


def test_masks_follow_the_generator_and_device():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = segment_keep(2, 64, 2, 0.75, device="cpu", generator=g1)
    b = segment_keep(2, 64, 2, 0.75, device="cpu", generator=g2)
    assert torch.equal(a, b) and a.device.type == "cpu"


def test_gather_scatter_round_trip_and_hidden_mask():
    x = torch.randn(2, 10, 3)
    ids = torch.tensor([[0, 4, 7], [1, 2, 9]])
    vis = gather_tokens(x, ids)
    fill = torch.full((3,), -5.0)
    full = scatter_tokens(vis, ids, 10, fill)
    hidden = hidden_mask(ids, 10)
    assert hidden.sum().item() == 14
    assert torch.equal(full[~hidden], x[~hidden])
    assert (full[hidden] == -5.0).all()


def test_scatter_sends_gradient_to_the_fill_token():
    fill = torch.zeros(3, requires_grad=True)
    vis = torch.randn(1, 2, 3, requires_grad=True)
    scatter_tokens(vis, torch.tensor([[0, 3]]), 5, fill).sum().backward()
    assert torch.equal(fill.grad, torch.full((3,), 3.0))  # 3 positions were filled
    assert torch.equal(vis.grad, torch.ones(1, 2, 3))
