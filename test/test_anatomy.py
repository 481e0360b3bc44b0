"""The anatomy-aware loss (training/anatomy.py): tissue classes, the loss, drift in its features, the schedule."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.manifest import DEFAULT_MANIFEST
from modelspec import hu_to_normalised
from sct_testing import write_paired_case
from training.anatomy import TISSUES, AnatomyLoss, load_tissue_net, tissue_classes, train_tissue_net
from training.config import load_config
from training.dataset import TrainingVolume
from training.drifting import DriftConfig, DriftObjective, drift_field
from training.errors import TrainingError
from training.train import train

WINDOW = (-1024.0, 3071.0)
HU = {"air": -1000.0, "lung": -800.0, "fat": -100.0, "soft tissue": 40.0, "bone": 1000.0}


def synthetic_ct(seed: int, shape=(8, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """CT in HU of known classes: a body of soft tissue with a fat rim, a lung, a bone disc and an air pocket."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    ct = np.full(shape, HU["air"], dtype=np.float32)
    mask = np.zeros(shape, dtype=np.uint8)
    for z in range(depth):
        cy, cx = height / 2 + rng.uniform(-3, 3), width / 2 + rng.uniform(-3, 3)
        radius = ((yy - cy) / (0.42 * height)) ** 2 + ((xx - cx) / (0.45 * width)) ** 2
        body = radius < 1.0
        mask[z] = body
        ct[z][body] = HU["fat"]
        ct[z][radius < 0.7] = HU["soft tissue"]
        for tissue, size in (("lung", 7.0), ("bone", 4.0), ("air", 2.5)):
            py, px = cy + rng.uniform(-10, 10), cx + rng.uniform(-10, 10)
            ct[z][((yy - py) ** 2 + (xx - px) ** 2 < size**2) & (radius < 0.6)] = HU[tissue]
    ct += rng.normal(0, 8, shape).astype(np.float32)
    return ct, mask


def volume(seed: int) -> TrainingVolume:
    ct, mask = synthetic_ct(seed)
    normalised = hu_to_normalised(ct, WINDOW).astype(np.float16)
    return TrainingVolume(f"v{seed}", "TH", Path("."), np.zeros_like(normalised), normalised, mask, None)


@pytest.fixture(scope="module")
def tissue_net(tmp_path_factory) -> Path:
    """A small tissue network trained on synthetic CTs (seconds): the checkpoint path."""
    out = tmp_path_factory.mktemp("anatomy") / "tissue.pt"
    torch.manual_seed(0)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        train_tissue_net([volume(s) for s in range(3)], [volume(9)], WINDOW, out, steps=250, batch_size=8, crop=32)
    return out


def test_tissue_classes_follow_the_ct_number_edges():
    hu = torch.tensor([-1024.0, -851.0, -850.0, -351.0, -350.0, -31.0, -30.0, 199.0, 200.0, 3071.0])
    assert tissue_classes(hu).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert TISSUES == ("air", "lung", "fat", "soft tissue", "bone")


def test_the_tissue_network_finds_the_classes_of_a_synthetic_ct(tissue_net):
    net, record = load_tissue_net(tissue_net)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    ct, _ = synthetic_ct(seed=42)
    truth = tissue_classes(torch.from_numpy(ct))
    with torch.no_grad():
        guess = net(torch.from_numpy(hu_to_normalised(ct, WINDOW).astype(np.float32))[:, None]).argmax(1)
    assert float((guess == truth).float().mean()) > 0.97
    for index, name in enumerate(TISSUES):
        found = guess[truth == index] == index
        assert float(found.float().mean()) > 0.8, name  # each class, rare bone and lung included
    assert record["scores"]["accuracy"] > 0.97 and len(record["feature_scale"]) == 4


def _slice_with_bone(shift: int) -> torch.Tensor:
    ct = np.full((1, 1, 64, 64), HU["soft tissue"], dtype=np.float32)
    ct[..., 24:40, 20 + shift : 32 + shift] = HU["bone"]
    return torch.from_numpy(hu_to_normalised(ct, WINDOW).astype(np.float32))


def test_the_anatomy_loss_is_zero_for_identical_inputs_and_grows_with_a_shifted_bone(tissue_net):
    loss = AnatomyLoss(tissue_net, ct_window_hu=WINDOW)
    target = _slice_with_bone(0)
    mask = torch.ones_like(target)
    assert float(loss(target.clone(), target, mask)) == 0.0
    values = [float(loss(_slice_with_bone(shift), target, mask)) for shift in (1, 2, 4, 8)]
    assert all(later > earlier for earlier, later in zip(values, values[1:])), values
    assert values[0] > 0
    pred = _slice_with_bone(2).requires_grad_(True)
    loss(pred, target, mask).backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    assert all(p.grad is None for p in loss.net.parameters())
    outside = torch.zeros_like(mask)  # only the body counts: a difference outside it costs nothing
    assert float(loss(_slice_with_bone(4), target, outside)) == 0.0
    with pytest.raises(TrainingError, match="HU window"):
        AnatomyLoss(tissue_net, ct_window_hu=(-1000.0, 2000.0))


def test_the_drift_field_in_anatomy_features_is_zero_when_positives_and_negatives_coincide(tissue_net):
    config = DriftConfig(
        encoder="anatomy",
        features=(),
        encoder_layers=(0, 1, 2, 3),
        anatomy_checkpoint=str(tissue_net),
        n_pos=6,
        n_neg=6,
    )
    objective = DriftObjective(config, str(DEFAULT_MANIFEST))
    generator = torch.Generator().manual_seed(0)
    generated = torch.rand(6, 1, 32, 32, generator=generator) * 0.4 - 0.6
    real = torch.rand(6, 1, 32, 32, generator=generator) * 0.4 - 0.5
    x, y = objective.features(generated), objective.features(real)
    assert {name.split("/")[1] for name in x} == {"layer0", "layer1", "layer2", "layer3"}
    for name in x:
        field, _ = drift_field(x[name], y[name], y[name], config.taus)
        assert float(field.abs().max()) == 0.0, name
        moved, _ = drift_field(x[name], y[name], None, config.taus)
        assert float(moved.abs().max()) > 0.1, name


def test_the_drift_follows_its_schedule_on_top_of_l1_and_anatomy(tissue_net):
    config = DriftConfig(
        encoder="anatomy",
        features=("pixels",),
        encoder_layers=(1, 2),
        anatomy_checkpoint=str(tissue_net),
        lambda_anatomy=2.0,
        n_pos=4,
        n_neg=4,
        patch_size=16,
        drift_start=3,
        drift_ramp=2,
    )
    objective = DriftObjective(config, str(DEFAULT_MANIFEST), ct_window_hu=WINDOW)
    assert [objective.drift_weight(step) for step in range(7)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    target = _slice_with_bone(0).repeat(2, 1, 1, 1)
    pred = _slice_with_bone(3).repeat(2, 1, 1, 1)
    mask = torch.ones_like(target)
    objective.step = 0
    total, terms = objective(pred, target, mask, torch.Generator().manual_seed(0))
    assert terms.drift == 0.0 and not terms.v2 and terms.anatomy > 0
    assert total.item() == pytest.approx(10 * terms.l1 + 2.0 * terms.anatomy, rel=1e-5)
    objective.step = 5
    total, terms = objective(pred, target, mask, torch.Generator().manual_seed(0))
    assert terms.drift > 0 and terms.drift_weight == 1.0 and any(k.startswith("v2/encoder/") for k in terms.v2)


def test_the_trainer_logs_the_anatomy_loss_and_refuses_a_missing_network(tissue_net, tmp_path):
    root = tmp_path / "data"
    for index in range(3):
        write_paired_case(root, "TH", f"1THA00{index}", seed=index)
    base = [
        "model.width=4",
        "model.depth=2",
        "data.crop=32",
        "data.samples_per_epoch=8",
        "data.val_per_region=1",
        "optim.batch_size=4",
        "loss.patch_size=16",
        "loss.n_pos=4",
        "loss.n_neg=4",
        "loss.features=[]",
        'loss.encoder="anatomy"',
        "loss.encoder_layers=[1,2]",
        "loss.lambda_anatomy=1.0",
        "loss.drift_start=2",
        "run.val_every=4",
        "run.log_every=1",
        "run.threads=1",
        "optim.steps=4",
        'settings={"spacing_xy_mm": [1.0, 1.0], "context_slices": 3, "divisible_by": 8}',
        f"data.root={root}",
        f"manifest={DEFAULT_MANIFEST}",
    ]
    out = tmp_path / "run"
    train(load_config(None, [*base, f"run.out_dir={out}", f"loss.anatomy_checkpoint={tissue_net}"]))
    with open(out / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert all(float(row["anatomy"]) > 0 for row in rows)
    assert [float(row["drift_weight"]) for row in rows] == [0.0, 0.0, 1.0, 1.0]  # steps 1-2 before drift_start
    assert float(rows[0]["drift"]) == 0.0 and float(rows[-1]["drift"]) > 0
    missing = tmp_path / "none.pt"
    with pytest.raises(TrainingError, match="no anatomy network there"):
        train(load_config(None, [*base, f"run.out_dir={tmp_path / 'x'}", f"loss.anatomy_checkpoint={missing}"]))
    assert not (tmp_path / "x").exists()  # refused before any data loaded or folder was made


def test_the_anatomy_command_trains_on_the_configs_training_cases(tmp_path):
    from training.anatomy import main

    root = tmp_path / "data"
    for index in range(3):
        write_paired_case(root, "TH", f"1THA00{index}", seed=index)
    out = tmp_path / "tissue.pt"
    argv = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "drifting.toml")]
    argv += ["--set", f"data.root={root}", "--set", 'data.split=""', "--set", "data.val_per_region=1"]
    argv += ["--set", f"manifest={DEFAULT_MANIFEST}", "--steps", "3", "--batch-size", "2", "--crop", "32"]
    assert main([*argv, "--out", str(out), "--threads", "1"]) == 0
    record = torch.load(out, weights_only=False)
    assert len(record["cases"]) == 2 and record["training"]["steps"] == 3  # the validation case never trains it
    with pytest.raises(SystemExit):  # no --out and no loss.anatomy_checkpoint in the config: nowhere to write
        main([*argv, "--threads", "1"])
