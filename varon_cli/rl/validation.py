"""Judging a trained policy: Sharpe ratios, the deflated Sharpe ratio, and spread across seeds.

A backtest's best Sharpe ratio out of many tried configurations is biased
upwards by the trying; the deflated Sharpe ratio says how likely the true
Sharpe ratio is above zero once that selection and the returns' skew and fat
tails are accounted for. scipy is not a dependency, so the normal CDF and its
inverse are implemented here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

EULER_GAMMA = 0.5772156649015329

# Acklam's rational approximation of the inverse normal CDF (relative error < 1.2e-9 before refinement)
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def norm_cdf(x: float) -> float:
    """Standard normal CDF; erfc keeps precision in the lower tail."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _poly(coefs: Sequence[float], x: float) -> float:
    out = 0.0
    for c in coefs:
        out = out * x + c
    return out


def norm_ppf(p: float) -> float:
    """Inverse standard normal CDF: Acklam's approximation, then one Halley step on the exact CDF (~1e-15)."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"probability {p} outside [0, 1]")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = _poly(_C, q) / (_poly(_D, q) * q + 1.0)
    elif p <= 1.0 - _P_LOW:
        q = p - 0.5
        r = q * q
        x = _poly(_A, r) * q / (_poly(_B, r) * r + 1.0)
    else:
        q = math.sqrt(-2.0 * math.log1p(-p))
        x = -_poly(_C, q) / (_poly(_D, q) * q + 1.0)
    # Halley refinement: e is the CDF error, u the Newton step e / pdf(x)
    e = norm_cdf(x) - p
    u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    return x - u / (1.0 + 0.5 * x * u)


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe ratio of per-period returns (zero risk-free rate): mean / std * sqrt(periods).

    The sample std (ddof 1) is used; no variation gives 0 for a zero mean and
    +-inf otherwise; fewer than two returns give NaN.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    mean, std = float(r.mean()), float(r.std(ddof=1))
    if std == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / std * math.sqrt(periods_per_year)


def moments(returns: np.ndarray) -> tuple[float, float]:
    """(skewness, kurtosis) of returns as the deflated Sharpe ratio wants them: Pearson kurtosis, 3 for a normal."""
    r = np.asarray(returns, dtype=np.float64)
    z = r - r.mean()
    var = float((z * z).mean())
    if r.size < 2 or var == 0.0:
        return 0.0, 3.0
    return float((z ** 3).mean() / var ** 1.5), float((z ** 4).mean() / var ** 2)


def expected_max_sharpe(n_trials: int, sr_variance_across_trials: float) -> float:
    """E[max SR] of n independent trials whose true Sharpe ratio is zero (False Strategy theorem).

    SR0 = sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e))), g the Euler-Mascheroni constant.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials {n_trials}: must be at least 1")
    if sr_variance_across_trials < 0:
        raise ValueError(f"variance {sr_variance_across_trials}: must not be negative")
    if n_trials == 1 or sr_variance_across_trials == 0.0:
        return 0.0  # nothing was selected
    return math.sqrt(sr_variance_across_trials) * (
        (1.0 - EULER_GAMMA) * norm_ppf(1.0 - 1.0 / n_trials) + EULER_GAMMA * norm_ppf(1.0 - 1.0 / (n_trials * math.e))
    )


def probabilistic_sharpe(sr: float, benchmark: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """P(true SR > benchmark) given an observed per-period SR over n_obs returns (Bailey & López de Prado 2012).

    PSR = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)).
    """
    if n_obs < 2:
        raise ValueError(f"n_obs {n_obs}: need at least 2 returns")
    denom = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not denom > 0:
        raise ValueError(f"skew {skew} and kurtosis {kurtosis} give a non-positive SR variance at SR {sr}")
    return norm_cdf((sr - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom))


def deflated_sharpe(sr: float, n_trials: int, n_obs: int, skew: float, kurtosis: float,
                    sr_variance_across_trials: float) -> float:
    """The deflated Sharpe ratio: the probability that the true Sharpe ratio is positive after selection.

    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for
    Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Mgmt 40(5):

        DSR = PSR(SR0) = Phi( (SR - SR0) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2) )
        SR0 = sqrt(V[SR_n]) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))

    with SR the selected (best) trial's Sharpe ratio, T its number of returns,
    g3 the skewness and g4 the (Pearson, not excess) kurtosis of its returns, N
    the number of independent trials, V[SR_n] the variance of their Sharpe
    ratios and g the Euler-Mascheroni constant. SR and V must be in the same,
    per-period (not annualised) units. With one trial SR0 = 0 and the DSR is
    the probabilistic Sharpe ratio against zero.
    """
    benchmark = expected_max_sharpe(n_trials, sr_variance_across_trials)
    return probabilistic_sharpe(sr, benchmark, n_obs, skew, kurtosis)


def summarise_seeds(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean, sample std (ddof 1; 0 for one seed), min, median and max of a metric over training seeds.

    RL results vary widely with the seed; a single run says little, so reports
    carry this spread.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("need a non-empty list of values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"values must be finite: {v.tolist()}")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "min": float(v.min()),
            "median": float(np.median(v)), "max": float(v.max())}


__all__ = ["deflated_sharpe", "expected_max_sharpe", "moments", "norm_cdf", "norm_ppf", "probabilistic_sharpe",
           "sharpe", "summarise_seeds"]
