"""The trainer end to end on tiny paired data: logs, checkpoints, resume, export to a usable manifest, DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import process
from engine.manifest import DEFAULT_MANIFEST, load_manifest
from sct_testing import read_array, write_paired_case
from training.config import load_config
from training.export import export
from training.train import train

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    """A port nobody listens on now (a fixed one collides with another run on the same machine)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


TINY = [
    "model.width=4",
    "model.depth=2",
    "data.crop=32",
    "data.samples_per_epoch=8",
    "data.val_per_region=1",
    "optim.batch_size=4",
    "loss.patch_size=16",
    "loss.n_pos=4",
    "loss.n_neg=4",
    "run.val_every=3",
    "run.log_every=3",
    "run.checkpoint_every=3",
    "run.threads=1",
    'settings={"spacing_xy_mm": [1.0, 1.0], "context_slices": 3, "divisible_by": 4}',
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paired")
    for index in range(3):
        write_paired_case(root, "TH", f"1THA00{index}", seed=index)
    write_paired_case(root, "HN", "1HNA000", seed=7)
    return root


def tiny_config(data_root: Path, out_dir: Path, *extra: str):
    return load_config(
        None, TINY + [f"data.root={data_root}", f"run.out_dir={out_dir}", f"manifest={DEFAULT_MANIFEST}", *extra]
    )


def test_train_logs_checkpoints_and_resumes(data_root, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(data_root, out, "optim.steps=6"))
    assert summary["steps"] == 6 and summary["best_step"] in (3, 6)
    with open(out / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [3, 6]
    for key in ("l1", "drift", "val_mae", "val_psnr", "val_ms_ssim", "v2/pixels/tau=0.05"):
        assert rows[-1][key] not in ("", None), key
    assert float(rows[-1]["val_mae"]) > 0
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["state"]["step"] == 6 and first["settings"]["context_slices"] == 3

    summary = train(tiny_config(data_root, out, "optim.steps=9"), resume=True)
    assert summary["steps"] == 9
    resumed = torch.load(out / "last.pt", weights_only=False)
    assert resumed["state"]["step"] == 9
    assert resumed["model"].keys() == first["model"].keys()
    changed = [key for key in first["model"] if not torch.equal(resumed["model"][key], first["model"][key])]
    assert changed, "resuming trained nothing: every parameter equals the step-6 checkpoint's"
    assert resumed["optimizer"]["state"], "the optimiser state was not carried over"


def test_l1_only_kind_has_no_drift_term(data_root, tmp_path):
    train(tiny_config(data_root, tmp_path / "l1", "optim.steps=3", "model.kind=l1"))
    with open(tmp_path / "l1" / "log.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["drift"]) == 0.0 and float(row["l1"]) > 0


def test_trainer_with_randomised_mr_trains_and_logs(data_root, tmp_path):
    summary = train(
        tiny_config(
            data_root,
            tmp_path / "rand",
            "optim.steps=3",
            "model.kind=l1",
            'augment.mr_randomisation="full"',
            "augment.randomise_probability=1.0",
        )
    )
    assert summary["steps"] == 3 and summary["best_step"] == 3 and (tmp_path / "rand" / "last.pt").is_file()
    saved = json.loads((tmp_path / "rand" / "config.json").read_text())
    assert saved["config"]["augment"]["mr_randomisation"] == "full"


def test_library_errors_are_typed_and_the_commands_exit_2(data_root, tmp_path, caplog):
    from phantoms.randomise import RandomisationError
    from training.errors import TrainingError
    from training.train import main as train_main

    with pytest.raises(TrainingError, match="no cases"):
        train(tiny_config(tmp_path / "empty", tmp_path / "out"))
    assert (
        train_main(
            [
                "--set",
                f"data.root={tmp_path / 'empty'}",
                "--set",
                f"run.out_dir={tmp_path / 'out'}",
                "--set",
                f"manifest={DEFAULT_MANIFEST}",
            ]
        )
        == 2
    )
    assert "no cases" in caplog.text
    with pytest.raises(RandomisationError, match="strong"):
        train(tiny_config(data_root, tmp_path / "out", 'augment.mr_randomisation="strong"'))


def test_export_gives_a_manifest_entry_that_process_runs(data_root, tmp_path):
    train(tiny_config(data_root, tmp_path / "run", "optim.steps=3"))
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(DEFAULT_MANIFEST, weights / "manifest.json")
    entry = export(tmp_path / "run" / "best.pt", "tiny", weights / "manifest.json", ["TH"], "primary", "test")
    assert entry["context_slices"] == 3 and entry["provenance"]["onnx_parity_max_abs_hu"] < 1e-3 * 4095 / 2
    manifest = load_manifest(weights / "manifest.json")
    assert manifest.route("Thorax").primary.name == "tiny"
    case = data_root / "Task1" / "TH" / "1THA000"
    out = tmp_path / "sct.mha"
    assert (
        process.main(
            [
                "--mr",
                str(case / "mr.mha"),
                "--mask",
                str(case / "mask.mha"),
                "--region",
                "TH",
                "--out",
                str(out),
                "--manifest",
                str(weights / "manifest.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    sct = read_array(out)
    assert sct.shape == read_array(case / "mr.mha").shape
    assert json.loads((tmp_path / "results.json").read_text())[0]["model"] == "tiny"


def test_a_run_starts_from_exported_or_checkpointed_weights(data_root, tmp_path):
    """run.init_from: fine-tuning starts from the shipped ONNX generator (or a checkpoint), weights exactly."""
    from training.errors import TrainingError

    train(tiny_config(data_root, tmp_path / "run", "optim.steps=3", "model.kind=l1"))
    trained = torch.load(tmp_path / "run" / "best.pt", weights_only=False)["ema"]
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(DEFAULT_MANIFEST, weights / "manifest.json")
    export(tmp_path / "run" / "best.pt", "tiny", weights / "manifest.json", ["TH"], "primary", "test")
    for source in (weights / "tiny.onnx", tmp_path / "run" / "best.pt"):
        out = tmp_path / f"from_{source.suffix[1:]}"
        train(tiny_config(data_root, out, "optim.steps=0", "model.kind=l1", f"run.init_from={source}"))
        start = torch.load(out / "last.pt", weights_only=False)
        assert start["model"].keys() == trained.keys()
        for key, value in trained.items():
            assert torch.equal(start["model"][key], value), (source.name, key)
            assert torch.equal(start["ema"][key], value), (source.name, key)
    with pytest.raises(TrainingError, match="this network"):
        train(tiny_config(data_root, tmp_path / "wide", "model.width=8", f"run.init_from={weights / 'tiny.onnx'}"))
    with pytest.raises(TrainingError, match="not a file"):
        train(tiny_config(data_root, tmp_path / "none", f"run.init_from={tmp_path / 'missing.onnx'}"))


def test_distributed_training_with_two_cpu_processes(data_root, tmp_path):
    out = tmp_path / "ddp"
    args = [
        "--set=" + item
        for item in TINY
        + [f"data.root={data_root}", f"run.out_dir={out}", "optim.steps=3", f"manifest={DEFAULT_MANIFEST}"]
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={_free_port()}",
            "-m",
            "training.train",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert (out / "best.pt").is_file()


def test_best_checkpoint_is_the_lowest_validation_mae(data_root, tmp_path):
    out = tmp_path / "best"
    summary = train(tiny_config(data_root, out, "optim.steps=9", "model.kind=l1"))
    with open(out / "log.csv") as handle:
        scores = {int(r["step"]): float(r["val_mae"]) for r in csv.DictReader(handle) if r["val_mae"]}
    assert sorted(scores) == [3, 6, 9]
    best = min(scores, key=scores.get)
    assert summary["best_step"] == best and summary["best_val_mae"] == pytest.approx(scores[best])
    assert torch.load(out / "best.pt", weights_only=False)["state"]["step"] == best


def test_best_checkpoint_is_the_middle_one_when_validation_gets_worse_again(data_root, tmp_path, monkeypatch):
    """Scripted validation MAE 50, 30, 40 at steps 3, 6, 9: best.pt is step 6, neither the first nor the last."""
    import training.train as trainer

    scripted = iter([50.0, 30.0, 40.0])
    monkeypatch.setattr(
        trainer, "validate", lambda *args, **kwargs: {"val_mae": next(scripted), "val_psnr": 0.0, "val_ms_ssim": 0.0}
    )
    out = tmp_path / "scripted"
    summary = train(tiny_config(data_root, out, "optim.steps=9", "model.kind=l1"))
    assert summary["best_step"] == 6 and summary["best_val_mae"] == 30.0
    best, last = (torch.load(out / name, weights_only=False) for name in ("best.pt", "last.pt"))
    assert best["state"]["step"] == 6 and last["state"]["step"] == 9
    assert any(not torch.equal(best["ema"][key], last["ema"][key]) for key in best["ema"])


def test_ema_moves_a_fraction_of_the_way_and_copies_buffers():
    from training.train import update_ema

    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        ema.weight.fill_(1.0)
        model.running_mean.fill_(5.0)
    update_ema(ema, model, decay=0.9)
    assert torch.allclose(ema.weight, torch.full((3,), 1.1))  # 0.9 * 1 + 0.1 * 2
    assert torch.equal(ema.running_mean, model.running_mean)


def test_the_cosine_schedule_falls_from_the_rate_to_its_floor_and_the_trainer_uses_it(data_root, tmp_path):
    from training.errors import TrainingError
    from training.train import learning_rate

    optim = tiny_config(data_root, tmp_path, "optim.steps=100", "optim.lr=1e-3").optim
    assert learning_rate(optim, 0) == learning_rate(optim, 99) == 1e-3  # constant: the shipped recipes' rate
    cosine = tiny_config(data_root, tmp_path, "optim.steps=100", "optim.lr=1e-3", 'optim.lr_schedule="cosine"').optim
    rates = [learning_rate(cosine, step) for step in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[100] == pytest.approx(0.05e-3)  # the floor: 5 % by default
    assert rates[50] == pytest.approx(0.525e-3)  # halfway down the half cosine
    assert all(later < earlier for earlier, later in zip(rates, rates[1:]))

    out = tmp_path / "cosine"
    run = tiny_config(data_root, out, "optim.steps=6", "model.kind=l1", 'optim.lr_schedule="cosine"')
    train(run)
    with open(out / "log.csv") as handle:
        logged = [float(row["lr"]) for row in csv.DictReader(handle)]
    assert logged == pytest.approx([learning_rate(run.optim, step) for step in (2, 5)])  # updates 3 and 6
    assert logged[1] < logged[0] < run.optim.lr

    with pytest.raises(TrainingError, match="lr_schedule"):
        train(tiny_config(data_root, tmp_path / "bad", "optim.steps=3", 'optim.lr_schedule="linear"'))


def test_averaged_checkpoints_hold_the_mean_of_their_members_and_export(data_root, tmp_path, caplog):
    """A weight average (model soup) of two fine-tunes: exactly the weighted mean, exportable, refused when unrelated."""
    from training.average_checkpoints import average_checkpoints, main
    from training.errors import TrainingError

    for seed in (0, 1):
        train(tiny_config(data_root, tmp_path / f"run{seed}", "optim.steps=3", "model.kind=l1", f"run.seed={seed}"))
    members = [tmp_path / "run0" / "last.pt", tmp_path / "run1" / "last.pt"]
    first, second = (torch.load(path, weights_only=False) for path in members)
    assert any(not torch.equal(first["ema"][k], second["ema"][k]) for k in first["ema"])  # two different networks

    assert main([*map(str, members), "--out", str(tmp_path / "soup.pt"), "--weights", "0.25,0.75"]) == 0
    soup = torch.load(tmp_path / "soup.pt", weights_only=False)
    for which in ("ema", "model"):
        for key, value in first[which].items():
            expected = (
                0.25 * value.double() + 0.75 * second[which][key].double() if value.is_floating_point() else value
            )
            assert torch.allclose(soup[which][key].double(), expected, atol=1e-7), (which, key)
    assert [m["weight"] for m in soup["weight_average"]["members"]] == [0.25, 0.75]
    assert all(
        torch.equal(a, b)
        for a, b in zip(average_checkpoints(members, [1.0, 0.0])["ema"].values(), first["ema"].values())
    )

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(DEFAULT_MANIFEST, weights / "manifest.json")
    entry = export(tmp_path / "soup.pt", "soup", weights / "manifest.json", ["TH"], "primary", "test")
    assert entry["provenance"]["onnx_parity_max_abs_hu"] < 1e-3 * 4095 / 2
    assert [m["checkpoint"] for m in entry["provenance"]["weight_average"]["members"]] == [str(p) for p in members]

    train(tiny_config(data_root, tmp_path / "wide", "optim.steps=0", "model.kind=l1", "model.width=8"))
    with pytest.raises(TrainingError, match="another network"):
        average_checkpoints([members[0], tmp_path / "wide" / "last.pt"])
    with pytest.raises(TrainingError, match="sum to 1"):
        average_checkpoints(members, [0.5, 0.6])
    with pytest.raises(TrainingError, match="at least two"):
        average_checkpoints(members[:1])
    assert main([str(members[0]), str(tmp_path / "missing.pt"), "--out", str(tmp_path / "no.pt")]) == 2
    assert "missing.pt: not a file" in caplog.text and not (tmp_path / "no.pt").exists()


def _run_real_mr_soup(tmp_path: Path, out: Path, **settings: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `experiments/real_mr_soup.sh` into OUT with both phantom sets present (so it generates none): the script's
    result and the two sets' paths (thin, rim9)."""
    data = {name: tmp_path / name for name in ("thin", "rim9")}
    for root in data.values():
        root.mkdir()
        (root / "phantoms.json").write_text("{}")
    env = {**os.environ, "OUT": str(out), "THIN_DATA": str(data["thin"]), "RIM9_DATA": str(data["rim9"]), **settings}
    done = subprocess.run(
        ["bash", str(REPO / "experiments" / "real_mr_soup.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    return done, data


def test_the_real_mr_recipe_script_soups_the_runs_of_its_seeds_and_skips_trained_ones(data_root, tmp_path):
    """`experiments/real_mr_soup.sh` (docs/studies/real_mr_transfer.md): which runs form the recipe's soup for a seed
    list (both rim sets x 30/40 % randomised, per seed, in order) and the comparator's soup; runs with a best.pt
    are not trained again, so a stopped recipe resumes where it was."""
    train(tiny_config(data_root, tmp_path / "tiny", "optim.steps=0", "model.kind=l1"))
    out = tmp_path / "runs"
    members = [
        out / f"{short}_p{share}_cos{'' if seed == 0 else f'_s{seed}'}" / "best.pt"
        for seed in (0, 2)
        for short in ("thin", "rim9")
        for share in (30, 40)
    ]
    sharp = [out / f"{short}_sharp_cos{suffix}" / "best.pt" for short in ("thin", "rim9") for suffix in ("", "_s1")]
    unrelated = out / "thin_p30_cos_s1" / "best.pt"  # seed 1 is not asked for: must stay out of the soup
    for path in [*members, *sharp, unrelated]:
        path.parent.mkdir(parents=True)
        shutil.copy(tmp_path / "tiny" / "last.pt", path)
    done, _ = _run_real_mr_soup(tmp_path, out, PY=sys.executable, SEEDS="0 2", COMPARATOR="true")
    assert done.returncode == 0, done.stderr
    assert "training" not in done.stdout and done.stdout.count("have ") == len(members) + len(sharp)
    for soup_name, expected in (("real_mr_s02.pt", members), ("real_mr_sharp.pt", sharp)):
        soup = torch.load(out / "soups" / soup_name, weights_only=False)
        assert [m["checkpoint"] for m in soup["weight_average"]["members"]] == [str(p) for p in expected]


def test_the_real_mr_recipe_script_launches_each_run_with_its_settings(data_root, tmp_path):
    """What `experiments/real_mr_soup.sh` asks the trainer for, per run (seed, phantom set, randomised share, faint bone,
    cosine rate, 5000 steps), into an OUT that does not exist yet. The trainer is replaced by a stand-in that logs
    its arguments and leaves a tiny checkpoint, so the soup at the end is real."""
    train(tiny_config(data_root, tmp_path / "tiny", "optim.steps=0", "model.kind=l1"))
    stand_in = tmp_path / "python"
    stand_in.write_text(
        "#!/bin/bash\n"
        "if [[ $2 == training.train ]]; then\n"
        '  for arg in "$@"; do [[ $arg == run.out_dir=* ]] && out=${arg#run.out_dir=}; done\n'
        '  echo "$@"; mkdir -p "$out"; cp "$TINY_CHECKPOINT" "$out/best.pt"; exit 0\n'
        "fi\n"
        'exec "$REAL_PYTHON" "$@"\n'
    )
    stand_in.chmod(0o755)
    out = tmp_path / "fresh" / "runs"
    done, data = _run_real_mr_soup(
        tmp_path,
        out,
        PY=str(stand_in),
        REAL_PYTHON=sys.executable,
        TINY_CHECKPOINT=str(tmp_path / "tiny" / "last.pt"),
        SEEDS="1",
    )
    assert done.returncode == 0, done.stderr
    for short in ("thin", "rim9"):
        for share in (30, 40):
            args = (out / f"{short}_p{share}_cos_s1.log").read_text().split()
            for setting in (
                "run.seed=1",
                f"data.root={data[short]}",
                "data.mr_randomisation=physics",
                f"data.randomise_probability=0.{share}",
                "data.faint_bone_probability=0.83",
                "optim.lr_schedule=cosine",
                "optim.steps=5000",
                "run.init_from=model_weights/l1.onnx",
            ):
                assert setting in args, (short, share, setting)
    assert (out / "soups" / "real_mr_s1.pt").is_file()


def test_early_stop_rule():
    from training.train import _early_stop

    config = tiny_config(Path("."), Path("."), "run.early_stop_epochs=2", "run.early_stop_min_improvement=0.1")
    assert not _early_stop([1.0, 0.9], config)  # too few epochs to judge
    assert not _early_stop([1.0, 0.95, 0.85], config)  # fell 15 % over 2 epochs
    assert _early_stop([1.0, 0.95, 0.95], config)  # fell 5 %: stop
    assert not _early_stop([1.0, 0.9, 0.5], tiny_config(Path("."), Path(".")))  # off by default (0 epochs)


@pytest.mark.parametrize("name", ["drifting.toml", "drifting_gpu.toml"])
def test_the_committed_generator_configs_load_and_build_their_network(name):
    """A typo in a committed config (an unknown key, a depth the channel list cannot carry) fails here, not on a GPU."""
    from engine.manifest import training_spec
    from training.train import build_network

    config = load_config(REPO / "configs" / name)
    spec = training_spec(REPO / config.manifest, "one_step", config.settings)
    model = build_network(config, spec)
    stride = 2**config.model.depth
    assert spec.divisible_by % stride == 0, "the manifest grid must be divisible by the network's stride"
    with torch.no_grad():
        out = model(torch.zeros(1, spec.context_slices, stride, stride), torch.zeros(1, 1, stride, stride))
    assert out.shape == (1, 1, stride, stride)


def test_an_fp16_copy_of_the_shipped_generator_stays_within_two_hu_and_is_refused_beyond(tmp_path, monkeypatch):
    import training.manifest_entries as exporter
    from engine.kinds import load_generator

    shipped = json.loads(DEFAULT_MANIFEST.read_text())
    shutil.copy(DEFAULT_MANIFEST.parent / "l1.onnx", tmp_path / "l1.onnx")
    data = {**shipped, "models": {"l1": shipped["models"]["l1"]}, "regions": {"HN": {"model": "l1"}}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    entry = exporter.add_fp16(path, "l1", "l1_fp16", ["HN"])
    assert entry["provenance"]["fp16_difference_hu"]["mean"] <= exporter.FP16_MEAN_TOLERANCE_HU
    assert (tmp_path / "l1_fp16.onnx").stat().st_size < 0.6 * (tmp_path / "l1.onnx").stat().st_size
    manifest = load_manifest(path)
    assert manifest.route("HN").primary.name == "l1_fp16"
    stacks = np.random.default_rng(1).standard_normal((2, 5, 64, 48)).astype(np.float32)
    seeds = np.arange(2, dtype=np.uint64)
    half, full = (load_generator(manifest.models[n], "cpu").predict(stacks, seeds) for n in ("l1_fp16", "l1"))
    assert half.dtype == np.float32 and 0 < np.abs(half - full).mean() * 4095 / 2 < 2.0

    before = path.read_text()
    monkeypatch.setattr(exporter, "FP16_MEAN_TOLERANCE_HU", 0.0)
    with pytest.raises(exporter.TrainingError, match="differs from l1"):
        exporter.add_fp16(path, "l1", "l1_half", [])
    assert path.read_text() == before and not list(tmp_path.glob("*.tmp")) and not (tmp_path / "l1_half.onnx").exists()


@pytest.mark.parametrize("name", ["drifting.toml", "drifting_gpu.toml", "ldm_autoencoder.toml", "ldm_denoiser.toml"])
def test_committed_configs_never_restate_a_manifest_default(name):
    """Shared settings have one definition (the manifest's defaults); a config states only what differs."""
    config = load_config(REPO / "configs" / name)
    defaults = json.loads((REPO / config.manifest).read_text())["defaults"]
    for key, value in config.settings.items():
        if isinstance(value, dict):
            same = {k: v for k, v in value.items() if defaults.get(key, {}).get(k) == v}
            assert not same, f"{name}: [settings.{key}] restates the manifest default(s) {same}"
        else:
            assert defaults.get(key) != value, f"{name}: [settings] {key} = {value!r} restates the manifest default"


@pytest.mark.parametrize("group, regions", [("HN", ("HN",)), ("TH", ("TH",)), ("AB", ("AB",)), ("TH_AB", ("TH", "AB"))])
def test_a_region_group_overlay_changes_only_the_regions_and_the_run_folder(group, regions):
    """`--config recipe --config configs/regions/X.toml`: the recipe's every other setting survives the overlay."""
    recipe = load_config(REPO / "configs" / "drifting_gpu.toml")
    layered = load_config([REPO / "configs" / "drifting_gpu.toml", REPO / "configs" / "regions" / f"{group}.toml"])
    assert layered.data.regions == regions and layered.run.out_dir == f"runs/region_{group}"
    assert layered.model == recipe.model and layered.optim == recipe.optim and layered.loss == recipe.loss
    assert layered.data.split == recipe.data.split and layered.data.crop == recipe.data.crop
    assert layered.settings == recipe.settings
    folded = load_config(
        [REPO / "configs" / "drifting_gpu.toml", REPO / "configs" / "regions" / f"{group}.toml"], ["run.threads=3"]
    )
    assert folded.run.threads == 3 and folded.data.regions == regions  # --set still applies last


def test_the_trainer_cli_layers_configs_in_the_order_given(tmp_path, monkeypatch):
    import training.train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda config, **kw: seen.setdefault("config", config) and {})
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text('[data]\nregions = ["HN"]\ncrop = 96\n[run]\nthreads = 2\n')
    second.write_text('[data]\nregions = ["AB"]\n')
    assert train_module.main(["--config", str(first), "--config", str(second)]) == 0
    assert seen["config"].data.regions == ("AB",) and seen["config"].data.crop == 96 and seen["config"].run.threads == 2


def test_the_augmentation_knobs_live_in_their_own_section_off_by_default_and_old_configs_still_read(tmp_path):
    from training.config import AugmentConfig, DataConfig, config_from_dict

    defaults = load_config(None)
    assert defaults.augment == AugmentConfig() and defaults.augment.mr_randomisation == "off"
    assert defaults.augment.dark_bone_probability == defaults.augment.faint_bone_probability == 0.0
    assert not defaults.augment.keep_histogram and defaults.augment.min_blur_px == 0.0
    assert not hasattr(DataConfig(), "faint_bone_probability")
    # a config written before [augment] existed (and a checkpoint's config dict) names them under [data]
    old = tmp_path / "old.toml"
    old.write_text('[data]\ncrop = 64\nmr_randomisation = "physics"\nmin_blur_px = 1.5\n')
    config = load_config(old, ["data.faint_bone_probability=0.83", "data.keep_histogram=true"])
    assert config.data.crop == 64
    assert (config.augment.mr_randomisation, config.augment.min_blur_px) == ("physics", 1.5)
    assert config.augment.faint_bone_probability == 0.83 and config.augment.keep_histogram
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict({"data": {"mr_randomisation": "full"}}).augment.mr_randomisation == "full"
    with pytest.raises(ValueError, match=r"\['mr_randomisation'\] given under both \[data\]"):
        config_from_dict({"data": {"mr_randomisation": "full"}, "augment": {"mr_randomisation": "off"}})
