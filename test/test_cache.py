"""The preprocessing cache and the training loader: exact content, exact invalidation, no image read once cached."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader

from engine.manifest import DEFAULT_MANIFEST, training_spec
from modelspec import Normalisation
from sct_testing import write_paired_case
from training.cache import CacheError, build_cache, load_cached
from training.dataset import SliceCrops, TrainingVolume, find_cases, load_volume

SETTINGS = {"spacing_xy_mm": [1.0, 1.0], "context_slices": 3, "divisible_by": 4}


@pytest.fixture()
def cases(tmp_path) -> list[tuple[Path, str]]:
    for index in range(3):
        write_paired_case(tmp_path / "data", "TH", f"1THA00{index}", shape=(6, 30, 26), seed=index)
    write_paired_case(tmp_path / "data", "HN", "1HNA000", shape=(6, 30, 26), seed=9)
    return find_cases(tmp_path / "data")


@pytest.fixture()
def spec():
    return training_spec(DEFAULT_MANIFEST, "one_step", SETTINGS)


def test_cached_arrays_equal_the_in_memory_preprocessing_bit_for_bit(cases, spec, tmp_path):
    report = build_cache(cases, spec, tmp_path / "cache", workers=2, progress=False)
    assert (report.built, report.reused) == (4, 0) and report.bytes > 0
    for case_dir, region in cases:
        cached = load_cached(case_dir, region, spec, tmp_path / "cache")
        direct = load_volume(case_dir, region, spec, compact=True)
        for name in ("mr", "ct", "mask"):
            got, want = getattr(cached, name), getattr(direct, name)
            assert isinstance(got, np.memmap) and got.dtype == want.dtype and np.array_equal(got, want), name


def test_only_stale_cases_rebuild_after_a_file_or_a_setting_changes(cases, spec, tmp_path):
    cache = tmp_path / "cache"
    build_cache(cases, spec, cache, progress=False)
    assert build_cache(cases, spec, cache, progress=False).built == 0
    # one case's MR replaced (new content, new modification time): that case alone rebuilds, with the new content
    case_dir = cases[1][0]
    image = sitk.ReadImage(str(case_dir / "mr.mha"))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) * 2.0 + 7.0, str(case_dir / "mr.mha"))
    stat = (case_dir / "mr.mha").stat()
    os.utime(case_dir / "mr.mha", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(CacheError, match="stale"):
        load_cached(case_dir, cases[1][1], spec, cache)
    report = build_cache(cases, spec, cache, progress=False)
    assert (report.built, report.reused) == (1, 3)
    fresh = load_volume(case_dir, cases[1][1], spec, compact=True)
    assert np.array_equal(load_cached(case_dir, cases[1][1], spec, cache).mr, fresh.mr)
    # a setting that shapes the arrays: everything rebuilds; one that does not (the sampler): nothing
    other = dataclasses.replace(spec, normalisation=Normalisation((1.0, 99.0), "zscore", 0.0))
    assert build_cache(cases, other, cache, progress=False).built == 4
    assert build_cache(cases, dataclasses.replace(other, sampler={"seed": 5}), cache, progress=False).built == 0


def test_an_interrupted_build_resumes_and_leaves_no_half_written_case(cases, spec, tmp_path):
    cache = tmp_path / "cache"
    build_cache(cases, spec, cache, progress=False)
    (cache / cases[0][0].name / "meta.json").unlink()  # died before the case was complete
    (cache / ".1THA002.tmp-123").mkdir()  # a half-written case of a killed worker
    report = build_cache(cases, spec, cache, progress=False)
    assert (report.built, report.reused) == (1, 3)
    assert not list(cache.glob(".*"))


def test_a_cached_epoch_opens_no_image_file(cases, spec, tmp_path, monkeypatch):
    build_cache(cases, spec, tmp_path / "cache", progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("an image file was read")

    monkeypatch.setattr(sitk, "ReadImage", refuse)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", refuse)
    volumes = [load_cached(d, r, spec, tmp_path / "cache") for d, r in cases]
    crops = SliceCrops(volumes, 3, 16, 8, 0.0, seed=0)
    assert all(crops[i]["mr"].shape == (3, 16, 16) for i in range(len(crops)))


def test_the_loader_yields_the_same_batches_for_a_seed_with_or_without_workers(cases, spec, tmp_path):
    build_cache(cases, spec, tmp_path / "cache", progress=False)
    volumes = [load_cached(d, r, spec, tmp_path / "cache") for d, r in cases]

    def batches(workers: int, seed: int) -> list[torch.Tensor]:
        crops = SliceCrops(volumes, 3, 16, 12, 0.0, seed=seed, region_balanced=True)
        loader = DataLoader(
            crops, batch_size=4, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(seed)
        )
        return [batch["mr"] for batch in loader]

    first, threaded, other = batches(0, 1), batches(2, 1), batches(0, 2)
    assert all(torch.equal(a, b) for a, b in zip(first, threaded, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_region_balanced_crops_draw_each_region_equally_often():
    """Five thorax volumes and one head-and-neck volume: balanced, half the crops are HN; otherwise about 1/6."""

    def volume(region: str, value: float) -> TrainingVolume:
        mr = np.full((3, 20, 20), value, dtype=np.float16)
        return TrainingVolume(region, region, Path(region), mr, np.zeros_like(mr), np.ones(mr.shape, np.uint8), None)

    volumes = [volume("TH", 0.0) for _ in range(5)] + [volume("HN", 5.0)]

    def share_of_hn(balanced: bool) -> float:
        crops = SliceCrops(volumes, 1, 8, 600, 0.0, seed=3, region_balanced=balanced)
        return float(np.mean([float(crops[i]["mr"].mean()) == 5.0 for i in range(len(crops))]))

    assert 0.42 < share_of_hn(True) < 0.58
    assert 0.10 < share_of_hn(False) < 0.24


def test_an_extra_root_gets_its_share_of_the_crops_whatever_its_size(tmp_path):
    """Two main volumes and six extra ones: at extra_share 1/3 a third of the crops is extra (not 6/8); the
    trainer marks volumes extra by their folder, and a share with no extra root is refused."""
    from training.config import load_config
    from training.train import TrainingError, find_training_cases, is_extra_volume

    def volume(folder: Path, value: float) -> TrainingVolume:
        mr = np.full((3, 20, 20), value, dtype=np.float16)
        return TrainingVolume("x", "HN", folder, mr, np.zeros_like(mr), np.ones(mr.shape, np.uint8), None)

    main, extra = tmp_path / "main", tmp_path / "extra"
    volumes = [volume(main / "HN" / "a", 0.0), volume(main / "HN" / "b", 0.0)] + [
        volume(extra / "HN" / f"t{i}", 5.0) for i in range(6)
    ]
    config = load_config(None, [f"data.root={main}", f"data.extra_root={extra}", "data.extra_share=0.333"])
    flags = [is_extra_volume(v, config) for v in volumes]
    assert flags == [False, False] + [True] * 6

    def share(extra_share: float) -> float:
        crops = SliceCrops(volumes, 1, 8, 900, 0.0, seed=3, extra=flags, extra_share=extra_share)
        return float(np.mean([float(crops[i]["mr"].mean()) == 5.0 for i in range(len(crops))]))

    assert 0.28 < share(0.333) < 0.39
    assert 0.68 < share(0.0) < 0.82  # without a share every volume is alike
    with pytest.raises(ValueError, match="both"):
        SliceCrops(volumes[2:], 1, 8, 10, 0.0, extra=flags[2:], extra_share=0.5)
    with pytest.raises(TrainingError, match="needs data.extra_root"):
        find_training_cases(load_config(None, [f"data.root={tmp_path}", "data.extra_share=0.5"]))


def test_the_trainer_reads_its_training_volumes_from_the_cache_with_identical_results(cases, tmp_path):
    from training.config import load_config
    from training.train import train

    tiny = [
        "model.width=4", "model.depth=2", "data.crop=16", "data.samples_per_epoch=8", "data.val_per_region=1",
        "optim.batch_size=4", "loss.patch_size=8", "loss.n_pos=4", "loss.n_neg=4", "run.val_every=3",
        "run.log_every=3", "run.checkpoint_every=3", "run.threads=1", "optim.steps=3", "model.kind=l1",
        f"settings={json.dumps(SETTINGS)}", f"data.root={tmp_path / 'data'}", f"manifest={DEFAULT_MANIFEST}",
    ]  # fmt: skip
    train(load_config(None, tiny + [f"run.out_dir={tmp_path / 'plain'}"]))
    train(load_config(None, tiny + [f"run.out_dir={tmp_path / 'cached'}", f"data.cache={tmp_path / 'cache'}"]))
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 3  # the training cases only (one validates)
    plain = torch.load(tmp_path / "plain" / "last.pt", weights_only=False)["model"]
    cached = torch.load(tmp_path / "cached" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(plain[key], cached[key]) for key in plain)


def test_flip_augmentation_mirrors_mr_ct_and_mask_together_and_leaves_the_draws_alone():
    """flip_probability 1 gives the same crops as 0, each mirrored left-right (MR stack, CT and mask alike); at 0.5
    about half the crops are mirrored, and a probability outside [0, 1] is refused."""
    rng = np.random.default_rng(0)
    mr = rng.normal(size=(5, 24, 30)).astype(np.float16)
    ct = rng.normal(size=(5, 24, 30)).astype(np.float16)
    mask = (rng.random((5, 24, 30)) > 0.3).astype(np.uint8)
    volumes = [TrainingVolume("x", "HN", Path("x"), mr, ct, mask, None)]

    def crops(probability: float) -> SliceCrops:
        return SliceCrops(volumes, 3, 16, 40, 0.0, seed=5, flip_probability=probability)

    plain, mirrored, half = crops(0.0), crops(1.0), crops(0.5)
    flipped = 0
    for index in range(40):
        a, b, c = plain[index], mirrored[index], half[index]
        for key in ("mr", "ct", "mask"):
            assert torch.equal(b[key], torch.flip(a[key], dims=[-1])), key
        flipped += int(not torch.equal(c["ct"], a["ct"]))
    assert 10 <= flipped <= 30
    with pytest.raises(ValueError, match="flip_probability"):
        crops(1.5)
