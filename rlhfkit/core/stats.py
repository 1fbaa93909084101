"""Masked statistics: sums, means, variances, whitening, and running moments.

Implementation details and their sources:

1. Masks are bool (or 0/1) tensors broadcastable to `x`, True = valid. Masked positions are
   removed with `torch.where`, never by multiplication, so NaN/inf in padding cannot leak
   (NaN * 0 is NaN).
2. `masked_var` applies Bessel's correction n/(n-1) by default, as TRL `trl/trainer/utils.py`
   `masked_var` does; it refuses to divide by zero instead of returning NaN.
3. `whiten` shifts and scales by the masked mean and variance (TRL `masked_whiten`, OpenRLHF
   `masked_normalize`); `shift_mean=False` adds the mean back, which TRL uses for rewards so that
   their sign survives. Masked positions of the output are 0.
4. `RunningMoments` combines batches with Chan et al.'s parallel update ("Updating formulae and a
   pairwise algorithm for computing sample variances", 1979) in float64, so merging the moments of
   several processes equals the moments of the concatenated data.
"""

from __future__ import annotations

import math

import torch

__all__ = ["RunningMoments", "masked_mean", "masked_sum", "masked_var", "whiten"]


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` over valid positions: Σ_i [mask_i] · x_i.

    Shapes: `x` (B, T) or any shape; `mask` broadcastable to `x`, True = valid. `dim=None` sums
    everything to a scalar, otherwise over `dim`. Values at masked positions (even NaN) are ignored.
    """
    mask = _as_bool(mask)
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over valid positions: Σ [mask]·x / Σ [mask].

    Shapes: `x` any shape; `mask` broadcastable to `x`, True = valid. `dim=None` gives a scalar;
    with `dim`, a slice with no valid position has mean 0 (its count is clamped to 1), so empty
    responses never produce NaN. Reference: TRL `masked_mean` (same formula, without the clamp).
    """
    mask = _as_bool(mask)
    mask = mask.expand_as(x) if mask.shape != x.shape else mask
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over all valid positions (a scalar).

    var = Σ [mask]·(x − μ)² / n, with μ = masked_mean(x, mask) and n = Σ [mask]; multiplied by
    n / (n − 1) when `unbiased` (Bessel). Raises ValueError when n = 0 (or n = 1 and unbiased)
    rather than returning NaN. Reference: TRL `masked_var`.
    """
    mask = _as_bool(mask)
    mask = mask.expand_as(x) if mask.shape != x.shape else mask
    n = int(mask.sum().item())
    if n == 0 or (unbiased and n == 1):
        raise ValueError(
            f"masked_var needs at least {2 if unbiased else 1} valid positions, mask has {n}"
        )
    mean = masked_mean(x, mask)
    var = masked_sum((x - mean) ** 2, mask) / n
    return var * (n / (n - 1)) if unbiased else var


def whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise `x` to zero mean and unit variance over the valid positions.

    out = (x − μ) / sqrt(σ² + eps), plus μ again when `shift_mean=False` (only scaled); μ and σ²
    are `masked_mean` and unbiased `masked_var` over every valid position of the batch. Shapes:
    `x` (B, T), `mask` (B, T) True = valid; masked positions of `out` are 0. References: TRL
    `masked_whiten`; OpenRLHF `masked_normalize`; CleanRL ppo.py advantage normalisation.
    """
    mask = _as_bool(mask)
    mask = mask.expand_as(x) if mask.shape != x.shape else mask
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))


class RunningMoments:
    """Running count, mean and variance of a stream of batches, mergeable across processes.

    Chan's parallel update: with (n_a, μ_a, M2_a) and a batch (n_b, μ_b, M2_b),
    n = n_a + n_b, δ = μ_b − μ_a, μ = μ_a + δ·n_b/n, M2 = M2_a + M2_b + δ²·n_a·n_b/n.
    `.var` is the population variance M2/n and `.std` its square root (TRL `RunningMoments` uses
    the same); state is kept in Python floats (float64). Use it for reward scaling/normalisation:
    `(scores - rm.mean) / rm.std`.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count > 0 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def _combine(self, count: int, mean: float, m2: float) -> None:
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, float]:
        """Add the (valid) elements of `x`; return this batch's (mean, unbiased std).

        `mask`, when given, is broadcastable to `x` with True = valid. The batch std is 0 when
        the batch has a single element.
        """
        values = x.detach().to(torch.float64)
        if mask is not None:
            values = values[_as_bool(mask).expand_as(values)]
        values = values.reshape(-1)
        n = values.numel()
        if n == 0:
            raise ValueError("RunningMoments.update got no valid elements")
        if not bool(torch.isfinite(values).all()):
            raise ValueError("RunningMoments.update got NaN or inf among the valid elements")
        batch_mean = float(values.mean())
        batch_m2 = float(((values - batch_mean) ** 2).sum())
        self._combine(n, batch_mean, batch_m2)
        batch_std = math.sqrt(batch_m2 / (n - 1)) if n > 1 else 0.0
        return batch_mean, batch_std

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Fold another accumulator's moments into this one (e.g. gathered from another process)."""
        self._combine(other.count, other.mean, other.m2)
        return self

    def state_dict(self) -> dict[str, float | int]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.count = int(state["count"])
        self.mean = float(state["mean"])
        self.m2 = float(state["m2"])
