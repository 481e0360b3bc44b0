"""The drifting generator's parts: the drift field and loss, the patch sampler, the network, its ONNX export."""

from __future__ import annotations

import copy
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

# One rule for every test file: the test environment (requirements-train.txt) has torch and onnxruntime, so a
# missing one is an error, never a silent skip.
from training.drifting import (
    DriftConfig,
    drift_field,
    drifting_loss,
    generator_loss,
    masked_l1,
    sample_patches,
)
from training.networks import DriftingUNet, conv_macs, export_onnx, flops_per_slice

# HU-scaled error: a difference of the network's [-1, 1] outputs times half the width of the manifest's default
# CT window [-1024, 3071] HU, i.e. the difference in HU after the engine's linear de-normalisation.
HU_PER_UNIT = (3071.0 + 1024.0) / 2.0


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def one_thread():
    """Toy-sized tensors: one intra-op thread is faster, and much faster when other work shares the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ the field


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("normalisation", ["both", "y", "none"])
def test_field_is_zero_when_positives_and_negatives_are_the_same_set(normalisation: str, threads: int) -> None:
    """Whatever the thread count (it changes float rounding): with one thread the balanced field's rounding noise
    (1e-7) once came out as a unit-size field after the RMS normalisation."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_balanced_field_is_zero(normalisation)
    finally:
        torch.set_num_threads(before)


def _check_balanced_field_is_zero(normalisation: str) -> None:
    g = _seeded(0)
    x = torch.randn(12, 30, generator=g)
    y = torch.randn(20, 30, generator=g)
    v, raw = drift_field(x, y, y.clone(), normalisation=normalisation)
    assert float(v.abs().max()) < 1e-5
    assert all(float(r.abs().max()) < 1e-6 for r in raw.values())
    # A different set of positives gives a clearly non-zero field: the check above can fail.
    v_other, _ = drift_field(x, y + 1.0, y, normalisation=normalisation)
    assert float(v_other.square().mean().sqrt()) > 0.5


def test_field_is_antisymmetric_in_positives_and_negatives() -> None:
    g = _seeded(1)
    x, p, q = torch.randn(10, 8, generator=g), torch.randn(14, 8, generator=g) + 0.5, torch.randn(14, 8, generator=g)
    _, raw_pq = drift_field(x, p, q)
    _, raw_qp = drift_field(x, q, p)
    for tau in raw_pq:
        torch.testing.assert_close(raw_pq[tau], -raw_qp[tau], atol=1e-6, rtol=1e-5)


def test_raw_field_at_the_largest_tau_grows_with_the_mismatch(one_thread) -> None:
    """Self-exclusion on (negatives = the x's): samples that follow the data leave only a finite-sample field.

    At the largest tau the raw mean(V^2) grows monotonically with a shift of the generated samples; at the
    smallest taus it is dominated by nearest-neighbour sampling noise (see training/README.md).
    """
    g = _seeded(2)
    data = torch.randn(256, 2, generator=g)
    base = torch.randn(256, 2, generator=g)
    v2 = [drifting_loss(base + torch.tensor([shift, 0.0]), data)[1][0.2] for shift in (0.0, 0.5, 1.0, 2.0)]
    assert v2 == sorted(v2), v2
    assert v2[2] > 10 * v2[0], v2


def test_field_points_from_generated_to_real_samples() -> None:
    g = _seeded(3)
    data = torch.randn(64, 2, generator=g) * 0.1
    x = torch.randn(64, 2, generator=g) * 0.1 + torch.tensor([2.0, 0.0])
    v, _ = drift_field(x, data)
    assert float((v[:, 0] < 0).float().mean()) > 0.9  # toward the data, along -x


def _reference_field(x: np.ndarray, y_pos: np.ndarray, tau: float) -> np.ndarray:
    """The paper's batch algorithm written out with loops in float64; the negatives are the x's, self excluded."""
    n, n_pos = len(x), len(y_pos)
    d_pos = np.array([[np.linalg.norm(x[i] - y_pos[j]) for j in range(n_pos)] for i in range(n)])
    d_neg = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(n)] for i in range(n)])
    scale = (d_pos.sum() + d_neg.sum()) / (n * n_pos + n * (n - 1))  # the diagonal of d_neg is zero
    kernel = np.exp(-np.concatenate([d_neg, d_pos], axis=1) / scale / tau)
    kernel[np.arange(n), np.arange(n)] = 0.0  # no self-interaction
    rows = kernel / kernel.sum(axis=1, keepdims=True)
    cols = kernel / kernel.sum(axis=0, keepdims=True)
    a = np.sqrt(rows * cols)
    v = np.zeros_like(x)
    for i in range(n):
        s_neg, s_pos = a[i, :n].sum(), a[i, n:].sum()
        for j in range(n_pos):
            v[i] += a[i, n + j] * s_neg * (y_pos[j] - x[i])
        for j in range(n):
            v[i] -= a[i, j] * s_pos * (x[j] - x[i])
    return v


def test_field_matches_a_loop_reference_of_the_paper_algorithm() -> None:
    g = _seeded(8)
    x = torch.randn(9, 5, generator=g)
    y = torch.randn(7, 5, generator=g) + 0.4
    total, raw = drift_field(x, y, taus=(0.05, 0.2, 1.0))
    expected_total = np.zeros((9, 5))
    for tau in (0.05, 0.2, 1.0):
        reference = _reference_field(x.double().numpy(), y.double().numpy(), tau)
        np.testing.assert_allclose(raw[tau].numpy(), reference, rtol=1e-4, atol=1e-7)
        expected_total += reference / np.sqrt(np.mean(reference**2))
    np.testing.assert_allclose(total.numpy(), expected_total, rtol=1e-4, atol=1e-5)


def test_loss_gradient_is_minus_two_v_over_numel_and_no_gradient_flows_through_v() -> None:
    g = _seeded(4)
    x = torch.randn(16, 50, generator=g, requires_grad=True)
    y = torch.randn(16, 50, generator=g) + 0.3
    loss, _ = drifting_loss(x, y)
    (grad,) = torch.autograd.grad(loss, x)
    v, _ = drift_field(x, y)
    torch.testing.assert_close(grad, -2.0 * v / x.numel(), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(loss, v.square().mean(), atol=1e-6, rtol=1e-5)
    # Each per-tau field is RMS-normalised: with three taus the total has mean square between 1 and 9.
    assert 1.0 - 1e-4 <= float(v.square().mean()) <= 9.0 + 1e-4


def test_drift_loss_alone_moves_free_particles_onto_a_mixture_of_gaussians(one_thread) -> None:
    g = _seeded(5)
    modes = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])

    def data(n: int) -> torch.Tensor:
        return modes[torch.randint(len(modes), (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)

    def nearest(points: torch.Tensor) -> tuple[float, list[float]]:
        d = torch.cdist(points, modes)
        share = torch.bincount(d.argmin(1), minlength=len(modes)).float() / len(points)
        return float(d.min(1).values.mean()), share.tolist()

    particles = (torch.randn(256, 2, generator=g) * 0.3 + torch.tensor([0.0, -5.0])).requires_grad_()
    start, _ = nearest(particles.detach())
    optimiser = torch.optim.SGD([particles], lr=0.05 * particles.numel() / 2)  # a step of 0.05 V
    for _ in range(300):
        loss, _ = drifting_loss(particles, data(256))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    end, share = nearest(particles.detach())
    assert end < start / 8, (start, end)
    # Every mode is covered; the mode farthest from the start fills slowly (~0.2 after 300 steps, 0.24 after 800).
    assert min(share) > 0.15, share


def test_drift_loss_alone_trains_an_mlp_generator_onto_a_mixture_of_gaussians(one_thread) -> None:
    torch.manual_seed(6)
    g = _seeded(6)
    modes = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])

    def data(n: int) -> torch.Tensor:
        return modes[torch.randint(len(modes), (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)

    net = torch.nn.Sequential(
        torch.nn.Linear(4, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2)
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)

    def nearest() -> tuple[float, list[float]]:
        with torch.no_grad():
            points = net(torch.randn(2000, 4, generator=g))
        d = torch.cdist(points, modes)
        share = torch.bincount(d.argmin(1), minlength=len(modes)).float() / len(points)
        return float(d.min(1).values.mean()), share.tolist()

    start, start_share = nearest()
    for _ in range(1000):
        loss, _ = drifting_loss(net(torch.randn(128, 4, generator=g)), data(128))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    end, share = nearest()
    assert min(start_share) < 0.05  # it starts with a mode uncovered
    assert end < start / 4, (start, end)
    assert min(share) > 0.2, share


def test_drift_rejects_mismatched_shapes_and_bad_options() -> None:
    with pytest.raises(ValueError, match="need x"):
        drift_field(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="normalisation"):
        drift_field(torch.zeros(4, 3), torch.zeros(4, 3), normalisation="rows")
    with pytest.raises(ValueError, match="taus"):
        DriftConfig(taus=(0.0,))
    with pytest.raises(ValueError, match="unknown keys"):
        DriftConfig.from_dict({"tau": [0.1]})
    config = DriftConfig.from_dict({"taus": [0.05], "features": ["pixels", "gradients"], "n_pos": 8})
    assert config.taus == (0.05,) and DriftConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------------------------------- patches


def _slices(batch: int = 3, size: int = 96) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _seeded(7)
    real = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
    fake = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, 60:80, 5:25] = 1.0  # the body is a small square near one edge
    return real, fake, mask


def test_patches_are_crops_that_overlap_the_body_and_are_reproducible() -> None:
    real, fake, mask = _slices()
    fake.requires_grad_(True)
    pos, neg = sample_patches(real, fake, mask, n_pos=10, n_neg=12, patch_size=32, generator=_seeded(1))
    assert pos.shape == (10, 1, 32, 32) and neg.shape == (12, 1, 32, 32)
    assert neg.requires_grad and not pos.requires_grad
    # Find each crop in its source: every crop is an exact window that overlaps the body.
    for crops, source in ((pos, real), (neg.detach(), fake.detach())):
        for crop in crops:
            windows = source.unfold(2, 32, 1).unfold(3, 32, 1)  # [B, 1, H-31, W-31, 32, 32]
            hits = (windows == crop[0]).flatten(-2).all(-1).nonzero()
            assert len(hits) == 1
            b, _, top, left = hits[0].tolist()
            assert mask[b, 0, top : top + 32, left : left + 32].sum() > 0
    again = sample_patches(real, fake, mask, n_pos=10, n_neg=12, patch_size=32, generator=_seeded(1))
    assert torch.equal(again[0], pos) and torch.equal(again[1], neg)
    other = sample_patches(real, fake, mask, n_pos=10, n_neg=12, patch_size=32, generator=_seeded(2))
    assert not torch.equal(other[0], pos)
    # Without a generator the crops come from torch's global generator: new every call, reproducible by seed.
    torch.manual_seed(4)
    first = sample_patches(real, fake, mask, 4, 4, 32)[0]
    second = sample_patches(real, fake, mask, 4, 4, 32)[0]
    torch.manual_seed(4)
    assert not torch.equal(first, second) and torch.equal(sample_patches(real, fake, mask, 4, 4, 32)[0], first)


def test_paired_positives_are_cropped_at_the_negatives_places() -> None:
    real, _, mask = _slices()
    pos, neg = sample_patches(real, real.clone(), mask, 6, 6, 32, _seeded(3), positives="paired")
    assert torch.equal(pos, neg)


def test_patches_larger_than_the_slice_are_refused() -> None:
    real, fake, mask = _slices(size=48)
    with pytest.raises(ValueError, match="exceeds the slice size"):
        sample_patches(real, fake, mask, patch_size=64)


# ------------------------------------------------------------------------------------------- total loss


def test_generator_loss_is_weighted_drift_plus_masked_l1() -> None:
    real, fake, mask = _slices()
    fake.requires_grad_(True)
    l1_only, terms = generator_loss(fake, real, mask, DriftConfig(lambda_drift=0.0, patch_size=32))
    expected = 10.0 * (fake - real).abs()[mask.bool()].mean()
    torch.testing.assert_close(l1_only, expected)
    assert terms.drift == 0.0 and terms.v2 == {}
    torch.testing.assert_close(masked_l1(fake, real, torch.zeros_like(mask)), (fake - real).abs().mean())

    config = DriftConfig(patch_size=32, features=("pixels", "pool2"))
    total, terms = generator_loss(fake, real, mask, config, _seeded(0))
    assert math.isclose(terms.total, terms.drift + 10.0 * terms.l1, rel_tol=1e-5)
    assert terms.drift > 0
    assert sorted(terms.v2) == sorted(f"v2/{f}/tau={t:g}" for f in ("pixels", "pool2") for t in (0.02, 0.05, 0.2))
    (grad,) = torch.autograd.grad(total, fake)
    outside = grad[:, :, :, 60:]  # right of every crop that can touch the body square (cols 5..24, patch 32)
    assert float(grad.abs().sum()) > 0 and float(outside.abs().sum()) == 0.0
    assert set(terms.as_dict()) >= {"loss", "l1", "drift"}


# ---------------------------------------------------------------------------------------------- network


def _as_if_trained(model: DriftingUNet) -> DriftingUNet:
    """PyTorch's default random head: a new network outputs a constant image (output_init), hiding errors."""
    model.head.reset_parameters()
    return model


def test_untrained_network_outputs_its_initial_level() -> None:
    torch.manual_seed(0)
    model = DriftingUNet(context_slices=3, noise_channels=1, width=8, depth=2, output_init=-0.5)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16), torch.randn(2, 1, 16, 16))
    torch.testing.assert_close(out, torch.full_like(out, -0.5))
    with pytest.raises(ValueError, match="output_init"):
        DriftingUNet(output_init=1.0)


@pytest.mark.parametrize(
    ("context", "noise", "depth", "size"),
    [(1, 1, 2, (32, 48)), (3, 2, 3, (64, 40)), (5, 1, 4, (48, 80)), (7, 0, 3, (16, 24))],
)
def test_network_output_shape_and_range(context: int, noise: int, depth: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = _as_if_trained(DriftingUNet(context_slices=context, noise_channels=noise, width=8, depth=depth))
    mr = torch.randn(2, context, *size) * 3
    z = torch.randn(2, noise, *size) if noise else None
    with torch.no_grad():
        out = model(mr, z)
    assert out.shape == (2, 1, *size)
    # the network reads its input: the two different MR stacks give different slices, and each slice has structure
    assert float((out[0] - out[1]).abs().max()) > 1e-3
    assert float(out[0].std()) > 1e-3


def test_network_uses_its_noise_and_refuses_bad_sizes() -> None:
    torch.manual_seed(0)
    model = _as_if_trained(DriftingUNet(context_slices=3, noise_channels=1, width=8, depth=2)).eval()
    mr = torch.randn(1, 3, 32, 32)
    z1, z2 = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(mr, z1), model(mr, z1))
        assert float((model(mr, z1) - model(mr, z2)).abs().max()) > 1e-4
        with pytest.raises(ValueError, match="multiples of 4"):
            model(torch.randn(1, 3, 30, 32), torch.randn(1, 1, 30, 32))
        with pytest.raises(ValueError, match="noise input"):
            model(mr)
        with pytest.raises(ValueError, match="MR slices"):
            model(torch.randn(1, 5, 32, 32), z1)


def test_conv_macs_match_a_hand_count() -> None:
    model = DriftingUNet(
        context_slices=1,
        noise_channels=1,
        width=4,
        depth=1,
        channel_mult=(1, 2),
        convs_per_block=1,
        bottleneck_noise=False,
    )
    # stem 2->4 @8x8, down 4->8 stride 2 @4x4, bottom 8->8 @4x4, transposed 8->4 k2 from 4x4, dec 8->4 @8x8, head 1x1
    hand = 64 * 4 * 2 * 9 + 16 * 8 * 4 * 9 + 16 * 8 * 8 * 9 + 16 * 8 * 4 * 4 + 64 * 4 * 8 * 9 + 64 * 4
    assert conv_macs(model, 1, 1, 8, 8) == hand == 39168
    assert conv_macs(model, 1, 1, 16, 16) == 4 * hand
    assert flops_per_slice(model, 8, 8) == 2 * hand


# ------------------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_onnx_export_matches_pytorch_with_dynamic_batch_and_size(tmp_path, norm: str) -> None:
    """ONNX Runtime vs PyTorch on the same input, at two batch sizes and slice sizes, in HU-scaled units.

    Mean |difference| < 1e-3 HU. The largest single-pixel difference must stay below 1e-2 HU and no larger than
    float32's own rounding error (PyTorch float32 vs the same network in float64, x2): with GroupNorm that
    rounding error alone reaches ~2e-3 HU on some pixels, so a 1e-3 HU maximum is met only by the BatchNorm
    variant (checked too). Either is far below the 1 HU step of the int16 output.
    """
    torch.manual_seed(0)
    model = _as_if_trained(DriftingUNet(context_slices=5, noise_channels=1, norm=norm))  # the default architecture
    if norm == "batch":  # give the running statistics non-trivial values
        with torch.no_grad():
            model.train()(torch.randn(4, 5, 64, 64), torch.randn(4, 1, 64, 64))
    path = export_onnx(model, tmp_path / "g.onnx", context_slices=5, noise_channels=1)
    assert model.training  # export restores the caller's mode (a new module is in training mode)
    model.eval()
    reference = copy.deepcopy(model).double()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["mr", "noise"]
    assert [o.name for o in session.get_outputs()] == ["ct"]
    rng = np.random.default_rng(0)
    for batch, height, width in ((2, 64, 96), (3, 48, 32)):
        mr = rng.standard_normal((batch, 5, height, width), dtype=np.float32) * 2
        noise = rng.standard_normal((batch, 1, height, width), dtype=np.float32)
        (onnx_out,) = session.run(["ct"], {"mr": mr, "noise": noise})
        with torch.no_grad():
            torch_out = model(torch.from_numpy(mr), torch.from_numpy(noise)).numpy()
            exact = reference(torch.from_numpy(mr).double(), torch.from_numpy(noise).double()).numpy()
        assert onnx_out.shape == (batch, 1, height, width)
        assert float(torch_out.std()) > 1e-2  # the outputs compared are not constant
        error_hu = np.abs(onnx_out - torch_out) * HU_PER_UNIT
        float32_hu = float(np.abs(torch_out - exact).max()) * HU_PER_UNIT
        assert float(error_hu.mean()) < 1e-3
        assert float(error_hu.max()) < min(1e-2, max(1e-3, 2 * float32_hu)), (float(error_hu.max()), float32_hu)
        if norm == "batch":
            assert float(error_hu.max()) < 1e-3


def test_onnx_export_without_noise_has_only_the_mr_input(tmp_path) -> None:
    model = DriftingUNet(context_slices=3, noise_channels=0, width=8, depth=2)
    path = export_onnx(model, tmp_path / "g.onnx", context_slices=3, noise_channels=0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["mr"]
    (out,) = session.run(None, {"mr": np.zeros((1, 3, 16, 20), dtype=np.float32)})
    assert out.shape == (1, 1, 16, 20)
