"""How a policy's first moves respond to one price, paired over the same episodes, with an interval.

Spearman's ρ over a sweep's 5 points (the steerability bar) ranks the rates alone: where the rates
differ only by chance, any order is as likely as another, and a policy that does not read the
price passes |ρ| ≤ 0.3 in 58 of the 120 orders of 5 distinct rates. This measure asks the question
the rank cannot: an evaluation plays the same (task, meaning) episodes at every price point, so
each episode gives one row of first moves along the sweep; the **change** is the least-squares
slope of the move's rate on the price times the price range (−1: from always to never across the
sweep), and its 95% interval comes from resampling the rows (a paired bootstrap). A cost-blind
policy's interval holds 0; a steerable one's lies well below it. ``unchanged`` is the share of
rows whose first move is the same at every point (1 for a policy that ignores the price).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from trainers.episodes import Episode
from trainers.eval_metrics import bootstrap_ci

# (name, the move whose rate is measured, the price that moves, the price held fixed)
SWEEPS = (
    ("clarify_rate_vs_question_price", "CLARIFY", "question", "word"),
    ("multi_rate_vs_word_price", "MULTI", "word", "question"),
)


def _change_weights(prices: np.ndarray) -> np.ndarray:
    """``w`` with ``rates @ w`` the least-squares slope of ``rates`` on ``prices`` times the price
    range. Linear in the rates, so the change of the mean rate is the mean of each row's change:
    the paired bootstrap of the change is the bootstrap of the rows' changes' mean."""
    centred = prices - prices.mean()
    return centred / (centred @ centred) * (prices[-1] - prices[0])


def price_response(
    episodes: Sequence[Episode],
    oracle_moves: Sequence[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    min_points: int = 3,
) -> dict[str, dict[str, Any]]:
    """Per sweep (the longest line of ≥ ``min_points`` points along one price with the other
    fixed): its prices, the policy's rates, the change with its paired bootstrap 95% interval,
    ``unchanged``, the episodes paired, and the oracle's change (``oracle_moves``: each episode's
    best move, in the order of ``episodes``). Sweeps too short are left out."""
    oracle = list(oracle_moves) if oracle_moves is not None else [None] * len(episodes)
    if len(oracle) != len(episodes):
        raise ValueError(f"oracle_moves has {len(oracle)} entries for {len(episodes)} episodes")
    out: dict[str, dict[str, Any]] = {}
    for name, move, price, fixed in SWEEPS:
        lines: dict[float, dict[float, dict[tuple, tuple[str, str | None]]]] = collections.defaultdict(
            lambda: collections.defaultdict(dict)
        )
        for e, o in zip(episodes, oracle):
            key = (e.episode_id, e.task_id, e.interpretation)
            lines[e.costs[fixed]][e.costs[price]][key] = (e.first_move, o)
        candidates = [(h, ln) for h, ln in lines.items() if len(ln) >= min_points]
        if not candidates:
            continue
        held, line = max(candidates, key=lambda hl: len(hl[1]))
        points = sorted(line)
        keys = sorted(set.intersection(*(set(line[p]) for p in points)))
        if not keys:
            continue
        w = _change_weights(np.array(points))
        played = np.array([[line[p][k][0] == move for p in points] for k in keys], float)
        lo, hi = bootstrap_ci(played @ w, resamples, seed)
        best = [[line[p][k][1] for p in points] for k in keys]
        oracle_change = (
            float(np.array([[b == move for b in row] for row in best], float).mean(0) @ w)
            if all(b is not None for row in best for b in row)
            else None
        )
        out[name] = {
            fixed: held,
            price: points,
            "rates": [round(float(r), 4) for r in played.mean(0)],
            "change": round(float(played.mean(0) @ w), 4),
            "change_ci": [round(float(lo), 4), round(float(hi), 4)],
            "unchanged": round(float(np.mean([len({line[p][k][0] for p in points}) == 1 for k in keys])), 4),
            "episodes": len(keys),
            "oracle_change": None if oracle_change is None else round(oracle_change, 4),
        }
    return out


def format_price_response(response: dict[str, dict[str, Any]]) -> list[str]:
    """One text line per sweep of :func:`price_response`."""
    lines = []
    for name, r in response.items():
        oracle = "" if r["oracle_change"] is None else f"; the oracle's {r['oracle_change']:+.2f}"
        lines.append(
            f"{name}: rates {', '.join(f'{v:.2f}' for v in r['rates'])}; change over the sweep {r['change']:+.3f} "
            f"[{r['change_ci'][0]:+.3f}, {r['change_ci'][1]:+.3f}] (paired, {r['episodes']} episodes; first move "
            f"unchanged in {r['unchanged']:.2f}){oracle}"
        )
    return lines
