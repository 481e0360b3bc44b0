"""The latent-diffusion fallback: NumPy schedule and DDIM loop against MONAI and an exact denoiser, the ONNX
generator against its torch networks, determinism and batch independence, training both stages through the
one trainer, export to a manifest entry, `--model ldm`, and routing to the fallback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import process
from engine.kinds import load_generator
from engine.ldm_sampler import BETA_END, BETA_START, alphas_cumprod, ddim_sample, ddim_step, ddim_timesteps
from engine.manifest import DEFAULT_MANIFEST, load_manifest
from sct_testing import read_array, write_manifest, write_paired_case
from training.config import load_config
from training.errors import TrainingError
from training.export import export
from training.ldm import (
    LatentDiffusion,
    LdmConfig,
    SliceAutoencoder,
    export_onnx_files,
    ldm_predict_volume,
    onnx_parity,
)

REPO = Path(__file__).resolve().parents[1]
TINY = LdmConfig(
    autoencoder_channels=(8, 8),
    latent_channels=4,
    unet_channels=(8, 16),
    norm_groups=4,
    condition="learned",
    condition_channels=4,
)


# --- the schedule and the sampler in NumPy -----------------------------------------------------------------------


def test_schedule_is_monai_scaled_linear():
    from monai.networks.schedulers import DDPMScheduler

    reference = DDPMScheduler(1000, schedule="scaled_linear_beta", beta_start=BETA_START, beta_end=BETA_END)
    np.testing.assert_allclose(alphas_cumprod(1000), reference.alphas_cumprod.double().numpy(), rtol=1e-5)
    assert np.all(np.diff(alphas_cumprod(1000)) < 0)


def test_ddim_timesteps():
    steps = ddim_timesteps(1000, 20)
    assert len(steps) == 20 and steps[0] == 999 and steps[-1] == 0 and np.all(np.diff(steps) < 0)
    assert list(ddim_timesteps(1000, 1)) == [999]
    assert len(set(ddim_timesteps(50, 50))) == 50
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            ddim_timesteps(1000, bad)


@pytest.mark.parametrize("prediction, monai_name", [("eps", "epsilon"), ("v", "v_prediction")])
def test_ddim_step_matches_monai(prediction, monai_name):
    from monai.networks.schedulers import DDIMScheduler

    scheduler = DDIMScheduler(
        1000,
        schedule="scaled_linear_beta",
        beta_start=BETA_START,
        beta_end=BETA_END,
        clip_sample=False,
        prediction_type=monai_name,
    )
    scheduler.set_timesteps(10)  # MONAI's step goes from t to t - 1000 // 10
    rng = np.random.default_rng(3)
    alpha_bars = alphas_cumprod(1000)
    for t in (999, 500, 100, 40):
        x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
        out = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
        expected, _ = scheduler.step(torch.from_numpy(out), t, torch.from_numpy(x))
        previous = alpha_bars[t - 100] if t >= 100 else 1.0
        mine, _ = ddim_step(x, out, alpha_bars[t], previous, prediction)
        np.testing.assert_allclose(mine, expected.numpy(), rtol=1e-4, atol=1e-4)


def _toy_denoiser(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A fixed nonlinear function of (x, t): stands in for a network in the loop comparisons."""
    return np.tanh(x) * 0.7 + (t[:, None, None, None] / 1000.0).astype(np.float32) * 0.3


@pytest.mark.parametrize("prediction, monai_name", [("eps", "epsilon"), ("v", "v_prediction")])
def test_ddim_loop_matches_a_monai_loop(prediction, monai_name):
    from monai.networks.schedulers import DDIMScheduler

    steps = 8
    scheduler = DDIMScheduler(
        1000,
        schedule="scaled_linear_beta",
        beta_start=BETA_START,
        beta_end=BETA_END,
        clip_sample=False,
        prediction_type=monai_name,
    )
    scheduler.set_timesteps(steps)
    # MONAI steps from t to t - T // N: give both loops timesteps spaced exactly so.
    timesteps = np.arange(steps - 1, -1, -1, dtype=np.int64) * (1000 // steps)
    x0 = np.random.default_rng(5).standard_normal((3, 4, 8, 8)).astype(np.float32)
    x = torch.from_numpy(x0.copy())
    for t in timesteps:
        out = torch.from_numpy(_toy_denoiser(x.numpy(), np.full(3, t)))
        x, _ = scheduler.step(out, int(t), x)
    mine = ddim_sample(_toy_denoiser, x0, alphas_cumprod(1000), timesteps, prediction)
    np.testing.assert_allclose(mine, x.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [1, 2, 7, 20])
def test_ddim_with_the_exact_denoiser_of_a_point_mass_returns_it(prediction, steps):
    """Data that is one fixed latent c: the exact denoiser knows x0 = c, and DDIM must land on c in any N."""
    rng = np.random.default_rng(11)
    c = rng.standard_normal((2, 4, 5, 7)).astype(np.float32)
    alpha_bars = alphas_cumprod(1000)

    def exact(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        a, s = np.sqrt(alpha_bars[t[0]]), np.sqrt(1.0 - alpha_bars[t[0]])
        eps = (x - a * c) / s
        return (eps if prediction == "eps" else a * eps - s * c).astype(np.float32)

    noise = rng.standard_normal(c.shape).astype(np.float32)
    out = ddim_sample(exact, noise, alpha_bars, ddim_timesteps(1000, steps), prediction)
    np.testing.assert_allclose(out, c, atol=2e-4)


def test_engine_imports_no_torch():
    code = "import sys, engine.ldm_sampler, engine.generators, process; assert 'torch' not in sys.modules, 'torch imported'"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]


# --- the ONNX generator built from tiny MONAI networks ---------------------------------------------------------


def _tiny_model(context: int = 3, train_timesteps: int = 1000, seed: int = 0) -> LatentDiffusion:
    torch.manual_seed(seed)
    model = LatentDiffusion(SliceAutoencoder(TINY), TINY, context, train_timesteps)
    with torch.no_grad():  # MONAI zero-initialises the UNet's last conv: give it weights so the test can fail
        out_conv = [m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        out_conv.weight.normal_(0, 0.05)
        model.latent_scale.fill_(0.8)
    return model.eval()


def _ldm_entry(prefix: str = "ldm", steps: int = 2) -> dict:
    return {
        "kind": "latent_diffusion",
        "files": {role: {"path": f"{prefix}_{role}.onnx"} for role in ("encoder", "denoiser", "decoder")},
        "spacing_xy_mm": [1.0, 1.0],
        "context_slices": 3,
        "divisible_by": 4,
        "ct_window_hu": [-1000.0, 1000.0],
        "sampler": {"seed": 0, "ddim_steps": steps, "train_timesteps": 1000, "latent_scale": 0.8},
    }


@pytest.fixture(scope="module")
def tiny_ldm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ldm_weights")
    model = _tiny_model()
    paths = export_onnx_files(model, folder, "ldm", context_slices=3)
    manifest = write_manifest(folder, {"ldm": _ldm_entry()}, regions={"TH": {"model": "ldm", "fallback": None}})
    return model, paths, manifest


def test_export_parity_onnx_vs_torch(tiny_ldm):
    model, paths, _ = tiny_ldm
    parity = onnx_parity(model, paths, context_slices=3)
    assert set(parity) == {"encoder", "denoiser", "decoder", "ct_encoder"}
    assert max(parity.values()) < 1e-4, parity


def test_generator_equals_the_torch_sampler_and_is_batch_independent(tiny_ldm):
    model, _, manifest_path = tiny_ldm
    spec = load_manifest(manifest_path).models["ldm"]
    generator = load_generator(spec, "cpu")
    assert generator.prediction == "v" and generator.steps == 2 and generator.latent_channels == 4
    rng = np.random.default_rng(0)
    stacks = rng.standard_normal((3, 3, 16, 12)).astype(np.float32)
    seeds = np.array([11, 22, 33], dtype=np.uint64)
    together = generator.predict(stacks, seeds)
    assert together.shape == (3, 1, 16, 12) and together.dtype == np.float32
    conditioned = generator.predict(stacks[::-1].copy(), seeds)  # same seeds, swapped MR: the MR steers the result
    assert np.abs(conditioned[0] - together[0]).max() > 1e-3
    one_by_one = np.concatenate([generator.predict(stacks[i : i + 1], seeds[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_array_equal(generator.predict(stacks, seeds), together)  # deterministic
    other = generator.predict(stacks, seeds + np.uint64(1))
    assert np.abs(other - together).max() > 1e-3  # the seed matters

    # The torch networks with the same sampler (the trainer's validation path) give the same slices.
    from types import SimpleNamespace

    volume = SimpleNamespace(mr=stacks[:, 1])  # 3 slices: centres 0..2 read clamped neighbours
    torch_out = ldm_predict_volume(model, volume, spec, torch.device("cpu"), None, steps=2)
    from pipeline.run import slice_seeds
    from preprocessing.slices import iter_slice_batches

    ((centres, volume_stacks),) = list(iter_slice_batches(stacks[:, 1], 3, 8))
    engine_out = generator.predict(volume_stacks, slice_seeds(0, 0, centres))[:, 0]
    np.testing.assert_allclose(engine_out, torch_out, atol=1e-4)


def test_generator_rejects_a_size_the_latent_cannot_hold(tiny_ldm):
    from engine.generators import GeneratorError

    _, _, manifest_path = tiny_ldm
    generator = load_generator(load_manifest(manifest_path).models["ldm"], "cpu")
    with pytest.raises(GeneratorError):
        generator.predict(np.zeros((1, 3, 10, 12), dtype=np.float32), np.array([1], dtype=np.uint64))


# --- the trainer's two ldm stages, export, process.py ---------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paired_ldm")
    for index in range(3):
        write_paired_case(root, "TH", f"1THA00{index}", seed=index)
    return root


def _config(data_root: Path, out_dir: Path, kind: str, *extra: str):
    return load_config(
        None,
        [
            f"model.kind={kind}",
            "data.crop=32",
            "data.samples_per_epoch=8",
            "data.val_per_region=1",
            "optim.batch_size=4",
            "optim.steps=4",
            "run.val_every=2",
            "run.log_every=2",
            "run.checkpoint_every=2",
            "run.threads=1",
            f"data.root={data_root}",
            f"run.out_dir={out_dir}",
            f"manifest={DEFAULT_MANIFEST}",
            'settings={"spacing_xy_mm": [1.0, 1.0], "context_slices": 3, "divisible_by": 4, '
            '"ct_window_hu": [-1024.0, 3071.0], "sampler": {"seed": 0, "ddim_steps": 2}}',
            "ldm.autoencoder_channels=[8, 8]",
            "ldm.unet_channels=[8, 8]",
            "ldm.norm_groups=4",
            "ldm.val_ddim_steps=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    from training.train import train

    runs = tmp_path_factory.mktemp("ldm_runs")
    train(_config(data_root, runs / "ae", "ldm_autoencoder"))
    train(_config(data_root, runs / "den", "ldm_denoiser", f"ldm.autoencoder={runs / 'ae' / 'best.pt'}"))
    return runs


def test_both_stages_train_log_and_validate(trained):
    import csv

    for stage, keys in (("ae", ("l1", "kl", "val_mae")), ("den", ("loss", "val_mae", "val_ms_ssim"))):
        with open(trained / stage / "log.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [int(r["step"]) for r in rows] == [2, 4]
        for key in keys:
            assert float(rows[-1][key]) >= 0, (stage, key)
    checkpoint = torch.load(trained / "den" / "last.pt", weights_only=False)
    assert float(checkpoint["ema"]["latent_scale"]) > 0
    ae = torch.load(trained / "ae" / "best.pt", weights_only=False)["ema"]
    for key, value in ae.items():  # the denoiser stage kept the autoencoder frozen
        torch.testing.assert_close(checkpoint["model"][f"autoencoder.{key}"], value)


def test_denoiser_stage_needs_its_autoencoder(data_root, tmp_path):
    from training.train import train

    with pytest.raises(TrainingError, match="autoencoder"):
        train(_config(data_root, tmp_path / "x", "ldm_denoiser", f"ldm.autoencoder={tmp_path / 'missing.pt'}"))


def test_export_registers_a_fallback_that_process_runs(trained, data_root, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(DEFAULT_MANIFEST, weights / "manifest.json")
    with pytest.raises(TrainingError, match="ldm_denoiser"):
        export(trained / "ae" / "best.pt", "ldm", weights / "manifest.json", ["TH"], "fallback", "")
    entry = export(trained / "den" / "best.pt", "ldm", weights / "manifest.json", ["TH"], "fallback", "test")
    assert entry["kind"] == "latent_diffusion"
    assert set(entry["files"]) == {"encoder", "denoiser", "decoder", "ct_encoder"}
    assert entry["sampler"]["latent_scale"] > 0 and entry["sampler"]["train_timesteps"] == 1000
    assert max(entry["provenance"]["onnx_parity_max_abs"].values()) < 1e-3
    assert entry["provenance"]["autoencoder"]["steps"] == 4
    manifest = load_manifest(weights / "manifest.json")
    shipped_primary = load_manifest(DEFAULT_MANIFEST).route("TH").primary.name
    assert manifest.route("TH").fallback.name == "ldm" and manifest.route("TH").primary.name == shipped_primary

    case = data_root / "Task1" / "TH" / "1THA000"
    out = tmp_path / "out" / "sct.mha"
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
            "--model",
            "ldm",
            "--samples",
            "2",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    record = json.loads((out.parent / "results.json").read_text())[0]
    # Four training steps make no usable CT: either it wrote one, or the sanity check refused it by name.
    if record["error_messages"]:
        assert "'ldm'" in record["error_messages"][0]
    else:
        assert record["model"] == "ldm" and read_array(out).shape == read_array(case / "mr.mha").shape


# --- routing: a missing primary falls back to the ldm entry --------------------------------------------------


def test_missing_primary_falls_back_to_the_ldm(tiny_ldm, data_root, tmp_path):
    _, paths, _ = tiny_ldm
    for path in paths.values():
        shutil.copy(path, tmp_path / path.name)
    primary = {
        "kind": "one_step",
        "files": {"generator": {"path": "gone.onnx", "sha256": "0" * 64}},
        "context_slices": 3,
    }
    manifest = write_manifest(
        tmp_path, {"drift": primary, "ldm": _ldm_entry()}, regions={"TH": {"model": "drift", "fallback": "ldm"}}
    )
    case = data_root / "Task1" / "TH" / "1THA001"
    out = tmp_path / "out" / "sct.mha"
    code = process.main(
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
            str(manifest),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    record = json.loads((out.parent / "results.json").read_text())[0]
    assert code == 0, record
    assert record["model"] == "ldm" and "gone.onnx" in record["fallback_reason"]
    assert read_array(out).shape == read_array(case / "mr.mha").shape


# --- per-region sampler settings: one model entry, each region its own DDIM steps ------------------------------


def test_a_region_sets_its_own_ddim_steps(tiny_ldm, tmp_path):
    from engine.manifest import ManifestError
    from pipeline.run import GeneratorPool

    _, paths, _ = tiny_ldm
    for path in paths.values():
        shutil.copy(path, tmp_path / path.name)
    data = {"ldm": _ldm_entry(steps=2), "water": {"kind": "water"}}
    manifest_path = write_manifest(
        tmp_path,
        data,
        regions={
            "TH": {"model": "ldm", "fallback": None},
            "AB": {"model": "water", "fallback": "ldm", "sampler": {"ddim_steps": 1}},
            "HN": {"model": "ldm", "fallback": None, "sampler": {"ddim_steps": 5, "seed": 7}},
        },
    )
    manifest = load_manifest(manifest_path)
    assert manifest.resolve("TH").primary.sampler["ddim_steps"] == 2
    assert manifest.resolve("AB").fallback.sampler["ddim_steps"] == 1  # the fallback runs with the region's steps
    hn = manifest.resolve("HN").primary
    assert hn.sampler["ddim_steps"] == 5 and hn.sampler["seed"] == 7 and hn.sampler["latent_scale"] == 0.8
    assert manifest.resolve("AB", "ldm").primary.sampler["ddim_steps"] == 1  # so does a forced model
    assert manifest.models["ldm"].sampler["ddim_steps"] == 2  # the entry itself is unchanged

    pool = GeneratorPool("cpu")
    th, ab = pool.get(manifest.resolve("TH").primary), pool.get(manifest.resolve("AB").fallback)
    assert (th.steps, ab.steps) == (2, 1) and pool.get(manifest.resolve("TH").primary) is th
    stacks = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    seeds = np.array([5], dtype=np.uint64)
    assert not np.allclose(th.predict(stacks, seeds), ab.predict(stacks, seeds))

    for bad, message in (({"latent_scale": 1.0}, "unknown"), ({"ddim_steps": 0}, "positive integer")):
        path = write_manifest(tmp_path, data, regions={"TH": {"model": "ldm", "sampler": bad}})
        with pytest.raises(ManifestError, match=message):
            load_manifest(path)


def test_adversarial_terms_train_each_side_only(data_root, tmp_path):
    """The optional patch-adversarial term under one optimizer: the generator's term moves only the autoencoder,
    the critic's term only the critic; the trainer logs both, and the denoiser stage loads the autoencoder without
    the critic."""
    import csv

    from training.ldm import LdmConfig, _adversarial_terms
    from training.train import train

    torch.manual_seed(0)
    net = SliceAutoencoder(LdmConfig(autoencoder_channels=(8, 8), norm_groups=4, adversarial_weight=0.1))
    real = torch.rand(2, 1, 32, 32) * 2 - 1
    recon = net(real)[0]
    adversarial, critic_loss = _adversarial_terms(net, real, recon)
    adversarial.backward(retain_graph=True)
    assert all(p.grad is None for p in net.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.vae.parameters())
    net.zero_grad(set_to_none=True)
    critic_loss.backward()
    assert all(p.grad is None for p in net.vae.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.discriminator.parameters())

    train(_config(data_root, tmp_path / "ae", "ldm_autoencoder", "ldm.adversarial_weight=0.1"))
    with open(tmp_path / "ae" / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(float(r["adversarial"]) > 0 and float(r["critic"]) > 0 for r in rows)
    autoencoder = torch.load(tmp_path / "ae" / "best.pt", weights_only=False)["ema"]
    assert any(key.startswith("discriminator.") for key in autoencoder)
    train(_config(data_root, tmp_path / "den", "ldm_denoiser", f"ldm.autoencoder={tmp_path / 'ae' / 'best.pt'}"))
    denoiser = torch.load(tmp_path / "den" / "last.pt", weights_only=False)["model"]
    assert not any("discriminator" in key for key in denoiser)
    for key, value in autoencoder.items():
        if not key.startswith("discriminator."):
            torch.testing.assert_close(denoiser[f"autoencoder.{key}"], value)
