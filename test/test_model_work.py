"""The model work's foundations: split files, the untouched test split, frozen feature encoders, the feature bank,
grouped drift fields and bf16 training steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sct_testing import write_paired_case
from training.splits import SplitError, add_folds, create_split, extend_split, load_split, write_split

REPO = Path(__file__).resolve().parents[1]
COMMITTED_SPLIT = REPO / "configs" / "splits" / "phantoms_final.json"


def _cases(root: Path, per_region: int = 6) -> list[tuple[Path, str]]:
    from training.dataset import find_cases

    for region in ("HN", "TH"):
        for index in range(per_region):
            write_paired_case(root, region, f"1{region}A{index:03d}", shape=(5, 24, 20), seed=index)
    return find_cases(root)


# --- splits -------------------------------------------------------------------------------------------------------


def test_created_splits_are_disjoint_stable_and_cover_every_case(tmp_path):
    cases = _cases(tmp_path)
    first = create_split(cases, val_per_region=1, test_per_region=2, seed=3)
    again = create_split(list(reversed(cases)), val_per_region=1, test_per_region=2, seed=3)
    assert first.assignments == again.assignments  # the order cases are found in does not matter
    assert set(first.assignments) == {c[0].name for c in cases}
    for region, row in first.counts().items():
        assert row == {"train": 3, "val": 1, "test": 2}, region
    write_split(first, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json").assignments == first.assignments


def test_extending_a_split_keeps_every_assignment_and_sends_new_cases_to_test(tmp_path):
    cases = _cases(tmp_path)
    old = create_split(cases[:4] + cases[6:10], val_per_region=1, test_per_region=0, seed=0)
    new = extend_split(old, cases, test_per_region=1)
    assert all(new.assignments[c] == where for c, where in old.assignments.items())
    added = {c: new.assignments[c] for c in set(new.assignments) - set(old.assignments)}
    assert sorted(added.values()) == ["test", "test", "train", "train"]


def test_the_committed_phantom_split_is_disjoint_with_three_test_cases_per_region():
    split = load_split(COMMITTED_SPLIT)
    ids = {name: set(split.ids(name)) for name in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    for region, row in split.counts().items():
        assert row["test"] >= 3 and row["val"] >= 2 and row["train"] >= 5, region


def test_a_broken_split_file_is_one_clear_error(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"schema_version": 1, "cases": {"A": {"region": "HN", "split": "holdout"}}}))
    with pytest.raises(SplitError, match="split in"):
        load_split(path)


def _centred_split(folds: int = 3, seed: int = 0):
    """A split of ids from two regions and three centres (no files needed: folds read ids only)."""
    from training.splits import Split

    assignments, regions = {}, {}
    for region, centres in (("HN", "AAAAABBBBCCC"), ("TH", "AAAABBBBBBB")):
        for index, centre in enumerate(centres):
            case = f"1{region}{centre}{index:03d}"
            assignments[case] = "test" if index % 5 == 4 else "train"
            regions[case] = region
    return add_folds(Split(assignments, regions), folds, seed)


def test_folds_are_deterministic_stratified_and_never_touch_the_test_split():
    split = _centred_split()
    assert split.folds == _centred_split().folds and split.folds != _centred_split(seed=1).folds
    pool = {c for c, where in split.assignments.items() if where != "test"}
    held = [set(fold) for fold in split.folds]
    assert set().union(*held) == pool and sum(map(len, held)) == len(pool)  # disjoint, cover the pool, no test case
    for region in ("HN", "TH"):
        for centre in "ABC":
            group = [c for c in pool if c[1:3] == region and c[3] == centre]
            per_fold = [len(fold & set(group)) for fold in held]
            assert max(per_fold) - min(per_fold) <= 1, (region, centre, per_fold)
        per_fold = [sum(1 for c in fold if split.regions[c] == region) for fold in held]
        assert max(per_fold) - min(per_fold) <= 1, (region, per_fold)
    train, val = split.fold(1)
    assert set(val) == held[1] and set(train) == pool - held[1]


@pytest.mark.parametrize("seed", range(8))
def test_every_seeds_folds_spread_each_centre_evenly(seed):
    """A shuffle that ignored centres would put two of a centre's cases in one fold for some seed."""
    split = _centred_split(seed=seed)
    for region in ("HN", "TH"):
        for centre in "ABC":
            group = {c for c, w in split.assignments.items() if w != "test" and c[1:3] == region and c[3] == centre}
            per_fold = [len(set(fold) & group) for fold in split.folds]
            assert max(per_fold) - min(per_fold) <= 1, (region, centre, per_fold)


def test_fold_files_round_trip_and_broken_folds_are_one_clear_error(tmp_path):
    split = _centred_split()
    write_split(split, tmp_path / "folds.json")
    assert load_split(tmp_path / "folds.json").folds == split.folds
    data = json.loads((tmp_path / "folds.json").read_text())
    test_case = next(c for c, e in data["cases"].items() if e["split"] == "test")
    for change, words in (
        (lambda d: d["folds"][0].append(d["folds"][1][0]), "more than one fold"),
        (lambda d: d["folds"][0].append(test_case), "is a test case"),
        (lambda d: d["folds"][2].pop(), "in no fold"),
    ):
        broken = json.loads(json.dumps(data))
        change(broken)
        (tmp_path / "broken.json").write_text(json.dumps(broken))
        with pytest.raises(SplitError, match=words):
            load_split(tmp_path / "broken.json")
    with pytest.raises(SplitError, match="fold 3 does not exist"):
        split.fold(3)


def test_the_trainer_fold_option_trains_on_the_other_folds_in_its_own_folder(tmp_path):
    from training.config import load_config
    from training.splits import Split
    from training.train import training_cases, with_fold

    cases = _cases(tmp_path / "data")
    base = create_split(cases, val_per_region=1, test_per_region=1, seed=0)
    split = add_folds(Split(base.assignments, base.regions), 2, seed=0)
    write_split(split, tmp_path / "folds.json")
    config = with_fold(load_config(None, [f"data.split={tmp_path / 'folds.json'}", "run.out_dir=runs/x"]), 1)
    train, val = training_cases(cases, config)
    assert sorted(c[0].name for c in val) == sorted(split.folds[1])
    assert sorted(c[0].name for c in train) == sorted(split.folds[0])
    assert config.run.out_dir == str(Path("runs/x") / "fold_1")
    with pytest.raises(ValueError, match="needs data.split"):
        with_fold(load_config(None, []), 0)


def test_benchmarks_refuse_a_case_used_for_training_or_selection(tmp_path):
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from compare_models import held_out_cases, held_out_layout

    cases = _cases(tmp_path / "data")
    split = create_split(cases, val_per_region=1, test_per_region=2, seed=0)
    write_split(split, tmp_path / "split.json")
    chosen = held_out_cases(tmp_path / "data", tmp_path / "split.json")
    assert sorted(c[0].name for c in chosen) == split.ids("test")
    for forbidden in (split.ids("train")[0], split.ids("val")[0]):
        with pytest.raises(SplitError, match="refusing to report"):
            held_out_layout(tmp_path / "data", tmp_path / "out", tmp_path / "split.json", [forbidden])
    root = held_out_layout(tmp_path / "data", tmp_path / "out", tmp_path / "split.json")
    assert sorted(p.name for p in root.glob("Task1/*/*")) == split.ids("test")


def test_paired_difference_pairs_cases_by_id_and_reports_its_spread():
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from compare_models import paired_difference

    reference = {"a": 50.0, "b": 30.0, "c": 40.0, "only_here": 1.0}
    other = {"c": 39.0, "a": 48.0, "b": 30.5}  # another order, one case missing: pairs by id
    diff = paired_difference(reference, other)
    assert diff["cases"] == 3 and diff["lower_in"] == 2
    assert diff["mean"] == pytest.approx((-2.0 + 0.5 - 1.0) / 3)
    assert diff["standard_error"] == pytest.approx(np.std([-2.0, 0.5, -1.0], ddof=1) / np.sqrt(3))


def test_ensemble_summary_measures_gains_against_the_mean_fold_and_its_noise():
    from experiments.ensemble_summary import summarise

    def entry(mae: float, seconds: float, per_case: list[float]) -> dict:
        return {"overall": {"mae": mae}, "seconds_per_case": seconds, "case_mae": dict(zip("abc", per_case))}

    comparison = {
        "f0": entry(42.0, 10.0, [40.0, 42.0, 44.0]),
        "f1": entry(40.0, 12.0, [38.0, 40.0, 42.0]),
        "ens": entry(39.5, 22.0, [37.0, 40.0, 41.5]),  # 1.5 below the mean fold; the folds' SD is 1.41
        "tiny": entry(40.5, 11.0, [38.5, 40.5, 42.5]),
    }
    summary = summarise(comparison, ["f0", "f1"])
    assert summary["folds"]["best"] == "f1" and summary["folds"]["std_mae"] == pytest.approx(2**0.5)
    ens, tiny = summary["models"]["ens"], summary["models"]["tiny"]
    assert ens["wins_by_more_than_fold_noise"] and not tiny["wins_by_more_than_fold_noise"]
    assert ens["mae_change_vs_mean_fold_percent"] == pytest.approx(-1.5 / 41 * 100)
    assert ens["time_vs_mean_fold"] == pytest.approx(2.0)
    assert ens["paired_vs_best_fold"]["mean"] == pytest.approx(-0.5) and ens["paired_vs_best_fold"]["lower_in"] == 2


def test_the_trainer_never_loads_a_test_case(tmp_path, monkeypatch):
    import training.train as train_module

    cases = _cases(tmp_path / "data", per_region=4)
    split = create_split(cases, val_per_region=1, test_per_region=1, seed=0)
    write_split(split, tmp_path / "split.json")
    loaded: list[str] = []
    real = train_module.load_volume

    def recording(case_dir, *args, **kwargs):
        loaded.append(case_dir.name)
        return real(case_dir, *args, **kwargs)

    monkeypatch.setattr(train_module, "load_volume", recording)
    from training.config import load_config

    config = load_config(
        None,
        [
            f"data.root={json.dumps(str(tmp_path / 'data'))}",
            'data.regions=["HN", "TH"]',
            f"data.split={json.dumps(str(tmp_path / 'split.json'))}",
            "model.width=4",
            "model.depth=2",
            "data.crop=16",
            "data.samples_per_epoch=4",
            "optim.batch_size=2",
            "optim.steps=2",
            "run.val_every=2",
            "run.log_every=1",
            "run.threads=1",
            "settings.spacing_xy_mm=null",
            "settings.divisible_by=4",
            f"run.out_dir={json.dumps(str(tmp_path / 'run'))}",
            "loss.patch_size=8",
            "loss.n_pos=4",
            "loss.n_neg=4",
        ],
    )
    train_module.train(config)
    assert set(loaded) == set(split.ids("train")) | set(split.ids("val"))
    assert not set(loaded) & set(split.ids("test"))


# --- drift in groups ------------------------------------------------------------------------------------------------


def test_a_grouped_drift_field_equals_one_field_per_group():
    from training.drifting import drift_field

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 12, 7, generator=g), torch.randn(5, 20, 7, generator=g) + 0.5
    total, raw = drift_field(x, y)
    for group in range(5):
        single, single_raw = drift_field(x[group], y[group])
        assert torch.allclose(total[group], single, atol=1e-5)
        assert torch.allclose(raw[0.05][group], single_raw[0.05], atol=1e-6)


# --- frozen encoders and features -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ldm_encoder():
    from training.features import build_encoder

    return build_encoder("ldm", (1, 3, 5), REPO / "model_weights" / "manifest.json")


def test_feature_shapes_per_layer(ldm_encoder):
    from training.features import feature_sets

    maps = ldm_encoder(torch.zeros(3, 1, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(3, 16, 64, 64), (3, 32, 32, 32), (3, 32, 16, 16)]
    sets = feature_sets(maps)
    assert tuple(sets["layer0/location"].shape) == (256, 3, 16)  # pooled to 16 x 16 locations
    assert tuple(sets["layer1/window2"].shape) == (64, 3, 64)  # mean and std of 32 channels over 2 x 2 windows
    assert tuple(sets["layer2/window4"].shape) == (16, 3, 64)
    assert tuple(sets["layer2/global"].shape) == (1, 3, 64)


def test_the_encoder_is_frozen_but_passes_gradients_to_the_generated_ct(ldm_encoder):
    from training.drifting import DriftConfig, DriftObjective

    config = DriftConfig(patch_size=32, n_pos=8, n_neg=8, encoder="ldm", bank_size=32, bank_positives=16)
    objective = DriftObjective(config, str(REPO / "model_weights" / "manifest.json"))
    assert all(not p.requires_grad for p in objective.encoder.parameters())
    before = {k: v.clone() for k, v in objective.encoder.state_dict().items()}
    generator = torch.nn.Conv2d(1, 1, 3, padding=1)
    optimizer = torch.optim.SGD([*generator.parameters(), *objective.encoder.parameters()], lr=0.5)
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 48, 48, generator=g) * 2 - 1
    mask = torch.ones_like(target)
    objective.encoder.train()  # a trainer's train() must not unfreeze its normalisation
    assert not objective.encoder.training
    loss, terms = objective(torch.tanh(generator(target)), target, mask, g)
    optimizer.zero_grad()
    loss.backward()
    assert generator.weight.grad is not None and generator.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in objective.encoder.parameters())
    optimizer.step()
    after = objective.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(key.startswith("v2/encoder/layer2/global/") for key in terms.v2)


def test_the_ldm_encoder_is_the_shipped_one_not_random(ldm_encoder):
    from training.features import build_encoder

    random = build_encoder("random", (1, 3, 5), REPO / "model_weights" / "manifest.json")
    x = torch.linspace(-1, 1, 64 * 64).reshape(1, 1, 64, 64)
    assert not torch.allclose(ldm_encoder(x)[-1], random(x)[-1])


def test_the_feature_bank_keeps_the_newest_samples_in_order():
    from training.features import FeatureBank

    bank = FeatureBank(capacity=5)
    for start in (0, 3, 6):  # three pushes of 3 samples: 9 in, the last 5 kept
        bank.push({"f": torch.arange(start, start + 3, dtype=torch.float32).reshape(1, 3, 1).expand(2, 3, 1)})
    assert bank.size == 5
    assert sorted(bank.store["f"][:, 0, 0].tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    drawn = bank.sample(5, torch.Generator().manual_seed(0))["f"]
    assert tuple(drawn.shape) == (2, 5, 1) and sorted(drawn[0, :, 0].tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert tuple(bank.sample(12, torch.Generator().manual_seed(0))["f"].shape) == (2, 12, 1)


# --- bf16 ---------------------------------------------------------------------------------------------------------


def test_a_bf16_training_step_is_close_to_fp32_on_a_small_net():
    from training.config import load_config
    from training.networks import DriftingUNet
    from training.train import build_objective, training_step

    torch.manual_seed(0)
    net = DriftingUNet(context_slices=3, width=8, depth=2)
    with torch.no_grad():  # the output layer starts at zero (a constant sCT): give every weight a say
        for param in net.parameters():
            param.add_(0.05 * torch.randn(param.shape))
    g = torch.Generator().manual_seed(1)
    mr = torch.randn(4, 3, 32, 32, generator=g)
    batch = {"mr": mr, "ct": torch.tanh(mr[:, 1:2] * 0.5), "mask": torch.ones(4, 1, 32, 32)}
    config = load_config(None, ["loss.patch_size=16", "loss.n_pos=4", "loss.n_neg=4"])
    objective = build_objective(config, torch.device("cpu"))
    gradients = []
    losses = []
    for amp in (False, True):
        net.zero_grad()
        torch.manual_seed(2)
        loss, _ = training_step(net, batch, config, torch.Generator().manual_seed(3), amp, objective)
        loss.backward()
        losses.append(float(loss))
        gradients.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert abs(losses[1] - losses[0]) < 0.02 * abs(losses[0])
    cosine = torch.nn.functional.cosine_similarity(gradients[0], gradients[1], dim=0)
    assert cosine > 0.98
    assert not np.isclose(losses[0], losses[1], rtol=0, atol=0)  # bf16 really ran (else this test proves nothing)


def test_validation_runs_on_its_own_schedule_off_the_logging_grid(tmp_path):
    """val_every 3 with log_every 2 over 3 steps: validation must run (and choose best.pt) at step 3."""
    import csv

    from training.config import load_config
    from training.train import train

    cases = _cases(tmp_path / "data", per_region=3)
    split = create_split(cases, val_per_region=1, test_per_region=0, seed=0)
    write_split(split, tmp_path / "split.json")
    config = load_config(
        None,
        [
            f"data.root={json.dumps(str(tmp_path / 'data'))}",
            'data.regions=["HN", "TH"]',
            f"data.split={json.dumps(str(tmp_path / 'split.json'))}",
            "model.width=4",
            "model.depth=2",
            "data.crop=16",
            "data.samples_per_epoch=4",
            "optim.batch_size=2",
            "optim.steps=3",
            "run.val_every=3",
            "run.log_every=2",
            "run.threads=1",
            "settings.spacing_xy_mm=null",
            "settings.divisible_by=4",
            "model.kind=l1",
            f"run.out_dir={json.dumps(str(tmp_path / 'run'))}",
        ],
    )
    summary = train(config)
    assert summary["best_step"] == 3 and np.isfinite(summary["best_val_mae"])
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [r["step"] for r in rows] == ["2", "3"] and rows[1]["val_mae"]


def test_the_shipped_primary_is_the_mirror_trained_network_and_the_fold_ensemble_stays_selectable():
    """Every region's primary is l1_flip: one network (l1 fine-tuned with half the crops mirrored) that met the rule
    of docs/studies/distillation.md against the fold ensemble with flip TTA on the test split once, its checkpoint
    chosen on validation. The ensemble (three fold models, each chosen on its own validation fold) stays selectable
    (--model l1_folds), every export checked against PyTorch.
    """
    from engine.manifest import DEFAULT_MANIFEST, load_manifest, sha256_of

    manifest = load_manifest(DEFAULT_MANIFEST)
    for region in ("HN", "TH", "AB", "BRAIN", "PELVIS"):
        route = manifest.route(region)
        assert route.primary.name == "l1_flip" and route.fallback.name == "ldm", region
    primary = manifest.models["l1_flip"]
    assert primary.kind == "one_step" and not primary.flip_tta  # one network evaluation per slice
    provenance = primary.provenance
    assert provenance["model"]["kind"] == "l1" and provenance["total_steps"] == 13500  # l1's 10 500, then 3000
    assert "augment.flip_probability=0.5" in provenance["training_command"]
    assert "run.init_from=model_weights/l1.onnx" in provenance["training_command"]
    assert provenance["onnx_parity_max_abs_hu"] < 0.05
    assert provenance["validation"]["val_mae"] < 70.0
    primary.verify_files()
    ensemble = manifest.models["l1_folds"]
    assert ensemble.kind == "ensemble" and ensemble.flip_tta
    assert [member.name for member in ensemble.members] == ["l1_fold0", "l1_fold1", "l1_fold2"]
    for fold, member in enumerate(ensemble.members):
        provenance = member.provenance
        assert provenance["model"]["kind"] == "l1" and provenance["total_steps"] == 10500  # 7500, then 3000 from them
        assert f"--fold {fold}" in provenance["training_command"] and "run.init_from=" in provenance["training_command"]
        assert "phantoms_final_3fold.json" in provenance["training_command"]
        assert provenance["onnx_parity_max_abs_hu"] < 0.05  # ONNX Runtime vs PyTorch at export, in HU
        assert provenance["validation"]["val_mae"] < 70.0  # chosen on its own validation fold, never on the test split
        member.verify_files()
        assert sha256_of(member.file("generator")) == member.files[0].sha256
    assert len({member.files[0].sha256 for member in ensemble.members}) == 3  # three different networks
    manifest.models["l1"].verify_files()  # the single all-case model stays available (--model l1)


def test_the_validation_protocol_reads_only_validation_cases_and_averages_per_model_and_sigma(tmp_path):
    """blur_robustness --subset val chooses between models: it must never score a test or training case."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from compare_models import held_out_cases
    from experiments.blur_robustness import summarise

    cases = _cases(tmp_path / "data")
    split = create_split(cases, val_per_region=1, test_per_region=2, seed=0)
    write_split(split, tmp_path / "split.json")
    chosen = held_out_cases(tmp_path / "data", tmp_path / "split.json", subset="val")
    assert sorted(c[0].name for c in chosen) == split.ids("val")
    for forbidden in (split.ids("train")[0], split.ids("test")[0]):
        with pytest.raises(SplitError, match="refusing to report"):
            held_out_cases(tmp_path / "data", tmp_path / "split.json", [forbidden], subset="val")
    rows = [
        {"model": m, "sigma_mm": s, "mae_hu": mae, "bone_recall": 0.5, "false_bone": 0.01}
        for m, s, mae in (("a", 0.0, 10.0), ("a", 0.0, 20.0), ("a", 3.0, 40.0), ("b", 0.0, 12.0))
    ]
    summary = {(r["model"], r["sigma_mm"]): r for r in summarise(rows)}
    assert summary[("a", 0.0)]["mae_hu"] == 15.0 and summary[("a", 0.0)]["cases"] == 2
    assert summary[("a", 3.0)]["mae_hu"] == 40.0 and summary[("b", 0.0)]["cases"] == 1
    assert ("b", 3.0) not in summary  # no case at that sigma: no row, not a NaN
