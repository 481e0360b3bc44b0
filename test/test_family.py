"""The generator family (training/family.py): presets S, M, L build, train, export with parity and run in process.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import process
from engine.manifest import DEFAULT_MANIFEST, load_manifest
from sct_testing import read_array, write_paired_case
from training.config import load_config
from training.errors import TrainingError
from training.export import export
from training.family import PRESETS, ResNetUNet, build_generator, flops_per_slice, parameter_count
from training.networks import export_onnx
from training.train import train

REPO = Path(__file__).resolve().parents[1]
HU_PER_UNIT = (3071.0 + 1024.0) / 2.0  # the default window's half width: [-1, 1] units -> HU
PARITY_HU = 0.05

TINY = [
    "data.crop=64",
    "data.samples_per_epoch=4",
    "data.val_per_region=1",
    "optim.batch_size=2",
    "loss.patch_size=16",
    "loss.n_pos=4",
    "loss.n_neg=4",
    "run.val_every=2",
    "run.log_every=2",
    "run.checkpoint_every=2",
    "run.threads=1",
    "model.kind=l1",
]
GRID = {"S": 16, "M": 32, "L": 32}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paired")
    write_paired_case(root, "TH", "1THA000", seed=0)
    write_paired_case(root, "TH", "1THA001", seed=1)
    return root


def preset_config(preset: str, data_root: Path, out: Path, *extra: str):
    settings = json.dumps({"context_slices": 3, "divisible_by": GRID[preset]})
    return load_config(
        None,
        TINY
        + [
            f'model.preset="{preset}"',
            f"settings={settings}",
            f"data.root={data_root}",
            f"run.out_dir={out}",
            f"manifest={DEFAULT_MANIFEST}",
            *extra,
        ],
    )


def _as_if_trained(model: torch.nn.Module) -> torch.nn.Module:
    """Random head weights and batch statistics: an untrained member outputs a constant image, hiding errors."""
    torch.manual_seed(1)
    head = model.head if hasattr(model, "head") else model.net.segmentation_head[0]
    torch.nn.init.normal_(head.weight, std=0.5)
    with torch.no_grad():  # running statistics of the batch norms from a few random batches
        model.train()
        for _ in range(3):
            model(torch.randn(2, model.context_slices, 64, 64), torch.randn(2, model.noise_channels, 64, 64))
    return model.eval()


def test_presets_fill_the_model_section_and_explicit_keys_win():
    for name, values in PRESETS.items():
        config = load_config(None, [f'model.preset="{name}"'])
        for key, value in values.items():
            got = getattr(config.model, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, (name, key)
    mixed = load_config(None, ['model.preset="L"', 'model.backbone="resnet18"'])
    assert mixed.model.arch == "flexible_unet" and mixed.model.backbone == "resnet18"
    with pytest.raises(ValueError, match="preset must be one of"):
        load_config(None, ['model.preset="XL"'])


@pytest.mark.parametrize("preset, low, high", [("S", 0.4e6, 0.6e6), ("M", 5e6, 10e6), ("L", 20e6, 40e6)])
def test_the_presets_have_their_stated_sizes(preset, low, high):
    model = build_generator(load_config(None, [f'model.preset="{preset}"']).model, context_slices=5)
    assert low <= parameter_count(model) <= high


@pytest.mark.parametrize("preset", ["M", "L"])
def test_a_resnet_member_exports_with_dynamic_batch_and_size_within_the_parity(tmp_path, preset):
    """ONNX Runtime vs PyTorch on batches and slice sizes other than the export's: max |difference| <= 0.05 HU."""
    torch.manual_seed(0)
    model = _as_if_trained(build_generator(load_config(None, [f'model.preset="{preset}"']).model, context_slices=3))
    path = export_onnx(model, tmp_path / "g.onnx", context_slices=3, noise_channels=1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["mr", "noise"]
    rng = np.random.default_rng(0)
    for batch, height, width in ((3, 96, 64), (1, 64, 128)):
        mr = rng.standard_normal((batch, 3, height, width), dtype=np.float32)
        noise = rng.standard_normal((batch, 1, height, width), dtype=np.float32)
        (onnx_out,) = session.run(["ct"], {"mr": mr, "noise": noise})
        with torch.no_grad():
            torch_out = model(torch.from_numpy(mr), torch.from_numpy(noise)).numpy()
        assert onnx_out.shape == (batch, 1, height, width)
        assert float(torch_out.std()) > 1e-2  # the outputs compared are not constant
        assert float(np.abs(onnx_out - torch_out).max()) * HU_PER_UNIT <= PARITY_HU


def test_a_resnet_member_refuses_sizes_off_its_stride_and_starts_at_water():
    model = ResNetUNet(context_slices=3, noise_channels=0, backbone="resnet10")
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 32))
        torch.testing.assert_close(out, torch.full_like(out, -0.5))
        with pytest.raises(ValueError, match="multiples of 32"):
            model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="backbone"):
        ResNetUNet(backbone="resnet50")


@pytest.mark.parametrize("preset", ["S", "M", "L"])
def test_each_preset_trains_two_steps_exports_and_runs_through_process(data_root, tmp_path, preset):
    start = tmp_path / "start"
    train(preset_config(preset, data_root, start, "optim.steps=0"))
    out = tmp_path / "run"
    summary = train(preset_config(preset, data_root, out, "optim.steps=2"))
    assert summary["steps"] == 2
    before = torch.load(start / "last.pt", weights_only=False)["model"]
    after = torch.load(out / "last.pt", weights_only=False)["model"]
    weights = [key for key, value in before.items() if value.is_floating_point() and key.endswith("weight")]
    unchanged = [key for key in weights if torch.equal(before[key], after[key])]
    assert not unchanged, f"two steps left these weights untouched: {unchanged[:5]}"

    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(DEFAULT_MANIFEST, folder / "manifest.json")
    entry = export(out / "best.pt", f"tiny_{preset}", folder / "manifest.json", ["TH"], "primary", "test")
    assert entry["provenance"]["onnx_parity_max_abs_hu"] <= PARITY_HU
    assert entry["divisible_by"] == GRID[preset] and entry["provenance"]["model"]["preset"] == preset
    case = data_root / "Task1" / "TH" / "1THA000"
    sct = tmp_path / "sct.mha"
    argv = ["--mr", str(case / "mr.mha"), "--mask", str(case / "mask.mha"), "--region", "TH", "--out", str(sct)]
    assert process.main([*argv, "--manifest", str(folder / "manifest.json"), "--no-progress"]) == 0
    assert read_array(sct).shape == read_array(case / "mr.mha").shape
    assert json.loads((tmp_path / "results.json").read_text())[0]["model"] == f"tiny_{preset}"
    assert load_manifest(folder / "manifest.json").route("TH").primary.divisible_by == GRID[preset]


def test_the_trainer_refuses_a_grid_the_network_stride_cannot_carry(data_root, tmp_path):
    config = preset_config(
        "M", data_root, tmp_path / "run", "optim.steps=1", 'settings={"context_slices": 3, "divisible_by": 16}'
    )
    with pytest.raises(TrainingError, match="divisible_by = 32"):
        train(config)
    with pytest.raises(TrainingError, match="data.crop = 48"):
        train(preset_config("M", data_root, tmp_path / "run", "optim.steps=1", "data.crop=48"))


def test_the_summary_prints_parameters_and_flops_last(capsys):
    from training.networks import flops_per_slice as hook_counted_flops
    from training.summary import main

    for preset in ("S", "L"):
        assert (
            main(
                [
                    "--config",
                    str(REPO / "configs" / "drifting.toml"),
                    "--config",
                    f"{REPO}/configs/presets/{preset}.toml",
                ]
            )
            == 0
        )
        last = capsys.readouterr().out.strip().splitlines()[-1].split()
        assert last[0] == "parameters" and last[2] == "gflop_per_slice"
        model = build_generator(load_config(None, [f'model.preset="{preset}"']).model, context_slices=5)
        assert int(last[1]) == parameter_count(model)
        assert float(last[3]) == pytest.approx(flops_per_slice(model) / 1e9, abs=0.01)
        if preset == "S":  # torch's counter and the U-Net's own hook count (2 x conv MACs) agree
            assert flops_per_slice(model) == hook_counted_flops(model, 512, 512)


@pytest.mark.parametrize("preset", ["S", "M", "L"])
def test_the_committed_preset_overlays_fit_the_manifest_grid(preset):
    """`--config configs/drifting.toml --config configs/presets/X.toml` passes the trainer's grid check."""
    from engine.manifest import training_spec
    from training.train import check_network_grid

    config = load_config([REPO / "configs" / "drifting.toml", REPO / "configs" / "presets" / f"{preset}.toml"])
    assert config.model.preset == preset and config.model.arch == PRESETS[preset]["arch"]
    check_network_grid(config, training_spec(REPO / config.manifest, "drifting", config.settings))


def test_the_gpu_preset_benchmark_runs_on_the_cpu_and_skips_without_cuda(tmp_path):
    """benchmarks/gpu_presets.py (called by gpu_check.sh) in CI-safe form: a tiny CPU run writes its report."""
    import subprocess
    import sys

    out = tmp_path / "presets.json"
    tiny = ["--presets", "S", "--size", "32", "--crop", "32", "--batch", "1", "--train-batch", "2", "--repeats", "1"]
    script = str(REPO / "benchmarks" / "gpu_presets.py")
    done = subprocess.run(
        [sys.executable, script, "--device", "cpu", *tiny, "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())["presets"][0]
    assert row["preset"] == "S" and row["forward_seconds_per_slice_fp32"] > 0 and row["train_step_seconds"] > 0
    if not torch.cuda.is_available():
        skipped = subprocess.run(
            [sys.executable, script, *tiny, "--out", str(tmp_path / "none.json")], capture_output=True
        )
        assert skipped.returncode == 0 and b"skipped" in skipped.stdout and not (tmp_path / "none.json").exists()
