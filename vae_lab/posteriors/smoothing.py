"""Continuous relaxations of binary latents for DVAE, DVAE++ and DVAE#.

A binary unit z ~ Bernoulli(q), q = sigmoid(logit), is smoothed into a continuous ζ by a pair of
overlapping densities r(ζ|z). Every smoothing here is symmetric about 1/2, r(ζ|1) = r(1-ζ|0), so a
`Smoothing` only describes r(ζ|0); the relaxations mix the two branches:

- `OverlappingRelaxation` (DVAE++, DVAE#): q(ζ|x) = (1-q) r(ζ|0) + q r(ζ|1), with gradients of
  ancestral samples by implicit differentiation of the mixture CDF (DVAE# sec. 3.4).
- `SpikeAndExponential` (DVAE, Rolfe 2016): r(ζ|0) = δ(ζ), r(ζ|1) = β e^{β(ζ-1)} / (1 - e^{-β}),
  reparameterised through the inverse CDF of the mixture.
- `GaussianMixtureRelaxation` (DVAE#, "Gaussian integral"): (1-q) N(δμ, σ²) + q N(1+δμ, σ²).

All functions are elementwise, work in the dtype of their inputs and take an optional
`torch.Generator` (on the tensors' device) for reproducible draws.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_lab.posteriors.bernoulli import bernoulli_sample

_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------- smoothings r(ζ|0)

class Smoothing:
    """The branch density r(ζ|z=0); r(ζ|z=1) = r(1-ζ|z=0) by symmetry.

    `beta` is the sharpness: as β → ∞, r(ζ|0) → δ(ζ) and the relaxation tends to the binary z.
    Subclasses give log_pdf, cdf and icdf; `sample` draws by the inverse CDF of uniforms.
    """

    def __init__(self, beta: float):
        if not beta > 0:
            raise ValueError(f"smoothing beta must be positive, got {beta}")
        self.beta = float(beta)

    def log_pdf(self, zeta: Tensor) -> Tensor:
        """log r(ζ|0), elementwise."""
        raise NotImplementedError

    def cdf(self, zeta: Tensor) -> Tensor:
        """R(ζ|0) = ∫_{-∞}^ζ r(t|0) dt, elementwise."""
        raise NotImplementedError

    def icdf(self, rho: Tensor) -> Tensor:
        """R^{-1}(ρ|0) for ρ in (0, 1)."""
        raise NotImplementedError

    def sample(self, shape, generator: torch.Generator | None = None, device=None,
               dtype: torch.dtype | None = None) -> Tensor:
        """ζ ~ r(·|0) of the given shape: ζ = R^{-1}(ρ|0), ρ ~ U(0, 1)."""
        rho = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return self.icdf(rho)


class Exponential(Smoothing):
    """Truncated exponential on [0, 1] (DVAE++).

    r(ζ|0) = β e^{-βζ} / (1 - e^{-β}),  R(ζ|0) = (1 - e^{-βζ}) / (1 - e^{-β}),
    R^{-1}(ρ) = -log(1 - ρ (1 - e^{-β})) / β; written with expm1/log1p so β up to ~700 is exact.
    `cdf` clamps ζ to the support [0, 1]; `log_pdf` is meant for ζ in [0, 1].
    """

    def log_pdf(self, zeta: Tensor) -> Tensor:
        return math.log(self.beta) - self.beta * zeta - math.log(-math.expm1(-self.beta))

    def cdf(self, zeta: Tensor) -> Tensor:
        zeta = zeta.clamp(0, 1)
        return torch.expm1(-self.beta * zeta) / math.expm1(-self.beta)

    def icdf(self, rho: Tensor) -> Tensor:
        return -torch.log1p(rho * math.expm1(-self.beta)) / self.beta


class PowerFunction(Smoothing):
    """Power-function smoothing on [0, 1] (DVAE++ / DVAE# "power"), λ = 1/β.

    r(ζ|0) = λ ζ^{λ-1},  R(ζ|0) = ζ^λ,  R^{-1}(ρ) = ρ^β.
    The density is infinite at ζ = 0, and float draws ρ^β underflow to 0 for large β, so
    `log_pdf` clamps ζ from below at the smallest normal number of its dtype (1.2e-38 in float32,
    2.2e-308 in float64); it is finite everywhere on [0, 1] and exact above that clamp. (The
    reference code adds 1e-7 to ζ instead, which for β = 40 moves two thirds of the mass.)
    `cdf` clamps ζ to the support [0, 1].
    """

    def __init__(self, beta: float):
        super().__init__(beta)
        self.lam = 1.0 / self.beta

    def log_pdf(self, zeta: Tensor) -> Tensor:
        zeta = zeta.clamp_min(torch.finfo(zeta.dtype).tiny)
        return (self.lam - 1) * torch.log(zeta) + math.log(self.lam)

    def cdf(self, zeta: Tensor) -> Tensor:
        return zeta.clamp(0, 1).pow(self.lam)

    def icdf(self, rho: Tensor) -> Tensor:
        return rho.pow(self.beta)


class Gaussian(Smoothing):
    """Gaussian smoothing on ℝ, σ = β^{-1/2} (DVAE#).

    r(ζ|0) = N(ζ; 0, σ²),  R(ζ|0) = Φ(ζ/σ),  R^{-1}(ρ) = σ Φ^{-1}(ρ); `sample` uses randn.
    """

    def __init__(self, beta: float):
        super().__init__(beta)
        self.sigma = self.beta ** -0.5

    def log_pdf(self, zeta: Tensor) -> Tensor:
        return -0.5 * (zeta / self.sigma).square() - math.log(self.sigma) - 0.5 * _LOG_2PI

    def cdf(self, zeta: Tensor) -> Tensor:
        return torch.special.ndtr(zeta / self.sigma)

    def icdf(self, rho: Tensor) -> Tensor:
        return self.sigma * torch.special.ndtri(rho)

    def sample(self, shape, generator: torch.Generator | None = None, device=None,
               dtype: torch.dtype | None = None) -> Tensor:
        """ζ = σ ε, ε ~ N(0, 1)."""
        return self.sigma * torch.randn(shape, generator=generator, device=device, dtype=dtype)


class UniformExponential(Smoothing):
    """Exponential mixed with a uniform on [0, 1] (DVAE#): r = (1-ε) Exponential(β) + ε U[0, 1].

    r(ζ|0) = (1-ε) β e^{-βζ} / (1 - e^{-β}) + ε,  R(ζ|0) = (1-ε) R_exp(ζ) + ε ζ.
    R has no closed-form inverse; `icdf` solves R(ζ) = ρ by Newton's method. R is increasing and
    concave, so Newton from a point below the root climbs monotonically to it; the start is
    max(R_exp^{-1}(ρ), (ρ - 1 + ε)/ε), both below the root since R ≥ R_exp ≥ identity on [0, 1].
    `sample` draws from the two components (exact, no iterations).
    """

    def __init__(self, beta: float, eps: float = 0.05):
        super().__init__(beta)
        if not 0 <= eps < 1:
            raise ValueError(f"uniform weight eps must be in [0, 1), got {eps}")
        self.eps = float(eps)
        self.exponential = Exponential(beta)

    def log_pdf(self, zeta: Tensor) -> Tensor:
        log_exp = math.log1p(-self.eps) + self.exponential.log_pdf(zeta)
        if self.eps == 0:
            return log_exp
        return torch.logaddexp(log_exp, torch.full_like(log_exp, math.log(self.eps)))

    def cdf(self, zeta: Tensor) -> Tensor:
        zeta = zeta.clamp(0, 1)
        return (1 - self.eps) * self.exponential.cdf(zeta) + self.eps * zeta

    def icdf(self, rho: Tensor, max_iter: int = 60) -> Tensor:
        zeta = self.exponential.icdf(rho)
        if self.eps > 0:
            zeta = torch.maximum(zeta, (rho - 1 + self.eps) / self.eps)
        for _ in range(max_iter):
            step = (rho - self.cdf(zeta)) / self.log_pdf(zeta).exp()
            new = (zeta + step).clamp(0, 1)
            done = torch.equal(new, zeta)
            zeta = new
            if done:
                break
        return zeta

    def sample(self, shape, generator: torch.Generator | None = None, device=None,
               dtype: torch.dtype | None = None) -> Tensor:
        """Uniform with probability ε, else truncated exponential."""
        pick = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        rho = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return torch.where(pick < self.eps, rho, self.exponential.icdf(rho))


# ---------------------------------------------------------------------------- relaxations

def _log_mixture(logits: Tensor, log_r0: Tensor, log_r1: Tensor) -> Tensor:
    """log((1-q) r0 + q r1) from log r0, log r1 and the logit of q, without under/overflow."""
    return torch.logaddexp(F.logsigmoid(-logits) + log_r0, F.logsigmoid(logits) + log_r1)


def _log_q_one_minus_q(logits: Tensor) -> Tensor:
    """log(q (1-q)) = log dq/dl, exact for any l (no saturation of the sigmoid)."""
    return F.logsigmoid(logits) + F.logsigmoid(-logits)


class OverlappingRelaxation:
    """q(ζ|x) = (1-q) r(ζ|0) + q r(ζ|1), q = sigmoid(logits) (DVAE++, DVAE#).

    Samples are ancestral: z ~ Bernoulli(q), ζ ~ r(·|z). Their gradient wrt q comes from implicit
    differentiation of the mixture CDF F(ζ; q) = (1-q) R(ζ|0) + q R(ζ|1) at fixed F:
        ∂ζ/∂q = (R(ζ|0) - R(ζ|1)) / ((1-q) r(ζ|0) + q r(ζ|1)),  R(ζ|1) = 1 - R(1-ζ|0).
    """

    num_params = 1
    family = "overlapping"  # its row in the regulariser table (vae_lab/regularisers.py)

    def __init__(self, smoothing: Smoothing):
        self.smoothing = smoothing

    def rsample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """ζ ~ q(ζ|x) with the implicit gradient attached to `logits`.

        The value is the ancestral draw; the gradient is added as g (l - l.detach()) with
        g = ∂ζ/∂l = ∂ζ/∂q · q(1-q), in log space: g = (R0 - R1) exp(log q(1-q) - log q(ζ)).
        R0 - R1 ≥ 0 for these symmetric smoothings, so g is finite and ≥ 0 (0 where ζ sits at an
        end of [0, 1] and R0 = R1), with no NaN for any finite logit. Tying the gradient to the
        logit rather than to q = sigmoid(l) keeps it exact where q rounds to 0 or 1.
        """
        z = bernoulli_sample(logits, generator)
        zeta0 = self.smoothing.sample(logits.shape, generator, logits.device, logits.dtype)
        zeta = torch.where(z > 0, 1 - zeta0, zeta0)  # [..., n]
        with torch.no_grad():
            s = self.smoothing
            diff = (s.cdf(zeta) - (1 - s.cdf(1 - zeta))).clamp_min(0)  # R(ζ|0) - R(ζ|1)
            log_density = self.log_prob(zeta, logits)
            grad = diff * torch.exp(_log_q_one_minus_q(logits) - log_density)  # ∂ζ/∂l
        return zeta + grad * (logits - logits.detach())

    def log_prob(self, zeta: Tensor, logits: Tensor) -> Tensor:
        """log q(ζ|x) = log((1-q) r(ζ|0) + q r(1-ζ|0)) per unit, in logsumexp form."""
        return _log_mixture(logits, self.smoothing.log_pdf(zeta), self.smoothing.log_pdf(1 - zeta))

    def cdf(self, zeta: Tensor, logits: Tensor) -> Tensor:
        """F(ζ; q) = (1-q) R(ζ|0) + q (1 - R(1-ζ|0))."""
        q = torch.sigmoid(logits)
        return (1 - q) * self.smoothing.cdf(zeta) + q * (1 - self.smoothing.cdf(1 - zeta))

    def log_ratio(self, zeta: Tensor) -> Tensor:
        """log r(ζ|1) - log r(ζ|0) = log r(1-ζ|0) - log r(ζ|0) (the DVAE++ KL term)."""
        return self.smoothing.log_pdf(1 - zeta) - self.smoothing.log_pdf(zeta)


class SpikeAndExponential:
    """DVAE's relaxation (Rolfe 2016): r(ζ|0) = δ(ζ), r(ζ|1) = β e^{β(ζ-1)} / (1 - e^{-β}).

    The mixture CDF is F(ζ) = (1-q) + q (e^{βζ} - 1)/(e^β - 1) for ζ ≥ 0, so its inverse at
    ρ ~ U(0, 1) is 0 if ρ < 1-q, else
        ζ = (1/β) log(1 + (e^β - 1) u),  u = (ρ - 1 + q)/q
          = 1 + (1/β) log(e^{-β} + u (1 - e^{-β}))   (the form used, finite for any β),
    a differentiable function of q.
    """

    num_params = 1
    family = "spike_and_exponential"  # its row in the regulariser table (vae_lab/regularisers.py)

    def __init__(self, beta: float):
        if not beta > 0:
            raise ValueError(f"spike-and-exponential beta must be positive, got {beta}")
        self.beta = float(beta)

    def rsample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """ζ = F^{-1}(ρ; q), differentiable wrt logits through q (0 on the spike)."""
        rho = torch.rand(logits.shape, generator=generator, device=logits.device,
                         dtype=logits.dtype)
        q = torch.sigmoid(logits)
        on_slab = rho >= 1 - q.detach()
        q_safe = torch.where(on_slab, q, torch.ones_like(q))  # no inf/NaN in the unused branch
        u = 1 - (1 - rho) / q_safe
        inner = math.exp(-self.beta) - u * math.expm1(-self.beta)
        inner = inner.clamp_min(torch.finfo(u.dtype).tiny)  # 0 only if u = 0 and e^{-β} underflows
        slab = (1 + torch.log(inner) / self.beta).clamp_min(0)
        return torch.where(on_slab, slab, torch.zeros_like(slab))

    def cdf(self, zeta: Tensor, logits: Tensor) -> Tensor:
        """F(ζ; q) = (1-q) + q (e^{βζ} - 1)/(e^β - 1) on [0, 1]; F(0) = 1-q is the spike's mass."""
        q = torch.sigmoid(logits)
        zeta = zeta.clamp(0, 1)
        return 1 - q + q * torch.exp(self.beta * (zeta - 1)) * torch.expm1(-self.beta * zeta) \
            / math.expm1(-self.beta)

    def log_ratio(self, zeta: Tensor) -> Tensor:
        """Zeros: DVAE's KL uses the Bernoulli means only."""
        return torch.zeros_like(zeta)


class GaussianMixtureRelaxation:
    """DVAE#'s "Gaussian integral" relaxation, per unit: (1-q) N(ζ; δμ, σ²) + q N(ζ; 1+δμ, σ²).

    The encoder gives two outputs per unit: the logit of q and a raw shift t, with
    δμ = delta_mu_scale (sigmoid(t) - 1/2) ∈ (-scale/2, scale/2). σ is a tensor broadcastable to
    the logits (a learned per-unit scale). Samples are ancestral, ζ = z + δμ + σ ε, with implicit
    gradients from the mixture CDF F(ζ) = (1-q) Φ(a0) + q Φ(a1), a_k = (ζ - k - δμ)/σ:
        ∂ζ/∂q  = (Φ(a0) - Φ(a1)) / ((1-q) n0 + q n1),
        ∂ζ/∂σ  = [(1-q) n0 (ζ - δμ) + q n1 (ζ - 1 - δμ)] / (σ [(1-q) n0 + q n1]),
        ∂ζ/∂δμ = 1,
    where n_k = N(ζ; k + δμ, σ²).
    """

    num_params = 2
    family = "gaussian_integral"  # its row in the regulariser table (vae_lab/regularisers.py)

    def __init__(self, delta_mu_scale: float = 0.5, minimum_lambda: float = 0.0):
        self.delta_mu_scale = float(delta_mu_scale)
        self.minimum_lambda = float(minimum_lambda or 0.0)  # the floor of the RBM prior's λ (DVAE#: the sharpness β)

    def shift(self, raw: Tensor) -> Tensor:
        """δμ = delta_mu_scale (sigmoid(t) - 1/2) from the encoder's second output t."""
        return self.delta_mu_scale * (torch.sigmoid(raw) - 0.5)

    @staticmethod
    def _log_components(zeta: Tensor, sigma: Tensor, delta_mu: Tensor) -> tuple[Tensor, Tensor]:
        """log N(ζ; δμ, σ²) and log N(ζ; 1+δμ, σ²)."""
        const = torch.log(sigma) + 0.5 * _LOG_2PI
        a0 = (zeta - delta_mu) / sigma
        a1 = (zeta - 1 - delta_mu) / sigma
        return -0.5 * a0.square() - const, -0.5 * a1.square() - const

    def rsample(self, logits: Tensor, sigma: Tensor, delta_mu: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
        """ζ ~ (1-q) N(δμ, σ²) + q N(1+δμ, σ²) with implicit gradients wrt logits, σ and δμ.

        With w_k the posterior responsibilities of the two components at ζ (computed in log space),
        ∂ζ/∂σ = (w0 (ζ - δμ) + w1 (ζ - 1 - δμ)) / σ. Φ(a0) - Φ(a1) is taken as a difference of upper
        tails when ζ lies right of the midpoint, so it keeps its relative accuracy in both tails.
        """
        shape = torch.broadcast_shapes(logits.shape, sigma.shape, delta_mu.shape)
        logits_b = logits.expand(shape)
        z = bernoulli_sample(logits_b, generator)
        eps = torch.randn(shape, generator=generator, device=logits.device, dtype=logits.dtype)
        with torch.no_grad():
            zeta = z + delta_mu + sigma * eps  # [..., n]
            a0 = (zeta - delta_mu) / sigma
            a1 = a0 - 1 / sigma
            right = zeta > delta_mu + 0.5
            ndtr = torch.special.ndtr
            diff = torch.where(right, ndtr(-a1) - ndtr(-a0), ndtr(a0) - ndtr(a1)).clamp_min(0)
            log_n0, log_n1 = self._log_components(zeta, sigma, delta_mu)
            log_w0 = F.logsigmoid(-logits) + log_n0
            log_w1 = F.logsigmoid(logits) + log_n1
            log_density = torch.logaddexp(log_w0, log_w1)
            grad_logit = diff * torch.exp(_log_q_one_minus_q(logits) - log_density)
            w0 = torch.exp(log_w0 - log_density)
            w1 = torch.exp(log_w1 - log_density)
            grad_sigma = (w0 * (zeta - delta_mu) + w1 * (zeta - 1 - delta_mu)) / sigma
        return (zeta + grad_logit * (logits - logits.detach())
                + grad_sigma * (sigma - sigma.detach()) + (delta_mu - delta_mu.detach()))

    def log_prob(self, zeta: Tensor, logits: Tensor, sigma: Tensor, delta_mu: Tensor) -> Tensor:
        """log((1-q) N(ζ; δμ, σ²) + q N(ζ; 1+δμ, σ²)) per unit, in logsumexp form."""
        log_n0, log_n1 = self._log_components(zeta, sigma, delta_mu)
        return _log_mixture(logits, log_n0, log_n1)

    def cdf(self, zeta: Tensor, logits: Tensor, sigma: Tensor, delta_mu: Tensor) -> Tensor:
        """F(ζ) = (1-q) Φ((ζ - δμ)/σ) + q Φ((ζ - 1 - δμ)/σ)."""
        q = torch.sigmoid(logits)
        a0 = (zeta - delta_mu) / sigma
        return (1 - q) * torch.special.ndtr(a0) + q * torch.special.ndtr(a0 - 1 / sigma)

    def log_ratio(self, zeta: Tensor, sigma: Tensor, delta_mu: Tensor) -> Tensor:
        """log N(ζ; 1+δμ, σ²) - log N(ζ; δμ, σ²) = (ζ - δμ - 1/2) / σ²."""
        return (zeta - delta_mu - 0.5) / sigma.square()
