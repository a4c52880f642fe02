"""How exactly does a policy carry out its moves? Copy errors in a run's final evaluation.

    python benchmarks/copy_errors.py runs/quickstart [runs/other ...] [--split default:heldout] [--out copy_errors.json]
    python benchmarks/copy_errors.py runs/quickstart --point q0.25_w0.005   # one price point
    python benchmarks/copy_errors.py runs/quickstart/iter-1/grow.jsonl   # a stage's episodes, all of them

Reads the evaluation episodes of each run directory's last ``iter-*/eval`` (compact-prompt
runs: the meaning lines ``NN% facet: answer`` in the system text) over the ``--split``
price points (or one, ``--point``), or every episode of a ``.jsonl`` file (a grow stage: there the policy's
first move is forced, so each MULTI list shows the copying at the grow temperature), and counts:

- MULTI messages whose items are exactly the prompt's meaning lines (share removed, same
  order), per number of meanings, and the first wrong item's kind: ``overrun`` (the right
  item and more), ``early_stop`` (a prefix of it), ``mid`` (wrong inside), ``items`` (a
  missing or extra item), with ``length`` counting messages cut at ``sampling.max_new_tokens``;
- the accuracy those MULTI messages lost (episodes x (1 - accuracy), summed) and the
  accuracy of the answers after a clarification;
- the **execution loss** per first move: the expected reward of that move played perfectly (the
  oracle's message for it, ``clarify_env.oracle.move_values``) minus the episode's expected
  reward, summed — everything a policy loses besides its choice of move (copy slips, a wrong
  guess, repeated words). Exact for ANSWER and MULTI; a CLARIFY episode's reward is the realised
  one, so its sum is unbiased but noisy. ``move_regret``: the oracle's expected reward minus that
  of the moves chosen, summed. Both under the default rules (one question, F1 accuracy), the
  quickstart's.

Prints one row per run and writes benchmarks/results/<--out>.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
MEANING_LINE = re.compile(r"^\d+(?:\.\d+)?% (.+)$")


def last_eval(run: Path) -> Path:
    evals = sorted(run.glob("iter-*/eval/episodes"), key=lambda p: int(p.parent.parent.name.split("-")[1]))
    if not evals:
        raise SystemExit(f"{run}: no iter-*/eval/episodes folder")
    return evals[-1]


def episode_files(run: Path, split: str, point: str = "*") -> list[Path]:
    """``run`` itself if it is a ``.jsonl`` file, else its last evaluation's files of ``split``
    (at price point ``point``, e.g. ``q0.25_w0.005``; ``*``: all)."""
    if run.suffix == ".jsonl":
        return [run]
    files = sorted(last_eval(run).glob(f"{split.replace(':', '-')}_{point}.jsonl"))
    if not files:
        raise SystemExit(f"{run}: no evaluation episodes of split {split} at point {point}")
    return files


def copy_errors(run: Path, split: str, point: str = "*", source: str = "synthetic") -> dict:
    """The counts described in the module docstring for one run directory (or episode file)."""
    from clarify_env.costs import Costs  # noqa: PLC0415 (after argparse: fast --help)
    from clarify_env.oracle import best, move_values, task_meanings  # noqa: PLC0415
    from clarify_env.protocol import Move, parse_action  # noqa: PLC0415
    from trainers.evaluate import task_lookup  # noqa: PLC0415

    tasks = task_lookup(source)
    c: collections.Counter = collections.Counter()
    execution: collections.Counter = collections.Counter()
    by_n: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    files = episode_files(run, split, point)
    for path in files:
        for line in path.read_text().splitlines():
            e = json.loads(line)
            meanings = [m.group(1) for m in map(MEANING_LINE.match, e["chat"][0]["content"].splitlines()) if m]
            task = tasks(e["task_id"])
            values = move_values(task_meanings(task), Costs(e["costs"]["question"], e["costs"]["word"]), task.query)
            first = e["moves"][0] if e["moves"] and e["moves"][0] in {m.value for m in values} else None
            if first is not None:
                execution[first] += values[Move(first)].expected_reward - e["expected_reward"]
                c["move_regret"] += best(values).expected_reward - values[Move(first)].expected_reward
            if e["moves"][:1] == ["MULTI"]:
                action = parse_action(e["messages"][1]["content"])
                got = [f"{i.facet}: {i.answer}" if i.facet else i.answer for i in action.items] \
                    if getattr(action, "move", None) is Move.MULTI else []
                c["multi"] += 1
                by_n[len(meanings)][0] += 1
                c["multi_accuracy_lost"] += 1 - e["components"]["accuracy"]
                if got == meanings:
                    by_n[len(meanings)][1] += 1
                    continue
                if e["metadata"].get("finish_reasons", ["stop"])[0] == "length":
                    c["multi_cut_at_length"] += 1
                wrong = next(((w, g) for w, g in zip(meanings, got) if w != g), None)
                kind = "items" if wrong is None else "overrun" if wrong[1].startswith(wrong[0]) else (
                    "early_stop" if wrong[0].startswith(wrong[1]) else "mid")
                c[f"multi_error_{kind}"] += 1
            elif e["moves"][:1] == ["CLARIFY"] and e["outcome"] == "answered":
                c["after_clarify"] += 1
                c["after_clarify_accuracy_lost"] += 1 - e["components"]["accuracy"]
    exact = sum(v[1] for v in by_n.values())
    return {
        "run": str(run), "split": "all" if run.suffix == ".jsonl" else split, "point": point, "multi": c["multi"],
        "multi_exact": exact / c["multi"] if c["multi"] else None,
        "multi_exact_by_meanings": {n: v[1] / v[0] for n, v in sorted(by_n.items())},
        "multi_errors": {k.removeprefix("multi_error_"): v for k, v in sorted(c.items()) if k.startswith("multi_error_")},
        "multi_cut_at_length": c["multi_cut_at_length"],
        "multi_accuracy_lost": round(c["multi_accuracy_lost"], 3),
        "after_clarify": c["after_clarify"],
        "after_clarify_accuracy": 1 - c["after_clarify_accuracy_lost"] / c["after_clarify"] if c["after_clarify"] else None,
        "execution_loss": {m: round(execution[m], 3) for m in ("ANSWER", "MULTI", "CLARIFY")},
        "move_regret": round(c["move_regret"], 3),
    }


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories with a finished evaluation, or .jsonl episode files")
    parser.add_argument("--split", default="default:heldout")
    parser.add_argument("--point", default="*", help="one price point of the split, e.g. q0.25_w0.005 (default: all)")
    parser.add_argument("--source", default="synthetic", help="the task source the episodes were played on")
    parser.add_argument("--out", default="copy_errors.json")
    args = parser.parse_args()
    rows = [copy_errors(Path(r), args.split, args.point, args.source) for r in args.runs]
    print("| run | MULTI | exact | exact by meanings (2 / 3 / 4) | errors (mid / overrun / early stop / items) "
          "| cut at length | MULTI accuracy lost | answers after CLARIFY right | execution loss (ANSWER / MULTI / CLARIFY) "
          "| move regret |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        by = r["multi_exact_by_meanings"]
        err = r["multi_errors"]
        print(f"| {r['run']} | {r['multi']} | {_share(r['multi_exact'])} | "
              f"{' / '.join(f'{by[n]:.3f}' if n in by else '-' for n in (2, 3, 4))} | "
              f"{err.get('mid', 0)} / {err.get('overrun', 0)} / {err.get('early_stop', 0)} / {err.get('items', 0)} | "
              f"{r['multi_cut_at_length']} | {r['multi_accuracy_lost']:.1f} | {_share(r['after_clarify_accuracy'])} | "
              f"{' / '.join(f'{v:.1f}' for v in r['execution_loss'].values())} | {r['move_regret']:.1f} |")
    out = RESULTS / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
