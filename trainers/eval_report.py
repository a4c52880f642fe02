"""An evaluation's report: per-point table, steerability, summary scalars, files and plots."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainers.eval_metrics import PointMetrics, steerability, sweeps_along


def _rho_lines(values: dict[str, dict[str, float | None]]) -> list[str]:
    """``- name: policy / oracle`` lines of a steerability mapping, for the markdown table."""
    return [
        f"- {name}: " + " / ".join("undefined" if x is None else f"{x:+.2f}" for x in (rho["policy"], rho["oracle"]))
        for name, rho in values.items()
    ]


def beaten_by(point: PointMetrics) -> list[str]:
    """The fixed baselines whose exact expected reward at ``point`` is above the policy's 95% CI
    (a point counts against the policy only there: inside the interval the two cannot be told apart)."""
    return [name for name, b in point.baselines.items() if b["reward"] > point.reward_ci_high]


SUMMARIZED = (
    "reward",
    "regret",
    "move_regret",
    "oracle_agreement",
    "clarify_rate",
    "multi_rate",
    "answer_rate",
    "error_rate",
    "words",
)


@dataclass
class EvalReport:
    """The evaluation of one policy: per-point metrics and steerability; ``usage``: what each
    generating role cost (requests, cached, tokens, money; served models report it); ``files`` are
    the paths ``write`` wrote (json, markdown, csv and the plots by name); ``scored_on``: the task
    source and the rules the episodes were scored under (``{"source": ..., "rules": {...}}``), so
    an evaluation folder outside a run can be audited on its own."""

    policy: str
    points: list[PointMetrics]
    steerability: dict[str, dict[str, float | None]]
    files: dict[str, Path] = field(default_factory=dict)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)
    scored_on: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_points(cls, policy: str, points: Sequence[PointMetrics]) -> EvalReport:
        return cls(policy, list(points), steerability(points))

    @classmethod
    def read(cls, path: str | Path) -> EvalReport:
        """A report written by ``write`` (its eval.json)."""
        data = json.loads(Path(path).read_text())
        points = [PointMetrics(**p) for p in data["points"]]
        return cls(
            data["policy"],
            points,
            data["steerability"],
            usage=data.get("usage", {}),
            scored_on=data.get("scored_on", {}),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"policy": self.policy, "points": [asdict(p) for p in self.points], "steerability": self.steerability}
        if self.usage:
            out["usage"] = self.usage
        if self.scored_on:
            out["scored_on"] = self.scored_on
        return out

    def summary(self) -> dict[str, float]:
        """Scalars to log: per split the mean over its points of each ``SUMMARIZED`` metric
        (``"<split>/<metric>"``), the number of its points where a fixed baseline is above the
        policy's 95% CI (``"<split>/points_below_a_baseline"``, ``beaten_by``) and the policy's
        defined steerability correlations within the split (``"<split>/steerability/<name>"``), and
        over all points (``"steerability/<name>"``)."""
        out = {}
        for split, values in self.split_steerability().items():
            points = [p for p in self.points if p.split == split]
            out.update({f"{split}/{m}": float(np.mean([getattr(p, m) for p in points])) for m in SUMMARIZED})
            out[f"{split}/points_below_a_baseline"] = float(sum(bool(beaten_by(p)) for p in points))
            out.update({f"{split}/steerability/{k}": v["policy"] for k, v in values.items() if v["policy"] is not None})
        out.update({f"steerability/{k}": v["policy"] for k, v in self.steerability.items() if v["policy"] is not None})
        return out

    def split_steerability(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """``steerability`` of each split's points alone (e.g. the held-out prices without
        the extrapolation ones), by split."""
        splits = dict.fromkeys(p.split for p in self.points)
        return {s: steerability([p for p in self.points if p.split == s]) for s in splits}

    def to_markdown(self) -> str:
        """A table with one row per price point, then the steerability correlations."""
        names = list(self.points[0].baselines) if self.points else []
        head = [
            "split",
            "alpha",
            "beta",
            "n",
            "reward [95% CI]",
            "oracle",
            "regret",
            "move regret",
            "agree",
            "clarify",
            "multi",
            "answer",
            "errors",
            "q/ep",
            "words",
            *names,
            "below (beyond CI)",
        ]
        lines = [f"### {self.policy}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in self.points:
            cells = [
                p.split,
                f"{p.question:g}",
                f"{p.word:g}",
                str(p.n),
                f"{p.reward:.3f} [{p.reward_ci_low:.3f}, {p.reward_ci_high:.3f}]",
                f"{p.oracle_reward:.3f}",
                f"{p.regret:.3f}",
                f"{p.move_regret:.3f}",
                f"{p.oracle_agreement:.2f}",
                f"{p.clarify_rate:.2f}",
                f"{p.multi_rate:.2f}",
                f"{p.answer_rate:.2f}",
                f"{p.error_rate:.2f}",
                f"{p.questions:.2f}",
                f"{p.words:.1f}",
                *(f"{p.baselines[n]['reward']:.3f}" for n in names),
                ", ".join(beaten_by(p)) or "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        for role, u in self.usage.items():
            lines.append(
                f"\n{role}: {u['requests']:.0f} requests sent, {u['cached']:.0f} answered from the cache, "
                f"{u['prompt_tokens']:.0f} prompt + {u['completion_tokens']:.0f} completion tokens, "
                f"cost {u['cost']:.4f}"
            )
        lines += ["", "Steerability (Spearman rho along each price, the other held fixed; policy / oracle):", ""]
        lines += _rho_lines(self.steerability)
        by_split = self.split_steerability()
        if len(by_split) > 1:
            for split, values in by_split.items():
                lines += ["", f"Within {split} only:", "", *_rho_lines(values)]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write eval.json, eval.md, eval.csv and the plots to ``out_dir``; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "eval.json", "markdown": out / "eval.md", "csv": out / "eval.csv"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2))
        paths["markdown"].write_text(self.to_markdown())
        rows = [p.to_row() for p in self.points]
        with paths["csv"].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        paths.update(plot_points(self.points, out, self.policy))
        self.files = paths
        return paths


PLOTTED = (  # (metric, panel title)
    ("reward", "reward (oracle, baselines: expected)"),
    ("clarify_rate", "CLARIFY rate"),
    ("multi_rate", "MULTI rate"),
    ("answer_rate", "ANSWER rate"),
    ("words", "words per final response"),
)


def plot_points(points: Sequence[PointMetrics], out_dir: Path, policy: str = "policy") -> dict[str, Path]:
    """One PNG per price (``vs_question_price.png``, ``vs_word_price.png``): each rate, the
    reward and the words against that price along the longest sweep holding the other
    price fixed; policy, oracle, and (reward and words) the fixed baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(points[0].baselines) if points else []
    paths = {}
    for price in ("question", "word"):
        sweep = sweeps_along(points, price)[0] if points else []
        xs = [getattr(p, price) for p in sweep]
        other = "word" if price == "question" else "question"
        fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3.4))
        for ax, (metric, label) in zip(axes, PLOTTED):
            oracle_metric = "oracle_reward" if metric == "reward" else f"oracle_{metric}"
            ax.plot(xs, [getattr(p, metric) for p in sweep], marker="o", lw=2, label=policy)
            ax.plot(xs, [getattr(p, oracle_metric) for p in sweep], marker="s", ls="--", color="black", label="oracle")
            if metric in ("reward", "words"):
                for name in names:
                    ax.plot(xs, [p.baselines[name][metric] for p in sweep], ls=":", marker=".", label=name)
            ax.set_xlabel(f"price of a {price}")
            ax.set_title(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        if sweep:
            fig.suptitle(f"{other} price fixed at {getattr(sweep[0], other):g}", fontsize=9)
        fig.tight_layout()
        paths[f"vs_{price}_price"] = out_dir / f"vs_{price}_price.png"
        fig.savefig(paths[f"vs_{price}_price"], dpi=100)
        plt.close(fig)
    return paths
