"""Class-balanced sampling: weights, drawn class frequencies, the distributed split."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.utils.data import DistributedSampler, WeightedRandomSampler

from havic.data.sampling import DistributedWeightedSampler, build_sampler, sample_classes, sample_weights


@dataclass
class Rec:
    key: str
    label: int
    audio_label: int
    video_label: int
    clip: int = 0


def _records(counts: dict[tuple[int, int], int]) -> list[Rec]:
    """Records with (audio_label, video_label) -> count; label = audio OR video."""
    out = []
    for (a, v), n in counts.items():
        out += [Rec(f"{a}{v}-{i}", int(a or v), a, v) for i in range(n)]
    return out


# Imbalanced like FakeAVCeleb: many fully fake clips, few real ones.
COUNTS = {(0, 0): 6, (1, 0): 2, (0, 1): 1, (1, 1): 11}


def test_four_class_weights_hand_computed():
    records = _records(COUNTS)
    assert sample_classes(records, "four_class").tolist() == [0] * 6 + [2] * 2 + [1] * 1 + [3] * 11
    w = sample_weights(records, "four_class")
    n = 20
    expected = [n / 6] * 6 + [n / 2] * 2 + [n / 1] + [n / 11] * 11
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64))
    # Every class carries the same total weight N.
    totals = torch.stack([w[:6].sum(), w[6:8].sum(), w[8:9].sum(), w[9:].sum()])
    assert torch.allclose(totals, torch.full((4,), 20.0, dtype=torch.float64))


def test_binary_weights_and_none():
    records = _records(COUNTS)  # 6 real, 14 fake
    w = sample_weights(records, "binary")
    assert torch.allclose(w[:6], torch.full((6,), 20 / 6, dtype=torch.float64))
    assert torch.allclose(w[6:], torch.full((14,), 20 / 14, dtype=torch.float64))
    assert torch.equal(sample_weights(records, "none"), torch.ones(20, dtype=torch.float64))
    assert build_sampler(records, "none") is None


def _class_rates(records, indices, mode):
    classes = sample_classes(records, mode)[torch.as_tensor(list(indices))]
    return torch.bincount(classes, minlength=4 if mode == "four_class" else 2).double() / len(classes)


def test_four_class_draws_balance_classes():
    records = _records(COUNTS)
    sampler = build_sampler(records, "four_class", num_samples=40_000, seed=0)
    assert isinstance(sampler, DistributedWeightedSampler) and len(sampler) == 40_000
    rates = _class_rates(records, sampler, "four_class")
    assert torch.allclose(rates, torch.full((4,), 0.25, dtype=torch.float64), atol=0.015), rates


def test_binary_draws_balance_real_and_fake():
    records = _records(COUNTS)
    rates = _class_rates(records, build_sampler(records, "binary", num_samples=40_000, seed=1), "binary")
    assert torch.allclose(rates, torch.full((2,), 0.5, dtype=torch.float64), atol=0.015), rates


def test_sampler_default_length_and_seeding():
    records = _records(COUNTS)
    assert len(build_sampler(records, "four_class")) == len(records)
    a = list(build_sampler(records, "four_class", seed=5))
    b = list(build_sampler(records, "four_class", seed=5))
    c = list(build_sampler(records, "four_class", seed=6))
    assert a == b and a != c


def test_unknown_label_is_an_error_naming_the_record():
    records = _records(COUNTS) + [Rec("mystery-video", 1, -1, 1, clip=3)]
    with pytest.raises(ValueError, match=r"'mystery-video' clip 3.*audio_label=-1"):
        sample_weights(records, "four_class")
    # Binary mode needs the overall label only.
    assert sample_weights(records, "binary").shape == (21,)
    with pytest.raises(ValueError, match="mystery"):
        sample_weights([Rec("mystery", -1, 0, 0)], "binary")
    with pytest.raises(ValueError, match="unknown sampling mode"):
        sample_weights(records, "three_class")


@pytest.mark.parametrize("world,total", [(2, 100), (3, 100), (4, 20)])
def test_distributed_ranks_are_disjoint_parts_that_cover_one_draw(world, total):
    weights = sample_weights(_records(COUNTS), "four_class")
    samplers = [DistributedWeightedSampler(weights, total, num_replicas=world, rank=r, seed=3) for r in range(world)]
    parts = [list(s) for s in samplers]
    per_rank = -(-total // world)
    assert all(len(p) == per_rank == len(s) for p, s in zip(parts, samplers))
    draw = samplers[0].draws().tolist()
    assert len(draw) == per_rank * world
    # Position i of the epoch's draw belongs to rank i % world, and only to it.
    interleaved = [parts[i % world][i // world] for i in range(len(draw))]
    assert interleaved == draw
    assert all(s.draws().tolist() == draw for s in samplers)  # the same draw on every rank


def test_distributed_epochs_differ_and_repeat():
    weights = sample_weights(_records(COUNTS), "four_class")
    s = DistributedWeightedSampler(weights, num_replicas=2, rank=1, seed=0)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    s.set_epoch(0)
    assert first != second and list(s) == first
    # seed + epoch: seed 0 at epoch 1 draws what seed 1 draws at epoch 0.
    assert second == list(DistributedWeightedSampler(weights, num_replicas=2, rank=1, seed=1))


def test_distributed_sampler_balances_and_is_left_alone_by_lightning():
    records = _records(COUNTS)
    sampler = build_sampler(records, "four_class", num_samples=40_000, seed=0, num_replicas=4, rank=2)
    assert isinstance(sampler, DistributedWeightedSampler)
    # Lightning wraps any sampler that is not a DistributedSampler in its own distributed wrapper.
    assert isinstance(sampler, DistributedSampler)
    assert len(sampler) == 10_000
    rates = _class_rates(records, sampler, "four_class")
    assert torch.allclose(rates, torch.full((4,), 0.25, dtype=torch.float64), atol=0.025), rates


def test_distributed_sampler_validates_arguments():
    with pytest.raises(ValueError, match="rank"):
        DistributedWeightedSampler(torch.ones(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="non-negative"):
        DistributedWeightedSampler(torch.tensor([1.0, -1.0]), num_replicas=1, rank=0)


def test_seeded_single_process_sampler_is_reproducible_per_epoch():
    records = _records(COUNTS)
    a, b = (build_sampler(records, "four_class", num_samples=50, seed=3) for _ in range(2))
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)
    with_generator = build_sampler(records, "four_class", num_samples=50, generator=torch.Generator().manual_seed(0))
    assert isinstance(with_generator, WeightedRandomSampler)
