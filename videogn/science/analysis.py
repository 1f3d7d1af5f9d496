"""The pre-registered analysis of the norm sweep (``docs/preregistration.md``): paired differences
of top-1 between cells (paired by seed and by validation video), the three hypotheses with Holm's
correction, and convergence judged on held-out loss.

Unit of replication: the seed (initialisation and clip order, the same in every cell). A
difference between cells is computed per seed on the same validation videos; its standard error
adds the seed-to-seed variance of the per-seed differences and the video-to-video variance of the
seed-averaged per-video differences (the validation set is a sample of videos too), with Student's
t on ``seeds - 1`` degrees of freedom (conservative: the video term has many more).

    runs = [...]                                        # the sweep's results JSON "runs"
    table = correctness(runs)                           # {(norm, T, stride, B): (seeds, videos) 0/1}
    verdicts = evaluate_hypotheses(table, margin=0.03)      # H1..H3, Holm-adjusted
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "Cell",
    "Difference",
    "Verdict",
    "convergence",
    "correctness",
    "holm",
    "paired_difference",
    "t_cdf",
    "t_quantile",
    "evaluate_hypotheses",
]

Cell = tuple[str, int, int, int]  # (norm, num_frames, stride, batch_size)
ALPHA = 0.05
POWER = 0.8


# ---------------------------------------------------------------------------------------------
# Student's t without scipy (the toolkit does not depend on it)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


# ---------------------------------------------------------------------------------------------
# paired differences


@dataclass(frozen=True)
class Difference:
    """A paired difference of top-1 (fractions): estimate, standard error, degrees of freedom, and
    the 95 % two-sided interval."""

    estimate: float
    se: float
    df: int
    low: float
    high: float
    per_seed: tuple[float, ...]

    def p_greater(self, value: float = 0.0) -> float:
        """One-sided p of H0: true difference <= value."""
        if self.se == 0:
            return 0.0 if self.estimate > value else 1.0
        return 1.0 - t_cdf((self.estimate - value) / self.se, self.df)

    def p_less(self, value: float = 0.0) -> float:
        """One-sided p of H0: true difference >= value."""
        if self.se == 0:
            return 0.0 if self.estimate < value else 1.0
        return t_cdf((self.estimate - value) / self.se, self.df)

    def resolves(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """The smallest true effect a one-sided test at ``alpha`` detects with ``power``."""
        return (t_quantile(1 - alpha, self.df) + t_quantile(power, self.df)) * self.se


def paired_difference(contrast: Sequence[tuple[float, np.ndarray]]) -> Difference:
    """The difference sum_k w_k * top1(cell_k), paired by seed and video.

    Args:
        contrast: (weight, (seeds, videos) 0/1 matrix) per cell; every matrix has the same seeds
            (rows, in the same order) and videos (columns).
    """
    mats = [np.asarray(m, dtype=np.float64) for _, m in contrast]
    shapes = {m.shape for m in mats}
    if len(shapes) != 1:
        raise ValueError(f"cells must share seeds and videos (paired design), got shapes {sorted(shapes)}")
    d = sum(w * m for (w, _), m in zip(contrast, mats))  # (seeds, videos)
    per_seed = d.mean(axis=1)
    n, v = d.shape
    if n < 2:
        raise ValueError(f"a paired interval needs >= 2 seeds, got {n}")
    var_seed = per_seed.var(ddof=1) / n
    var_video = d.mean(axis=0).var(ddof=1) / v if v > 1 else 0.0
    se = math.sqrt(var_seed + var_video)
    est = float(per_seed.mean())
    half = t_quantile(0.975, n - 1) * se
    return Difference(est, se, n - 1, est - half, est + half, tuple(float(x) for x in per_seed))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (step-down; each at most 1, never below an earlier one's)."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, out = len(order), 0.0, {}
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[k]))
        out[k] = running
    return out


# ---------------------------------------------------------------------------------------------
# the hypotheses


@dataclass(frozen=True)
class Verdict:
    name: str
    statement: str
    estimate: float
    low: float
    high: float
    p: float  # the test's raw p (one-sided, or TOST's larger one)
    p_holm: float
    verdict: str  # supported | contradicted | inconclusive at this power
    resolves: float  # the smallest effect this design detects (80 % power, one-sided 5 %)
    per_seed: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def correctness(runs: Iterable[Mapping[str, Any]]) -> dict[Cell, np.ndarray]:
    """{cell: (seeds, videos) 0/1} from the runs' per-video probabilities (rows in seed order)."""
    by_cell: dict[Cell, list[tuple[int, np.ndarray]]] = {}
    for r in runs:
        classes = list(r["classes"])
        labels = np.array([classes.index(x) for x in r["labels"]])
        pred = np.array([int(np.argmax(p)) if len(p) else -1 for p in r["probs"]])
        cell = (r["norm"], int(r["num_frames"]), int(r["stride"]), int(r["batch_size"]))
        by_cell.setdefault(cell, []).append((int(r["seed"]), (pred == labels).astype(np.float64)))
    return {c: np.stack([m for _, m in sorted(v, key=lambda x: x[0])]) for c, v in by_cell.items()}


def _require_cells(table: Mapping[Cell, np.ndarray], cells: Sequence[Cell]) -> None:
    missing = [c for c in cells if c not in table]
    if missing:
        raise KeyError(f"cells missing from the results: {missing}")


def evaluate_hypotheses(
    table: Mapping[Cell, np.ndarray], *, margin: float, t: int = 8, alpha: float = ALPHA,
    big: int = 8, small: int = 4,
) -> list[Verdict]:
    """H1-H3 of the pre-registration at base length ``t`` (``t``@2 with ``big`` and ``small``
    clips per batch, ``2t``@1 with ``small``), Holm-corrected over the three.

    * H1: BN loses top-1 from ``big`` to ``small`` clips at ``t``@2 (one-sided: difference > 0).
    * H2: GN does not: |difference| < ``margin`` (TOST: both one-sided tests).
    * H3: from (``t``@2, ``big``) to (``2t``@1, ``small``) GN gains more than BN (one-sided > 0).

    A verdict is "supported" when its Holm-adjusted p < ``alpha``; "contradicted" when the data
    exclude it (H1: the 95 % interval lies below 0, or BN is shown equivalent within ``margin`` by
    TOST; H2: the interval lies entirely beyond ``margin``; H3: the interval lies below 0); else
    "inconclusive at this power".
    """
    bn_big, bn_small, bn_dense = ("bn", t, 2, big), ("bn", t, 2, small), ("bn", 2 * t, 1, small)
    gn_big, gn_small, gn_dense = ("gn", t, 2, big), ("gn", t, 2, small), ("gn", 2 * t, 1, small)
    _require_cells(table, [bn_big, bn_small, bn_dense, gn_big, gn_small, gn_dense])
    h1 = paired_difference([(1.0, table[bn_big]), (-1.0, table[bn_small])])
    h2 = paired_difference([(1.0, table[gn_big]), (-1.0, table[gn_small])])
    h3 = paired_difference([(1.0, table[gn_dense]), (-1.0, table[gn_big]), (-1.0, table[bn_dense]), (1.0, table[bn_big])])
    p = {"H1": h1.p_greater(0.0), "H2": max(h2.p_greater(-margin), h2.p_less(margin)), "H3": h3.p_greater(0.0)}
    adj = holm(p)
    h1_equiv = max(h1.p_greater(-margin), h1.p_less(margin)) < alpha

    def verdict(name: str, contradicted: bool) -> str:
        if adj[name] < alpha:
            return "supported"
        return "contradicted" if contradicted else "inconclusive at this power"

    # H2's resolution: the smallest margin TOST establishes with 80 % power when the truth is 0
    h2_res = (t_quantile(1 - alpha, h2.df) + t_quantile(1 - (1 - POWER) / 2, h2.df)) * h2.se
    return [
        Verdict("H1", f"BN at {t}@2 loses top-1 from {big} to {small} clips per batch", h1.estimate, h1.low, h1.high,
                p["H1"], adj["H1"], verdict("H1", h1.high < 0 or h1_equiv), h1.resolves(alpha), h1.per_seed),
        Verdict("H2", f"GN at {t}@2 keeps its top-1 from {big} to {small} clips per batch (within ±{100 * margin:g} points)",
                h2.estimate, h2.low, h2.high, p["H2"], adj["H2"],
                verdict("H2", h2.low > margin or h2.high < -margin), h2_res, h2.per_seed),
        Verdict("H3", f"({t}@2, {big} clips) -> ({2 * t}@1, {small} clips) gains GN more than BN", h3.estimate,
                h3.low, h3.high, p["H3"], adj["H3"], verdict("H3", h3.high < 0), h3.resolves(alpha), h3.per_seed),
    ]


# ---------------------------------------------------------------------------------------------
# convergence


def convergence(
    curve: Sequence[Mapping[str, float]], *, min_ce: Optional[float], num_classes: int, num_videos: int,
    top1: float, window: int = 5, plateau_nats: float = 0.02,
) -> dict[str, Any]:
    """Judge one run on its held-out loss curve (``val_loss`` per validation).

    * plateaued: the least-squares slope of the last ``window`` validations, times ``window - 1``,
      loses less than ``plateau_nats`` (the loss no longer falls by a measurable amount);
    * gap_to_ceiling: final held-out loss minus the ideal observer's minimum cross-entropy;
    * learned: top-1 above chance by more than 3 binomial standard errors (else "not learned",
      whatever its loss curve does).
    """
    losses = [float(c["val_loss"]) for c in curve if "val_loss" in c]
    chance = 1.0 / num_classes
    learned = top1 > chance + 3 * math.sqrt(chance * (1 - chance) / max(num_videos, 1))
    plateaued: Optional[bool] = None
    slope = None
    if len(losses) >= window:
        y = np.array(losses[-window:])
        x = np.arange(window, dtype=np.float64)
        slope = float(np.polyfit(x, y, 1)[0])
        plateaued = -slope * (window - 1) < plateau_nats
    final = losses[-1] if losses else None
    return {"learned": bool(learned), "plateaued": plateaued, "slope_per_validation": slope, "final_loss": final,
            "gap_to_ceiling": None if final is None or min_ce is None else final - min_ce,
            "converged": bool(learned and plateaued)}
