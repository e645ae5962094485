"""ClipDataset and HavicDataModule on a tiny clip cache (4 frames of 32 px, 32 mel bins)."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from havic.config import load_config
from havic.data.audio import FBANK_MEAN, FBANK_STD, fit_length
from havic.data.cache import ClipCache, video_key
from havic.data.datamodule import HavicDataModule, augmentations_from_config
from havic.data.datasets import ClipDataset, seed_worker
from havic.data.errors import MediaError
from havic.data.sampling import DistributedWeightedSampler
from havic.data.transforms import AudioAugment, VideoAugment
from tiny_cache import (AUDIO_FRAMES, FRAMES, MELS, RAW_FRAMES, SIZE, TINY, VIDEOS, build_tiny_cache, clip_colour,
                        raw_fbank, tiny_config)

@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return build_tiny_cache(tmp_path_factory.mktemp("clip_cache"))


@pytest.fixture()
def cache(cache_dir) -> ClipCache:
    return ClipCache(cache_dir)


def make_dataset(cache: ClipCache, split: str | None = "train", **kwargs) -> ClipDataset:
    args = dict(num_frames=FRAMES, image_size=SIZE, audio_frames=AUDIO_FRAMES, num_mel_bins=MELS)
    args.update(kwargs)
    return ClipDataset(cache, cache.records(split), **args)


def _video_index(key: str) -> int:
    return [video_key(v.path) for v in VIDEOS].index(key)


# ------------------------------------------------------------------------------------------------
# ClipDataset
# ------------------------------------------------------------------------------------------------


def test_sample_shapes_dtypes_values_and_labels(cache):
    ds = make_dataset(cache, "train")
    assert len(ds) == 8  # 4 videos x 2 clips; the silent video is excluded
    for i in range(len(ds)):
        s = ds[i]
        vi, record = _video_index(s["key"]), ds.records[i]
        v = VIDEOS[vi]
        assert s["video"].shape == (3, FRAMES, SIZE, SIZE) and s["video"].dtype == torch.float32
        assert s["audio"].shape == (AUDIO_FRAMES, MELS) and s["audio"].dtype == torch.float32
        # Video: the cached crops in [0, 1], channels first, no mean/std normalisation.
        colour = torch.tensor(clip_colour(vi, s["clip"]), dtype=torch.float32) / 255
        assert torch.allclose(s["video"], colour[:, None, None, None].expand_as(s["video"]), atol=3 / 255)
        # Audio: the raw fbank (stored as float16) stretched to 64 frames and normalised.
        raw = torch.from_numpy(raw_fbank(vi, s["clip"])).half().float()
        expected = (fit_length(raw, AUDIO_FRAMES, "stretch") - FBANK_MEAN) / FBANK_STD
        assert torch.allclose(s["audio"], expected, atol=1e-5)
        assert s["has_audio"].dtype == torch.bool and bool(s["has_audio"])
        for name in ("label", "audio_label", "video_label"):
            assert s[name].dtype == torch.float32 and s[name].shape == ()
        assert (s["label"].item(), s["audio_label"].item(), s["video_label"].item()) == (
            v.label, v.audio_label, v.video_label)
        assert s["index"] == i and s["clip"] == record.clip and s["key"] == record.key


def test_audio_stretch_hand_computed(cache):
    # Frame 0 of a linear stretch from 318 to 64 frames sits at source position (0 + 0.5) * 318 / 64 - 0.5.
    ds = make_dataset(cache, "val")
    s = ds[0]
    raw = torch.from_numpy(raw_fbank(_video_index(s["key"]), 0)).half().float()
    pos = 0.5 * RAW_FRAMES / AUDIO_FRAMES - 0.5
    lo = int(pos)
    value = raw[lo, 0] + (pos - lo) * (raw[lo + 1, 0] - raw[lo, 0])
    assert s["audio"][0, 0].item() == pytest.approx(((value - FBANK_MEAN) / FBANK_STD).item(), abs=1e-5)


def test_pad_crop_policy_keeps_first_frames(cache):
    ds = make_dataset(cache, "val", length_policy="pad_crop", norm_mean=0.0, norm_std=1.0)
    s = ds[0]
    raw = torch.from_numpy(raw_fbank(_video_index(s["key"]), 0)).half().float()
    assert torch.allclose(s["audio"], raw[:AUDIO_FRAMES], atol=1e-6)


def test_audio_less_clips_are_excluded_and_counted(cache, caplog):
    with caplog.at_level(logging.WARNING, logger="havic.data.datasets"):
        ds = make_dataset(cache, "train")
    assert ds.n_excluded == {"no_audio": 1}
    assert all(r.has_audio for r in ds.records)
    assert "excluded 1 of 9 clips" in caplog.text and "no_audio: 1" in caplog.text


def test_audio_less_clips_kept_on_request(cache):
    ds = make_dataset(cache, "train", require_audio=False)
    assert len(ds) == 9 and not ds.n_excluded
    silent = [i for i, r in enumerate(ds.records) if not r.has_audio]
    assert len(silent) == 1
    s = ds[silent[0]]
    assert not bool(s["has_audio"])
    assert torch.equal(s["audio"], torch.zeros(AUDIO_FRAMES, MELS))


@pytest.mark.parametrize(
    "changes,pattern",
    [
        ({"image_size": 16}, r"image_size: cache 32, requested 16"),
        ({"num_frames": 8}, r"num_frames: cache 4, requested 8"),
        ({"num_mel_bins": 64}, r"num_mel_bins: cache 32, requested 64"),
    ],
)
def test_size_mismatch_with_cache_settings_fails_at_construction(cache, changes, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        make_dataset(cache, "val", **changes)
    assert str(cache.root / "cache.json") in str(err.value)


@pytest.mark.parametrize(
    "changes,pattern",
    [
        ({"image_size": 16}, r"frames of shape \(4, 32, 32, 3\).*image_size=16"),
        ({"num_frames": 8}, r"frames of shape \(4, 32, 32, 3\).*num_frames=8"),
        ({"num_mel_bins": 64}, r"fbank of shape \(318, 32\).*num_mel_bins=64"),
    ],
)
def test_size_mismatch_of_stored_arrays_names_file_and_sizes(cache, changes, pattern):
    cache.settings = {}  # settings that say nothing: the arrays themselves are checked on reading
    ds = make_dataset(cache, "val", **changes)
    with pytest.raises(ValueError, match=pattern) as err:
        ds[0]
    assert ds.records[0].file in str(err.value) and str(cache.root) in str(err.value)


def test_unreadable_entry_is_an_error_naming_the_file(cache_dir, tmp_path):
    import shutil

    copy = Path(shutil.copytree(cache_dir, tmp_path / "cache"))
    cache = ClipCache(copy)
    ds = make_dataset(cache, "test")
    damaged = copy / ds.records[0].file
    damaged.write_bytes(b"not a zip archive")
    with pytest.raises(MediaError, match="unreadable") as err:
        ds[0]
    assert err.value.path == str(damaged) and "test/a.mp4" in err.value.detail
    damaged.unlink()
    with pytest.raises(MediaError) as err:
        ds[0]
    assert err.value.path == str(damaged) and "FileNotFoundError" in err.value.detail


def test_augmented_samples_are_seeded(cache):
    ds = make_dataset(cache, "train", video_augment=VideoAugment(), audio_augment=AudioAugment(noise_p=1.0))
    plain = make_dataset(cache, "train")
    ds.reseed(11)
    a = ds[0]
    ds.reseed(11)
    b = ds[0]
    c = ds[0]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    assert not torch.equal(b["audio"], c["audio"])  # the generator moves on
    assert not torch.equal(a["audio"], plain[0]["audio"])
    assert a["video"].min() >= 0 and a["video"].max() <= 1


def test_dataset_pickles_without_generator(cache):
    import pickle

    ds = make_dataset(cache, "val", video_augment=VideoAugment())
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._generator is None and len(clone) == len(ds)


def test_workers_get_different_augmentation_streams(cache):
    # The same clip served by two workers: each worker's first sample must differ.
    record = cache.records("val")[0]
    ds = ClipDataset(cache, [record, record], num_frames=FRAMES, image_size=SIZE, audio_frames=AUDIO_FRAMES,
                     num_mel_bins=MELS, audio_augment=AudioAugment(noise_p=1.0))
    torch.manual_seed(0)
    loader = DataLoader(ds, batch_size=1, num_workers=2, worker_init_fn=seed_worker)
    first = [b["audio"] for b in loader]
    torch.manual_seed(0)
    again = [b["audio"] for b in loader]
    assert not torch.equal(first[0], first[1])
    assert all(torch.equal(x, y) for x, y in zip(first, again))  # a seeded run repeats


# ------------------------------------------------------------------------------------------------
# HavicDataModule
# ------------------------------------------------------------------------------------------------


def _check_batch(batch, n):
    assert isinstance(batch, dict)
    assert batch["video"].shape == (n, 3, FRAMES, SIZE, SIZE) and batch["video"].dtype == torch.float32
    assert batch["audio"].shape == (n, AUDIO_FRAMES, MELS) and batch["audio"].dtype == torch.float32
    for name in ("label", "audio_label", "video_label"):
        assert batch[name].shape == (n,) and batch[name].dtype == torch.float32
    assert batch["has_audio"].dtype == torch.bool and len(batch["key"]) == n


def test_finetune_datamodule(cache_dir):
    dm = HavicDataModule(tiny_config(cache_dir), "finetune")
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert isinstance(train.video_augment, VideoAugment) and isinstance(train.audio_augment, AudioAugment)
    assert val.video_augment is None and val.audio_augment is None
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, DistributedWeightedSampler) and len(loader.sampler) == len(train) == 8
    batches = list(loader)
    assert len(batches) == 4
    _check_batch(batches[0], 2)
    # Validation: in order, unaugmented, eval batch size.
    val_loader = dm.val_dataloader()
    assert isinstance(val_loader.sampler, SequentialSampler) and val_loader.batch_size == 3
    (vb,) = list(val_loader)
    _check_batch(vb, 2)
    assert vb["key"] == [r.key for r in val.records]
    assert torch.equal(vb["video"][0], val[0]["video"])
    dm.setup("test")
    tb = next(iter(dm.test_dataloader()))
    _check_batch(tb, 3)
    assert tb["index"].tolist() == [0, 1, 2]


def test_finetune_without_augmentation_or_sampler(cache_dir):
    dm = HavicDataModule(tiny_config(cache_dir, "data.augment=false", "data.sampler=none"), "finetune")
    dm.setup("fit")
    assert dm.datasets["train"].video_augment is None and dm.datasets["train"].audio_augment is None
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)


def test_pretrain_datamodule(cache_dir):
    dm = HavicDataModule(tiny_config(cache_dir, "data.batch_size=3"), "pretrain")
    dm.setup("fit")
    assert dm.datasets["train"].video_augment is None and dm.datasets["train"].audio_augment is None
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, RandomSampler) and loader.drop_last
    batches = list(loader)
    assert len(batches) == 2  # 8 clips, batches of 3, the last partial batch dropped
    _check_batch(batches[0], 3)


def test_distributed_world_uses_distributed_sampler(cache_dir):
    dm = HavicDataModule(tiny_config(cache_dir), "finetune")
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, DistributedWeightedSampler)
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (2, 1, 4)


def test_missing_split_names_split_and_available(cache_dir):
    dm = HavicDataModule(tiny_config(cache_dir, "data.val_split=dev"), "finetune")
    with pytest.raises(ValueError, match=r"data.val_split='dev' has no clips.*'test': 4, 'train': 9, 'val': 2"):
        dm.setup("fit")


def test_cache_settings_must_match_config(cache_dir):
    dm = HavicDataModule(tiny_config(cache_dir, "data.jpeg_quality=90"), "finetune")
    with pytest.raises(ValueError, match="jpeg_quality"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="cache_dir"):
        HavicDataModule(load_config([TINY]), "finetune")
    with pytest.raises(ValueError, match="stage"):
        HavicDataModule(tiny_config(cache_dir), "train")


def test_augmentations_from_config_defaults(cache_dir):
    video, audio = augmentations_from_config(tiny_config(cache_dir, "data.audio.norm_mean=-5.0"))
    assert video == VideoAugment()
    assert audio.norm_mean == -5.0 and audio.fill == "fixed" and audio.freq_mask == 20


def test_datamodule_with_workers(cache_dir):
    dm = HavicDataModule(tiny_config(cache_dir, "data.num_workers=2"), "finetune")
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    batches = list(loader)
    assert len(batches) == 4
    _check_batch(batches[0], 2)


def test_trainer_runs_on_the_datamodule(cache_dir):
    import pytorch_lightning as pl

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(MELS, 1)
            self.seen: list[str] = []

        def _step(self, batch, name):
            _check_batch(batch, batch["video"].shape[0])
            self.seen.append(name)
            logits = self.layer(batch["audio"]).mean(dim=(1, 2)) + batch["video"].mean(dim=(1, 2, 3, 4))
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])

        def training_step(self, batch, batch_idx):
            return self._step(batch, "train")

        def validation_step(self, batch, batch_idx):
            self._step(batch, "val")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    probe = Probe()
    trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(probe, datamodule=HavicDataModule(tiny_config(cache_dir), "finetune"))
    assert probe.seen.count("train") == 2 and probe.seen.count("val") == 1


def test_augmentation_settings_come_from_the_config():
    from havic.config import load_config

    cfg = load_config(overrides=["data.augmentation.video.flip_p=0.0", "data.augmentation.audio.fill=official",
                                 "data.augmentation.video.hue=[-0.2,0.2]"])
    video, audio = augmentations_from_config(cfg)
    assert video.flip_p == 0.0 and video.hue == (-0.2, 0.2) and audio.fill == "official"
    assert audio.norm_mean == cfg.data.audio.norm_mean
