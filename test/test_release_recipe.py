"""The real-release recipe (configs/synthrad2025_task1.toml): its layout check, its overlays, the time budget."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from engine.manifest import DEFAULT_MANIFEST, training_spec
from sct_testing import write_paired_case
from training.config import load_config
from training.errors import TrainingError
from training.train import check_network_grid, find_training_cases, train, with_fold

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO / "configs" / "synthrad2025_task1.toml"
FINETUNE = REPO / "configs" / "synthrad2025_finetune.toml"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A folder holding Task1/<region>/<id>/{mr,ct,mask}.mha, as the organisers ship it."""
    root = tmp_path_factory.mktemp("release")
    for region in ("HN", "TH", "AB"):
        for index in range(2):
            write_paired_case(root, region, f"1{region}A00{index}", seed=index)
    return root


def release_config(root: Path, *extra: str):
    return load_config(RELEASE, [f"data.root={root}", 'data.split=""', f"manifest={DEFAULT_MANIFEST}", *extra])


def test_the_release_recipe_is_the_l_preset_with_the_anatomy_loss_on_the_gpu_settings():
    config = load_config(RELEASE)
    assert config.model.preset == "L" and config.model.arch == "flexible_unet" and config.model.backbone == "resnet34"
    assert config.data.layout == "release" and config.optim.amp and config.data.crop >= 256
    assert config.loss.lambda_anatomy > 0 and config.loss.anatomy_checkpoint
    spec = training_spec(REPO / config.manifest, "drifting", config.settings)
    check_network_grid(config, spec)  # the manifest grid carries the encoder's stride
    defaults = json.loads((REPO / config.manifest).read_text())["defaults"]
    assert all(defaults.get(key) != value for key, value in config.settings.items())  # states only what differs


@pytest.mark.parametrize("below", ["", "Task1"])
def test_the_release_recipe_reads_the_release_folder_or_its_task1_folder(release, below):
    cases = find_training_cases(release_config(release / below if below else release))
    assert [(case.name, region) for case, region in cases] == sorted(
        (f"1{r}A00{i}", r) for r in ("HN", "TH", "AB") for i in range(2)
    )
    only_hn = find_training_cases(release_config(release, 'data.regions=["HN"]'))
    assert {region for _, region in only_hn} == {"HN"}


def test_the_release_recipe_refuses_a_missing_or_wrong_folder_with_one_clear_line(release, tmp_path, caplog):
    from training.train import main

    with pytest.raises(TrainingError, match=r"data.root .*nothing_here: no such folder.*Task1/<region>/<id>"):
        find_training_cases(release_config(tmp_path / "nothing_here"))
    flat = tmp_path / "flat"
    (flat / "1HNA000").mkdir(parents=True)
    (flat / "1HNA000" / "mr.nii.gz").write_bytes(b"")
    with pytest.raises(TrainingError, match=r"no region folder for HN, TH, AB .*it holds: 1HNA000"):
        find_training_cases(release_config(flat))
    partial = tmp_path / "partial"
    write_paired_case(partial, "HN", "1HNA000")
    write_paired_case(partial, "TH", "1THA000")
    with pytest.raises(TrainingError, match="no region folder for AB"):
        find_training_cases(release_config(partial))
    (partial / "Task1" / "AB" / "1ABA000").mkdir(parents=True)
    (partial / "Task1" / "AB" / "1ABA000" / "ct.nii.gz").write_bytes(b"")
    with pytest.raises(TrainingError, match=r"1ABA000: missing mr.mha, ct.mha, mask.mha \(it holds: ct.nii.gz\)"):
        find_training_cases(release_config(partial))

    caplog.set_level(logging.ERROR)
    argv = ["--config", str(RELEASE), "--set", f"data.root={tmp_path / 'nothing_here'}", "--set", 'data.split=""']
    assert main([*argv, "--set", f"run.out_dir={tmp_path / 'out'}"]) == 2
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and "nothing_here: no such folder" in errors[0].getMessage()
    assert not (tmp_path / "out").exists()


def test_the_finetune_overlay_starts_each_fold_from_its_own_model(release, tmp_path):
    layered = load_config([RELEASE, REPO / "configs" / "regions" / "HN.toml", FINETUNE])
    assert layered.data.regions == ("HN",) and layered.model.preset == "L" and layered.optim.steps < 200000
    folded = with_fold(
        load_config([RELEASE, REPO / "configs" / "regions" / "HN.toml", FINETUNE], ["data.split=s.json"]), 3
    )
    assert folded.run.init_from == "runs/synthrad2025_L/fold_3/best.pt"
    assert folded.run.out_dir == "runs/region_HN/fold_3"
    with pytest.raises(TrainingError, match="names a fold"):
        train(release_config(release, f'run.init_from="{tmp_path}/fold_{{fold}}/best.pt"'))


def test_a_time_budget_stops_training_validates_and_saves(release, tmp_path):
    out = tmp_path / "budget"
    config = load_config(
        None,
        [
            "model.kind=l1",
            "model.width=4",
            "model.depth=2",
            "data.crop=32",
            "data.samples_per_epoch=8",
            "data.val_per_region=1",
            'data.regions=["TH"]',
            "optim.batch_size=2",
            "optim.steps=50",
            "run.val_every=100",
            "run.log_every=100",
            "run.threads=1",
            "run.max_train_seconds=1e-9",
            'settings={"context_slices": 3, "divisible_by": 4}',
            f"data.root={release}",
            f"run.out_dir={out}",
            f"manifest={DEFAULT_MANIFEST}",
        ],
    )
    summary = train(config)
    assert summary["steps"] == 1 and summary["best_step"] == 1 and summary["train_seconds"] >= 0.0
    assert torch.load(out / "best.pt", weights_only=False)["scores"]["val_mae"] > 0  # validated when it stopped
