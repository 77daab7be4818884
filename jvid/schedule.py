"""The forward noise schedule that every model in a mixture must share (paper sec. 3.1, 3.4)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from jvid._checks import int_at_least

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
COMPATIBILITY_RTOL = 1e-6


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The betas β_1..β_T of eq. 1, held in float64, and what the network was trained to predict."""

    betas: Float[Tensor, " T"]
    prediction_type: str = "epsilon"
    alphas_cumprod: Float[Tensor, " T"] = field(init=False, repr=False)  # ᾱ_t, derived from the betas

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            raise ValueError("every beta must lie in the open interval (0, 1)")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1.0 - betas, dim=0))

    @property
    def num_train_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return self.betas.numel()

    @property
    def alphas(self) -> Float[Tensor, " T"]:
        """α_t = 1 − β_t."""
        return 1.0 - self.betas

    def posterior_variance(self) -> Float[Tensor, " T"]:
        """β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(s_{t−1} | s_t, s_0), with ᾱ_0 = 1."""
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        return self.betas * (1.0 - prev) / (1.0 - self.alphas_cumprod)

    # Constructors for the beta schedules that diffusers names.

    @classmethod
    def linear(
        cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, **kwargs: Any
    ) -> NoiseSchedule:
        """β_t evenly spaced from beta_start to beta_end (Ho et al.; the paper's PNDM training schedule)."""
        _check_count(num_train_timesteps)
        return cls(torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64), **kwargs)

    @classmethod
    def scaled_linear(
        cls, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012, **kwargs: Any
    ) -> NoiseSchedule:
        """√β_t evenly spaced (Stable Diffusion's schedule)."""
        _check_count(num_train_timesteps)
        roots = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_train_timesteps, dtype=torch.float64)
        return cls(roots**2, **kwargs)

    @classmethod
    def squaredcos_cap_v2(
        cls, num_train_timesteps: int = 1000, max_beta: float = 0.999, **kwargs: Any
    ) -> NoiseSchedule:
        """Nichol & Dhariwal's cosine schedule: ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), betas capped at max_beta."""
        _check_count(num_train_timesteps)
        s = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        alpha_bar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return cls((1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta), **kwargs)

    @classmethod
    def from_diffusers(cls, scheduler_or_config: Any) -> NoiseSchedule:
        """The schedule of a diffusers scheduler, or of its config (an object with `.config` or a mapping)."""
        config = getattr(scheduler_or_config, "config", scheduler_or_config)
        if not isinstance(config, Mapping):
            raise TypeError(f"expected a diffusers scheduler or its config, got {type(scheduler_or_config).__name__}")
        if config.get("rescale_betas_zero_snr", False):
            raise ValueError("rescale_betas_zero_snr=True gives ᾱ_T = 0, which DDPM's ε-parameterisation cannot use")
        kwargs = {"prediction_type": config.get("prediction_type", "epsilon")}
        trained = config.get("trained_betas")
        if trained is not None:
            return cls(torch.as_tensor(trained, dtype=torch.float64), **kwargs)
        count = config.get("num_train_timesteps", 1000)
        name = config.get("beta_schedule", "linear")
        if name == "linear":
            return cls.linear(count, config.get("beta_start", 1e-4), config.get("beta_end", 0.02), **kwargs)
        if name == "scaled_linear":
            return cls.scaled_linear(count, config.get("beta_start", 1e-4), config.get("beta_end", 0.02), **kwargs)
        if name == "squaredcos_cap_v2":
            return cls.squaredcos_cap_v2(count, **kwargs)
        raise ValueError(f"unsupported beta_schedule {name!r}; pass trained_betas or build NoiseSchedule(betas)")

    # Compatibility (sec. 3.4: models are interchangeable only if they share the perturbation process).

    def difference(self, other: NoiseSchedule) -> str | None:
        """What makes the two schedules incompatible, in words, or None when they are compatible."""
        if self.num_train_timesteps != other.num_train_timesteps:
            return f"num_train_timesteps {self.num_train_timesteps} vs {other.num_train_timesteps}"
        if self.prediction_type != other.prediction_type:
            return f"prediction_type {self.prediction_type!r} vs {other.prediction_type!r}"
        a, b = self.alphas_cumprod, other.alphas_cumprod
        relative = (a - b).abs() / torch.maximum(a.abs(), b.abs())
        worst = int(relative.argmax())
        if relative[worst] > COMPATIBILITY_RTOL:
            return (
                f"alphas_cumprod differ by {float(relative[worst]):.3g} relative at timestep {worst} "
                f"({float(a[worst]):.8g} vs {float(b[worst]):.8g}; tolerance {COMPATIBILITY_RTOL:g})"
            )
        return None

    def is_compatible(self, other: NoiseSchedule) -> bool:
        """True when a model trained on either schedule can replace the other in a reverse chain."""
        return self.difference(other) is None

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.num_train_timesteps}, beta_1={float(self.betas[0]):.6g}, "
            f"beta_T={float(self.betas[-1]):.6g}, prediction_type={self.prediction_type!r})"
        )


def _check_count(num_train_timesteps: int) -> None:
    int_at_least("num_train_timesteps", num_train_timesteps, 1)
