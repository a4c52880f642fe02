"""Why a run learns what it learns: the label audit and the execution audit of its episodes.

Label audit (logged by every ReST iteration): the first moves' **oracle agreement** (the filter
can only teach the price dependence its labels carry) and the **follow-up accuracy** (right
answers after a CLARIFY, against chance, 1 / number of meanings: at chance the policy guesses
the meaning instead of reading the user's reply, and the filter drops CLARIFY however cheap
questions are).

Execution audit (``clarify audit``): how exactly the moves are carried out — MULTI messages
whose items are exactly the context's meanings (likeliest first, as the oracle writes them), the
first wrong item's kind (``overrun``: the right item and more; ``early_stop``: a prefix of it;
``mid``: wrong inside; ``items``: a missing or extra item), the accuracy those messages lost,
and per first move the **execution loss** (that move played perfectly minus the episode's
expected reward: everything lost besides the choice of move) and the **move regret** (the
oracle's expected reward minus that of the move chosen). A CLARIFY episode's expected reward is
its realised one, so its execution loss is unbiased but noisy.

Price response (``clarify audit`` of an evaluation): along each price, the first moves' rate
change over the sweep with a paired bootstrap interval (``trainers.price_response``): what tells a
cost-blind policy from a steered one where Spearman's ρ over 5 points reads chance.

    clarify audit RUN_DIR [--split default:heldout] [--point q0.25_w0.005]   # its last evaluation
    clarify audit RUN_DIR/iter-1/grow.jsonl                                  # any episode file
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from clarify_env.costs import Costs
from clarify_env.oracle import best, context_meanings, move_values, optimal_moves, task_meanings
from clarify_env.protocol import parse_action
from clarify_env.scoring import Rules
from clarify_env.tasks import Task
from trainers.episodes import Episode, read_episodes
from trainers.price_response import format_price_response, price_response

MOVE_NAMES = ("ANSWER", "MULTI", "CLARIFY")


def audit_rows(
    episodes: Sequence[Episode], tasks: Callable[[str], Task], rules: Rules = Rules()
) -> list[dict[str, Any]]:
    """Per episode: its id, its first move, the oracle's, whether the first is among the oracle's
    best (``agrees``), the number of meanings, for a clarify-then-answer episode (``followup``) its
    accuracy, and the expected reward of the move chosen played perfectly (``move_value``, None
    for a protocol error) and of the oracle's (``oracle_value``)."""
    cache: dict[str, Task] = {}
    rows = []
    for e in episodes:
        if e.task_id not in cache:
            cache[e.task_id] = tasks(e.task_id)
        task = cache[e.task_id]
        values = move_values(task_meanings(task), Costs(e.costs["question"], e.costs["word"]), task.query, rules)
        chosen = next((v for m, v in values.items() if m.value == e.first_move), None)
        rows.append(
            {
                "episode_id": e.episode_id,
                "move": e.first_move,
                "oracle": best(values).move.value,
                "meanings": len(task.interpretations),
                "agrees": e.first_move in optimal_moves(values),
                "followup": e.first_move == "CLARIFY" and e.outcome == "answered",
                "accuracy": e.components.get("accuracy", 0.0),
                "move_value": None if chosen is None else chosen.expected_reward,
                "oracle_value": best(values).expected_reward,
                "expected_reward": e.expected_reward,
            }
        )
    return rows


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``oracle_agreement``, ``followup_accuracy`` and ``followup_chance`` of rows (NaN where none)."""
    agree = [r["agrees"] for r in rows]
    followup = [r["accuracy"] for r in rows if r["followup"]]
    chance = [1.0 / r["meanings"] for r in rows if r["followup"]]
    nan = float("nan")
    return {
        "oracle_agreement": float(np.mean(agree)) if agree else nan,
        "followup_accuracy": float(np.mean(followup)) if followup else nan,
        "followup_chance": float(np.mean(chance)) if chance else nan,
    }


def audit_episodes(
    episodes: Sequence[Episode], tasks: Callable[[str], Task], rules: Rules = Rules()
) -> dict[str, float]:
    """The label audit of ``episodes`` (``summarize_rows`` of ``audit_rows``)."""
    return summarize_rows(audit_rows(episodes, tasks, rules))


def label_metrics(source: Any, rules: Rules, grown: Sequence[Episode], kept: Sequence[Episode]) -> dict[str, float]:
    """What the filter hands the improve step: the grown and kept episodes' oracle agreement and the
    grown follow-up accuracy against chance. Printed, and returned as metrics (NaNs left out)."""
    from trainers.eval_metrics import task_lookup

    try:
        tasks = task_lookup(source)
    except ValueError as err:  # a source that cannot find tasks by id: say so, log nothing
        print(f"[audit] skipped: {err}")
        return {}
    rows = audit_rows(grown, tasks, rules)  # kept episodes are grown ones: audit each once
    kept_ids = {e.episode_id for e in kept}
    grown_audit = summarize_rows(rows)
    kept_audit = summarize_rows([r for r in rows if r["episode_id"] in kept_ids])
    metrics = {f"grow/{k}": v for k, v in {**grown_audit, **user_audit(grown, tasks)}.items()}
    metrics["filter/kept_oracle_agreement"] = kept_audit["oracle_agreement"]
    forced = " (forced: exploring starts)" if any("forced_first_move" in e.metadata for e in grown) else ""
    print(
        "[audit] oracle agreement of first moves: grown{} {:.3f}, kept {:.3f}; answers after CLARIFY right "
        "{:.3f} (chance {:.3f})".format(
            forced,
            grown_audit["oracle_agreement"],
            kept_audit["oracle_agreement"],
            grown_audit["followup_accuracy"],
            grown_audit["followup_chance"],
        )
    )
    return {k: v for k, v in metrics.items() if not np.isnan(v)}


def user_audit(episodes: Sequence[Episode], tasks: Callable[[str], Task]) -> dict[str, float]:
    """How the user simulator answered clarifying questions: the share of its replies whose words
    single out its own meaning among the task's facets (``matching.best_match``, the matcher the
    scripted agents use), another meaning, or none; the share the leak guard replaced; the replies."""
    from clarify_env.matching import best_match

    own = other = guarded = replies = 0
    for e in episodes:
        if e.first_move != "CLARIFY" or len(e.messages) < 3 or e.messages[2]["role"] != "user":
            continue
        task = tasks(e.task_id)
        chosen = best_match(e.messages[2]["content"], [i.facet for i in task.interpretations], task.query)
        replies += 1
        own += chosen == e.interpretation
        other += chosen is not None and chosen != e.interpretation
        guarded += (e.metadata.get("user_sources") or [""])[0] == "guard"
    share = (lambda k: k / replies) if replies else (lambda k: float("nan"))
    return {
        "user_replies": float(replies),
        "user_names_own_meaning": share(own),
        "user_names_other_meaning": share(other),
        "user_names_no_meaning": share(replies - own - other),
        "user_guarded": share(guarded),
    }


# --- the execution audit --------------------------------------------------------------------


def _error_kind(wanted: Sequence[str], got: Sequence[str]) -> str:
    wrong = next(((w, g) for w, g in zip(wanted, got) if w != g), None)
    if wrong is None:
        return "items"
    return "overrun" if wrong[1].startswith(wrong[0]) else "early_stop" if wrong[0].startswith(wrong[1]) else "mid"


def execution_audit(
    episodes: Sequence[Episode], tasks: Callable[[str], Task], rules: Rules = Rules()
) -> dict[str, Any]:
    """The execution audit of ``episodes`` (see the module docstring)."""
    c: collections.Counter = collections.Counter()
    loss: collections.Counter = collections.Counter()
    by_n: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    after_by_n: dict[int, list[float]] = collections.defaultdict(list)
    for e, row in zip(episodes, audit_rows(episodes, tasks, rules)):
        if row["move_value"] is not None:
            loss[e.first_move] += row["move_value"] - e.expected_reward
            c["move_regret"] += row["oracle_value"] - row["move_value"]
        if e.first_move == "MULTI":
            wanted = [f"{m.facet}: {m.answer}" for m in context_meanings(tasks(e.task_id).context)]
            action = parse_action(e.messages[1]["content"])
            got = [f"{i.facet}: {i.answer}" if i.facet else i.answer for i in getattr(action, "items", ())]
            c["multi"] += 1
            by_n[len(wanted)][0] += 1
            c["multi_accuracy_lost"] += 1 - e.components["accuracy"]
            if got == wanted:
                by_n[len(wanted)][1] += 1
                continue
            c["multi_cut_at_length"] += (e.metadata.get("finish_reasons") or ["stop"])[0] == "length"
            c[f"multi_error_{_error_kind(wanted, got)}"] += 1
        elif e.first_move == "CLARIFY" and e.outcome == "answered":
            c["after_clarify"] += 1
            c["after_clarify_accuracy_lost"] += 1 - e.components["accuracy"]
            after_by_n[row["meanings"]].append(e.components["accuracy"])
    exact = sum(v[1] for v in by_n.values())
    return {
        "episodes": len(episodes),
        "multi": c["multi"],
        "multi_exact": exact / c["multi"] if c["multi"] else None,
        "multi_exact_by_meanings": {n: v[1] / v[0] for n, v in sorted(by_n.items())},
        "multi_errors": {
            k.removeprefix("multi_error_"): v for k, v in sorted(c.items()) if k.startswith("multi_error_")
        },
        "multi_cut_at_length": c["multi_cut_at_length"],
        "multi_accuracy_lost": round(c["multi_accuracy_lost"], 3),
        "after_clarify": c["after_clarify"],
        "after_clarify_accuracy": 1 - c["after_clarify_accuracy_lost"] / c["after_clarify"]
        if c["after_clarify"]
        else None,
        "after_clarify_accuracy_by_meanings": {n: float(np.mean(v)) for n, v in sorted(after_by_n.items())},
        "after_clarify_by_meanings": {n: len(v) for n, v in sorted(after_by_n.items())},
        "execution_loss": {m: round(loss[m], 3) for m in MOVE_NAMES},
        "move_regret": round(c["move_regret"], 3),
    }


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_audit(
    label: Mapping[str, float],
    execution: Mapping[str, Any],
    pairs: Mapping[tuple[str, str], int],
    user: Mapping[str, float] | None = None,
    response: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The audit as text: the label audit, the oracle-by-played move table, the execution audit,
    the user's replies, the first moves' response to each price."""
    lines = [
        f"first move among the oracle's best: {label['oracle_agreement']:.3f}; answers after CLARIFY right "
        f"{_share(label['followup_accuracy'])} (chance {_share(label['followup_chance'])})",
        "oracle \\ played  " + "  ".join(f"{m:>7}" for m in (*MOVE_NAMES, "ERROR")),
    ]
    lines += [
        f"{o:>15}  " + "  ".join(f"{pairs.get((o, m), 0):>7}" for m in (*MOVE_NAMES, "ERROR")) for o in MOVE_NAMES
    ]
    x = execution
    lines += [
        f"MULTI messages {x['multi']}, exact {_share(x['multi_exact'])} (by meanings: "
        + ", ".join(f"{n}: {v:.3f}" for n, v in x["multi_exact_by_meanings"].items())
        + f"), errors "
        f"{x['multi_errors']}, cut at the token limit {x['multi_cut_at_length']}, accuracy lost "
        f"{x['multi_accuracy_lost']:.1f} episodes",
        f"answers after CLARIFY {x['after_clarify']}, accuracy {_share(x['after_clarify_accuracy'])} (by meanings: "
        + ", ".join(
            f"{n}: {v:.3f} of {x['after_clarify_by_meanings'][n]}"
            for n, v in x["after_clarify_accuracy_by_meanings"].items()
        )
        + ")",
        "execution loss (episodes x reward): "
        + ", ".join(f"{m} {v:.1f}" for m, v in x["execution_loss"].items())
        + f"; move regret {x['move_regret']:.1f}",
    ]
    lines += format_price_response(response or {})
    return "\n".join(lines) + "\n"


def _episode_files(target: Path, split: str, point: str) -> list[Path]:
    """``target`` itself if it is a ``.jsonl`` file, an evaluation folder's files of ``split`` (it
    holds ``episodes/``: ``clarify eval --out``'s), else its last evaluation's."""
    if target.suffix == ".jsonl":
        if not target.is_file():
            raise FileNotFoundError(f"no such episode file: {target}")
        return [target]
    if (target / "episodes").is_dir():
        evals = [target / "episodes"]
    else:
        evals = sorted(target.glob("iter-*/eval/episodes"), key=lambda p: int(p.parent.parent.name.split("-")[1]))
        evals = evals or sorted(target.glob("*/eval/episodes"))
    if not evals:
        raise FileNotFoundError(
            f"{target}: no evaluation episodes (no episodes/ or */eval/episodes folder) and not a .jsonl file"
        )
    files = sorted(evals[-1].glob(f"{split.replace(':', '-')}_{point}.jsonl"))
    if not files:
        raise FileNotFoundError(f"{evals[-1]}: no episodes of split {split} at point {point}")
    return files


def _scored_on(folder: Path) -> dict[str, Any]:
    """The task source and rules the eval.json in ``folder`` records (``clarify eval --out``
    outside a run); ``{}`` if there is none."""
    try:
        return json.loads((folder / "eval.json").read_text()).get("scored_on") or {}
    except (OSError, ValueError):
        return {}


def _run(args: argparse.Namespace) -> int:
    from trainers.config_loading import load_config
    from trainers.eval_metrics import task_lookup
    from trainers.models import run_rules

    target = Path(args.target)
    run_dir = next((p for p in (target, *target.parents) if (p / "config.yaml").exists()), None)
    cfg = load_config(run_dir / "config.yaml", check=False) if run_dir is not None else None
    source = yaml.safe_load(args.source) if args.source and args.source.lstrip().startswith("{") else args.source
    files = _episode_files(target, args.split, args.point)
    # evaluation episodes (an eval folder, a run's */eval): tasks of eval.source
    evaluated = (target / "episodes").is_dir() or any("eval" in path.parts for path in files)
    scored_on = _scored_on(files[0].parent.parent) if cfg is None else {}  # the folder holding episodes/
    if not source and cfg is not None:
        source = cfg.eval.source if evaluated and cfg.eval.source is not None else cfg.env.source
    source = source or scored_on.get("source")
    guessed, source = not source, source or "synthetic"
    rules = run_rules(cfg) if cfg else Rules.of(scored_on.get("rules"))
    episodes = [e for path in files for e in read_episodes(path)]
    if not episodes:
        raise ValueError(f"{target}: no episodes to audit")
    tasks = task_lookup(source)
    try:
        rows = audit_rows(episodes, tasks, rules)
    except ValueError as e:
        if not guessed:
            raise
        raise ValueError(
            f"{target}: no config.yaml above it names the episodes' task source, and they are not synthetic "
            f"tasks ({e}): pass --source, e.g. --source '{{name: clarifyingqa, path: FILE.csv, split: dev}}'"
        ) from None
    report = {
        "target": str(target),
        "label": summarize_rows(rows),
        "execution": execution_audit(episodes, tasks, rules),
        "user": user_audit(episodes, tasks),
        "price_response": price_response(episodes, [r["oracle"] for r in rows]),
    }
    pairs = collections.Counter((r["oracle"], r["move"]) for r in rows)
    print(format_audit(report["label"], report["execution"], pairs, report["user"], report["price_response"]), end="")
    out = Path(args.out) if args.out else (target if target.is_dir() else target.parent) / "audit.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="the label and execution audit of a run's last evaluation or an episode file")
    p.add_argument(
        "target",
        help="a run directory (its last evaluation), an evaluation folder (with episodes/) or an episode .jsonl file",
    )
    p.add_argument("--split", default="default:heldout", help="the evaluation split (run directories)")
    p.add_argument("--point", default="*", help="one price point of the split, e.g. q0.25_w0.005 (default: all)")
    p.add_argument(
        "--source",
        default=None,
        help="the task source: a name or a mapping as in a config's env.source, e.g. "
        "'{name: clarifyingqa, path: FILE.csv, split: dev}' (default: the run's config, else what the evaluation's eval.json records, else synthetic)",
    )
    p.add_argument("--out", default=None, help="where audit.json goes (default: beside the target)")
    p.set_defaults(func=_run)
