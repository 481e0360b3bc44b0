"""The drifting loss (Deng et al., "Generative Modeling via Drifting", 2026) on CT patches, plus masked L1.

The generator's samples x are pulled toward real samples (positives y+) and pushed away from other generated
samples (negatives y-) by a drift field V; the loss mean ||x - stopgrad(x + V)||^2 has gradient -2V / numel
with respect to x and no gradient through V. When the generated distribution equals the data distribution the
field is zero (anti-symmetry), so the objective has the data as its fixed point.

The field, per temperature tau, follows the paper's batch algorithm (see ../shared/docs/methods.md, section 1):
plain (unsquared) L2 distances divided by their batch mean, a large constant on the self-distances of the
negatives, logits [-d-/tau, -d+/tau], A = sqrt(softmax over y * softmax over x), W+ = A+ * s-, W- = A- * s+,
V = sum W+ (y+ - x) - sum W- (y- - x). One V per tau, each divided by its RMS, summed. Everything that makes V
(distances, their mean, the RMS) is computed without gradient: the stop-gradient holds on every scale.

For MR -> CT (the original design's adaptation) the samples are 64 x 64 patches: N+ random crops of real CT and N- random
crops of generated CT; the generated crops are both the negatives and the x's that receive the drift.
`generator_loss` adds lambda_l1 x masked L1 against the paired CT. A trainer calls, per step:

    loss, logs = generator_loss(pred, target, mask, config, generator)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
from torch.nn import functional as F

LOG = logging.getLogger(__name__)

NORMALISATIONS = ("both", "y", "none")
ENCODERS = ("", "ldm", "random", "anatomy")  # frozen feature spaces for the drift (training/features.py)
POSITIVES = ("independent", "paired")
#: RMS(V) below this share of the samples' RMS is float32 rounding noise, not a drift (see drift_field).
RMS_NOISE_FLOOR = 1.0e-5
SELF_DISTANCE = 1.0e6  # added to a negative's distance to itself (in mean-distance units): its weight becomes 0


def _pixels(patches: torch.Tensor) -> torch.Tensor:
    """Raw pixels, flattened: the original design's image-domain drift."""
    return patches.flatten(1)


def _pool(factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def features(patches: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(patches, factor).flatten(1)

    features.__doc__ = f"Pixels average-pooled {factor}x: a coarser scale with its own drift."
    return features


def _gradients(patches: torch.Tensor) -> torch.Tensor:
    """Forward differences along x and y: a drift that looks at edges (bone boundaries) directly."""
    dx = patches[..., :, 1:] - patches[..., :, :-1]
    dy = patches[..., 1:, :] - patches[..., :-1, :]
    return torch.cat([dx.flatten(1), dy.flatten(1)], dim=1)


# Each entry maps patches [N, 1, P, P] to features [N, D] differentiably; each feature gets its own drift loss
# (as the paper does for its encoder features). A frozen encoder can be added here by name.
FEATURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "pixels": _pixels,
    "pool2": _pool(2),
    "pool4": _pool(4),
    "gradients": _gradients,
}


@dataclass(frozen=True)
class DriftConfig:
    """Settings of `generator_loss`; the defaults are the paper's temperatures and the original design's patches/weights.

    taus: relative temperatures (distances are divided by their batch mean first).
    normalisation: "both" (sqrt of the softmax over y times the softmax over x, the paper's), "y" (softmax over
        y only) or "none" (plain kernel exp(-d / tau), shifted by its maximum for float range).
    patch_size, n_pos, n_neg: 64 x 64 crops, 16 of real CT (positives) and 16 of generated CT (negatives).
    positives: "independent" (the seed: real crops at their own random places, so the drift compares generated
        patches with the distribution of real patches) or "paired" (real crops at the negatives' places).
    body_fraction: probability that a patch is centred on a body-mask pixel (else anywhere in the slice).
    features: names in FEATURES; one drift loss per feature, summed.
    encoder: "" (none) or a frozen CT encoder from training/features.py ("ldm": the latent model's trained CT
        encoder; "random": the same architecture, random weights); its per-location and pooled features of the
        blocks in encoder_layers each get their own drift loss, beside the FEATURES above.
    encoder_weight: the encoder's drift losses are averaged over its features (12 for three layers), then weighted
        by this, so that adding an encoder does not multiply the drift's share of the gradient by the feature count
        (summing them swamped the L1 term: validation MAE 235 vs 119 HU at step 500).
    bank_size, bank_positives: a memory bank of the last bank_size real patches' features (0: none, positives are
        the step's n_pos crops); each step draws bank_positives positives from it (independent positives only).
    lambda_drift, lambda_l1: weights of the drift loss and of the masked L1 (lambda_drift = 0: L1 only).
    drift_start, drift_ramp: the drift's schedule: off (not even computed) for the first drift_start steps, then its
        weight rises linearly from 0 to lambda_drift over drift_ramp steps (0: at once); L1 first, drift on top later.
    lambda_anatomy, anatomy_checkpoint, anatomy_layers: the anatomy-aware loss (training/anatomy.py): L1 between
        the frozen CT tissue network's features of sCT and CT inside the body at the levels anatomy_layers, weighted
        by lambda_anatomy (0: off). encoder = "anatomy" drifts in the same network's features (encoder_layers then
        index its levels 0-3).
    """

    taus: tuple[float, ...] = (0.02, 0.05, 0.2)
    normalisation: str = "both"
    patch_size: int = 64
    n_pos: int = 16
    n_neg: int = 16
    positives: str = "independent"
    body_fraction: float = 1.0
    features: tuple[str, ...] = ("pixels",)
    encoder: str = ""
    encoder_layers: tuple[int, ...] = (1, 3, 5)
    bank_size: int = 0
    bank_positives: int = 64
    encoder_weight: float = 1.0
    lambda_drift: float = 1.0
    lambda_l1: float = 10.0
    drift_start: int = 0
    drift_ramp: int = 0
    lambda_anatomy: float = 0.0
    anatomy_checkpoint: str = ""
    anatomy_layers: tuple[int, ...] = (0, 1, 2, 3)

    def __post_init__(self) -> None:
        if not self.taus or any(not (tau > 0 and math.isfinite(tau)) for tau in self.taus):
            raise ValueError(f"DriftConfig: taus must be positive numbers, got {self.taus}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"DriftConfig: normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.positives not in POSITIVES:
            raise ValueError(f"DriftConfig: positives must be one of {POSITIVES}, got {self.positives!r}")
        if self.patch_size < 1 or self.n_pos < 1 or self.n_neg < 2:
            raise ValueError(
                f"DriftConfig: need patch_size >= 1, n_pos >= 1, n_neg >= 2; "
                f"got {self.patch_size}, {self.n_pos}, {self.n_neg}"
            )
        if self.positives == "paired" and self.n_pos != self.n_neg:
            raise ValueError(f"DriftConfig: positives='paired' needs n_pos == n_neg, got {self.n_pos}, {self.n_neg}")
        if not 0.0 <= self.body_fraction <= 1.0:
            raise ValueError(f"DriftConfig: body_fraction must be in [0, 1], got {self.body_fraction}")
        unknown = [name for name in self.features if name not in FEATURES]
        if (not self.features and not self.encoder) or unknown:
            raise ValueError(
                f"DriftConfig: features must be names from {sorted(FEATURES)} (or empty with an encoder), "
                f"got {list(self.features)}"
            )
        if self.encoder not in ENCODERS:
            raise ValueError(f"DriftConfig: encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.drift_start < 0 or self.drift_ramp < 0:
            raise ValueError(
                f"DriftConfig: drift_start and drift_ramp must be >= 0, got {self.drift_start}, {self.drift_ramp}"
            )
        if self.lambda_anatomy < 0:
            raise ValueError(f"DriftConfig: lambda_anatomy must be >= 0, got {self.lambda_anatomy}")
        if (self.lambda_anatomy > 0 or self.encoder == "anatomy") and not self.anatomy_checkpoint:
            raise ValueError(
                "DriftConfig: lambda_anatomy > 0 and encoder = 'anatomy' need anatomy_checkpoint "
                "(python -m training.anatomy trains one)"
            )
        if self.encoder_weight < 0:
            raise ValueError(f"DriftConfig: encoder_weight must be >= 0, got {self.encoder_weight}")
        if self.bank_size < 0 or (self.bank_size and self.bank_positives < 1):
            raise ValueError(
                f"DriftConfig: need bank_size >= 0 and bank_positives >= 1, got {self.bank_size}, {self.bank_positives}"
            )
        if self.bank_size and self.positives == "paired":
            raise ValueError(
                "DriftConfig: a memory bank needs independent positives (paired ones sit at the negatives' places)"
            )
        if self.lambda_drift < 0 or self.lambda_l1 < 0:
            raise ValueError(f"DriftConfig: lambdas must be >= 0, got {self.lambda_drift}, {self.lambda_l1}")

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> DriftConfig:
        """Build from a config file's block; unknown keys are an error (a typo must not silently use a default)."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"DriftConfig: unknown keys {unknown}; known: {sorted(known)}")
        converted = dict(values)
        for key in ("taus", "features", "encoder_layers", "anatomy_layers"):
            if key in converted:
                converted[key] = tuple(converted[key])  # type: ignore[arg-type]
        return cls(**converted)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


# --------------------------------------------------------------------------------------------------- the field


def _distances(
    x: torch.Tensor, y_pos: torch.Tensor, y_neg: torch.Tensor, exclude_self: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain L2 distances x-y+ and x-y- per group [G, N, *], divided by their group mean; self-distances made huge."""
    d_pos = torch.cdist(x, y_pos, compute_mode="donot_use_mm_for_euclid_dist")
    d_neg = torch.cdist(x, y_neg, compute_mode="donot_use_mm_for_euclid_dist")
    n = x.shape[-2]
    if exclude_self:
        if y_neg.shape[-2] != n:
            raise ValueError(f"drift: exclude_self needs the negatives to be the x's, got {y_neg.shape[-2]} vs {n}")
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        neg_sum = (d_neg * ~eye).sum(dim=(-2, -1))
        count = d_pos[0].numel() + n * (n - 1)
    else:
        eye = None
        neg_sum = d_neg.sum(dim=(-2, -1))
        count = d_pos[0].numel() + d_neg[0].numel()
    scale = ((d_pos.sum(dim=(-2, -1)) + neg_sum) / count).clamp_min(torch.finfo(x.dtype).tiny)[:, None, None]
    d_pos = d_pos / scale
    d_neg = d_neg / scale
    if eye is not None:
        d_neg = d_neg + eye * SELF_DISTANCE
    return d_pos, d_neg


def _affinity(logits: torch.Tensor, normalisation: str) -> torch.Tensor:
    """A [G, N, N- + N+] from the logits: the paper's double softmax, the y-only softmax, or the plain kernel."""
    if normalisation == "both":
        return torch.sqrt(torch.softmax(logits, dim=-1) * torch.softmax(logits, dim=-2))
    if normalisation == "y":
        return torch.softmax(logits, dim=-1)
    # A per-group shift only rescales that group's V, which the RMS normalisation removes; it keeps exp() in range.
    return torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True))


def _field(
    x: torch.Tensor,
    y_pos: torch.Tensor,
    y_neg: torch.Tensor,
    d_pos: torch.Tensor,
    d_neg: torch.Tensor,
    tau: float,
    normalisation: str,
) -> torch.Tensor:
    n_neg = y_neg.shape[-2]
    logits = torch.cat([-d_neg / tau, -d_pos / tau], dim=-1)
    affinity = _affinity(logits, normalisation)
    a_neg, a_pos = affinity[..., :n_neg], affinity[..., n_neg:]
    s_pos = a_pos.sum(dim=-1, keepdim=True)
    s_neg = a_neg.sum(dim=-1, keepdim=True)
    w_pos = a_pos * s_neg
    w_neg = a_neg * s_pos
    # sum_j W+_ij (y+_j - x_i) - sum_j W-_ij (y-_j - x_i), written with (batched) matrix products.
    attraction = w_pos @ y_pos - w_pos.sum(dim=-1, keepdim=True) * x
    repulsion = w_neg @ y_neg - w_neg.sum(dim=-1, keepdim=True) * x
    return attraction - repulsion


@torch.no_grad()
def drift_field(
    x: torch.Tensor,
    y_pos: torch.Tensor,
    y_neg: torch.Tensor | None = None,
    taus: Sequence[float] = (0.02, 0.05, 0.2),
    normalisation: str = "both",
    exclude_self: bool | None = None,
) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """The drift V for samples x [N, D] (or G independent groups [G, N, D]): sum over taus of V_tau / RMS(V_tau).

    Also returns the raw V_tau per tau. Groups (for example one per feature-map location) each get their own
    distance scale and RMS, as if each were its own drift loss. y_neg None means "the negatives are the x's
    themselves" (the generated batch), with self-exclusion; exclude_self defaults to True exactly in that case.
    No gradient flows through anything here.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"drift: normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    x = x.detach().float()
    y_pos = y_pos.detach().float()
    if y_neg is None:
        y_neg = x
        exclude_self = True if exclude_self is None else exclude_self
    else:
        y_neg = y_neg.detach().float()
        exclude_self = False if exclude_self is None else exclude_self
    grouped = x.ndim == 3
    if not grouped:
        x, y_pos, y_neg = x[None], y_pos[None], y_neg[None]
    if (
        x.ndim != 3
        or y_pos.ndim != 3
        or y_neg.ndim != 3
        or not (x.shape[2] == y_pos.shape[2] == y_neg.shape[2])
        or not (x.shape[0] == y_pos.shape[0] == y_neg.shape[0])
    ):
        raise ValueError(
            f"drift: need x [N, D], y+ [N+, D], y- [N-, D] (or the same with a leading group axis); got "
            f"{tuple(x.shape)}, {tuple(y_pos.shape)}, {tuple(y_neg.shape)}"
        )
    d_pos, d_neg = _distances(x, y_pos, y_neg, exclude_self)
    # A V this small next to the samples themselves is rounding noise (positives and negatives balance exactly):
    # dividing it by its own RMS would blow the noise up to a unit-size field, so it counts as zero.
    scale = x.square().mean(dim=(-2, -1), keepdim=True).sqrt() + y_pos.square().mean(dim=(-2, -1), keepdim=True).sqrt()
    floor = (RMS_NOISE_FLOOR * scale).clamp_min(torch.finfo(x.dtype).tiny)
    total = torch.zeros_like(x)
    raw: dict[float, torch.Tensor] = {}
    for tau in taus:
        v = _field(x, y_pos, y_neg, d_pos, d_neg, float(tau), normalisation)
        raw[float(tau)] = v if grouped else v[0]
        rms = v.square().mean(dim=(-2, -1), keepdim=True).sqrt()
        total += torch.where(rms > floor, v / rms.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))
    return (total if grouped else total[0]), raw


def drifting_loss(
    x: torch.Tensor,
    y_pos: torch.Tensor,
    y_neg: torch.Tensor | None = None,
    taus: Sequence[float] = (0.02, 0.05, 0.2),
    normalisation: str = "both",
    exclude_self: bool | None = None,
) -> tuple[torch.Tensor, dict[float, float]]:
    """mean over elements of (x - stopgrad(x + V))^2 for x [N, D] or [G, N, D]; gradient w.r.t. x is -2 V / x.numel().

    Returns the loss and, per tau, the raw (un-normalised) mean squared drift per element, mean(V_tau^2): the
    normalised loss stays roughly flat by design, this is what shows whether q approaches p.
    """
    v, raw = drift_field(x, y_pos, y_neg, taus, normalisation, exclude_self)
    xf = x.float()
    target = (xf + v).detach()
    loss = (xf - target).square().mean()
    return loss, {tau: float(value.square().mean()) for tau, value in raw.items()}


# ------------------------------------------------------------------------------------------------- patches


def _corners(
    mask: torch.Tensor, count: int, patch: int, body_fraction: float, generator: torch.Generator | None
) -> list[tuple[int, int, int]]:
    """`count` (slice, top, left) crop corners; centres on body pixels with probability body_fraction."""
    batch, height, width = mask.shape
    corners = []
    slices = torch.randint(batch, (count,), generator=generator).tolist()
    coins = torch.rand(count, generator=generator).tolist()
    for index, coin in zip(slices, coins):
        body = mask[index].nonzero() if coin < body_fraction else None
        if body is not None and len(body):
            cy, cx = body[int(torch.randint(len(body), (1,), generator=generator))].tolist()
        else:
            cy = int(torch.randint(height, (1,), generator=generator))
            cx = int(torch.randint(width, (1,), generator=generator))
        top = min(max(cy - patch // 2, 0), height - patch)
        left = min(max(cx - patch // 2, 0), width - patch)
        corners.append((index, top, left))
    return corners


def _crop(images: torch.Tensor, corners: list[tuple[int, int, int]], patch: int) -> torch.Tensor:
    return torch.stack([images[b, :, top : top + patch, left : left + patch] for b, top, left in corners])


def sample_patches(
    real: torch.Tensor,
    fake: torch.Tensor,
    mask: torch.Tensor | None,
    n_pos: int = 16,
    n_neg: int = 16,
    patch_size: int = 64,
    generator: torch.Generator | None = None,
    body_fraction: float = 1.0,
    positives: str = "independent",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop positives [n_pos, 1, P, P] from real CT and negatives [n_neg, 1, P, P] from generated CT.

    real, fake: [B, 1, H, W] (fake keeps its gradient: its crops are the x's that receive the drift); mask:
    [B, 1, H, W] body mask or None. Crop positions are drawn from `generator` (a seeded torch.Generator on the
    CPU; None: torch's global generator, seeded by torch.manual_seed) so a run is reproducible; they prefer
    the body (see DriftConfig.body_fraction).
    """
    if real.shape != fake.shape or real.ndim != 4 or real.shape[1] != 1:
        raise ValueError(
            f"sample_patches: real and fake must both be [B, 1, H, W], got {tuple(real.shape)}, {tuple(fake.shape)}"
        )
    height, width = real.shape[-2:]
    if patch_size > min(height, width):
        raise ValueError(f"sample_patches: patch size {patch_size} exceeds the slice size {height} x {width}")
    if positives not in POSITIVES:
        raise ValueError(f"sample_patches: positives must be one of {POSITIVES}, got {positives!r}")
    body = (mask[:, 0] > 0.5).cpu() if mask is not None else torch.ones(real.shape[0], height, width, dtype=torch.bool)
    neg_corners = _corners(body, n_neg, patch_size, body_fraction, generator)
    if positives == "paired":
        pos_corners = neg_corners[:n_pos]
    else:
        pos_corners = _corners(body, n_pos, patch_size, body_fraction, generator)
    return _crop(real.detach(), pos_corners, patch_size), _crop(fake, neg_corners, patch_size)


# ---------------------------------------------------------------------------------------------- the total


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean |pred - target| over body pixels (all pixels when there is no mask or it is empty)."""
    error = (pred.float() - target.float()).abs()
    if mask is None:
        return error.mean()
    weight = (mask > 0.5).to(error.dtype).expand_as(error)
    total = weight.sum()
    if total == 0:
        return error.mean()
    return (error * weight).sum() / total


@dataclass
class LossTerms:
    """What one step's loss is made of (floats, detached): for logging."""

    total: float
    l1: float
    drift: float
    v2: dict[str, float] = field(default_factory=dict)
    anatomy: float = 0.0
    drift_weight: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": self.total,
            "l1": self.l1,
            "drift": self.drift,
            "anatomy": self.anatomy,
            "drift_weight": self.drift_weight,
            **self.v2,
        }


class DriftObjective:
    """lambda_drift x drift losses + lambda_l1 x masked L1 (+ lambda_anatomy x the anatomy loss), with the state
    some variants need (encoder, bank, anatomy network, the step for the drift's schedule).

    Per step: patches of generated CT (the x's and negatives) and of real CT (positives) are cropped; each
    feature (pixels, pooled pixels, gradients, and with an encoder its per-location and pooled features per
    layer) gets its own drift loss; with a bank, the real patches' features are pushed and the positives are
    drawn from the bank. The encoder and the anatomy network are built once and never train. The trainer sets
    `step` before each call (the drift's weight follows drift_start / drift_ramp).
    """

    def __init__(
        self,
        config: DriftConfig | None = None,
        manifest: str = "model_weights/manifest.json",
        device: torch.device | str = "cpu",
        ct_window_hu: Sequence[float] | None = None,
    ) -> None:
        self.config = config or DriftConfig()
        self.encoder = None
        self.bank = None
        self.anatomy = None
        self.step = 0
        if self.config.lambda_drift > 0 and self.config.encoder:
            from training.features import build_encoder

            self.encoder = build_encoder(
                self.config.encoder,
                self.config.encoder_layers,
                manifest,
                anatomy_checkpoint=self.config.anatomy_checkpoint,
            ).to(device)
        if self.config.lambda_drift > 0 and self.config.bank_size:
            from training.features import FeatureBank

            self.bank = FeatureBank(self.config.bank_size)
        if self.config.lambda_anatomy > 0:
            from training.tissue_net import AnatomyLoss

            self.anatomy = AnatomyLoss(self.config.anatomy_checkpoint, self.config.anatomy_layers, device, ct_window_hu)

    def drift_weight(self, step: int | None = None) -> float:
        """lambda_drift on the schedule: 0 before drift_start, then a linear ramp over drift_ramp steps."""
        config = self.config
        step = self.step if step is None else step
        if config.lambda_drift <= 0 or step < config.drift_start:
            return 0.0
        if config.drift_ramp <= 0:
            return config.lambda_drift
        return config.lambda_drift * min(1.0, (step - config.drift_start + 1) / config.drift_ramp)

    def features(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every drift feature of patches [N, 1, P, P], as [G, N, D]."""
        sets = {name: FEATURES[name](patches)[None] for name in self.config.features}
        if self.encoder is not None:
            from training.features import feature_sets

            sets.update({f"encoder/{key}": value for key, value in feature_sets(self.encoder(patches)).items()})
        return sets

    def __call__(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, LossTerms]:
        config = self.config
        l1 = masked_l1(pred, target, mask)
        total = config.lambda_l1 * l1
        anatomy_value = 0.0
        if self.anatomy is not None:
            anatomy = self.anatomy(pred, target, mask)
            total = total + config.lambda_anatomy * anatomy
            anatomy_value = float(anatomy.detach())
        drift_value = 0.0
        v2: dict[str, float] = {}
        weight_now = self.drift_weight()
        if weight_now > 0:
            pos, neg = sample_patches(
                target,
                pred,
                mask,
                config.n_pos,
                config.n_neg,
                config.patch_size,
                generator,
                config.body_fraction,
                config.positives,
            )
            with torch.no_grad():
                positives = self.features(pos.float())
            if self.bank is not None:
                self.bank.push(positives)
                positives = self.bank.sample(config.bank_positives, generator)
            negatives = self.features(neg.float())
            drift = pred.new_zeros((), dtype=torch.float32)
            encoder_count = sum(name.startswith("encoder/") for name in negatives)
            for name, x in negatives.items():
                loss, raw = drifting_loss(x, positives[name], None, config.taus, config.normalisation)
                weight = config.encoder_weight / encoder_count if name.startswith("encoder/") else 1.0
                drift = drift + weight * loss
                v2.update({f"v2/{name}/tau={tau:g}": value for tau, value in raw.items()})
            total = total + weight_now * drift
            drift_value = float(drift.detach())
        terms = LossTerms(
            total=float(total.detach()),
            l1=float(l1.detach()),
            drift=drift_value,
            v2=v2,
            anatomy=anatomy_value,
            drift_weight=weight_now,
        )
        return total, terms


def generator_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    config: DriftConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, LossTerms]:
    """lambda_drift x drift loss on patches + lambda_l1 x masked L1; pred/target/mask are [B, 1, H, W].

    The stateless case of DriftObjective (no encoder, no bank): one drifting_loss per feature in
    config.features on the generated patches (x and negatives) against real patches (positives), summed.
    Skipped entirely when lambda_drift == 0 (the L1-only baseline). The log's v2 keys are
    "v2/<feature>/tau=<tau>": mean(V_tau^2) per element, un-normalised.
    """
    config = config or DriftConfig()
    if config.encoder or config.bank_size or config.lambda_anatomy > 0:
        raise ValueError(
            "generator_loss: an encoder, a bank or the anatomy loss needs a DriftObjective (it keeps their state)"
        )
    return DriftObjective(config)(pred, target, mask, generator)
