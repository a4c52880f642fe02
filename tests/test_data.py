"""`clarify data ambigqa`: rows in the Hugging Face hub's own format become task files that load and play."""

from __future__ import annotations

import json
from pathlib import Path

from agents import OraclePolicy, ScriptedUser
from clarify_env.sources import load_ambigqa
from clarify_env.sources.ambigqa import record_from_hub_row
from trainers.cli import main
from trainers.rollout import RolloutEngine

# sewon/ambig_qa "light": annotations stored column-wise, empty lists where a type has no such key
HUB_ROWS = [
    {
        "id": "-4469503464110108318",
        "question": "When did the simpsons first air on television?",
        "annotations": {
            "type": ["multipleQAs"],
            "answer": [[]],
            "qaPairs": [
                {
                    "question": [
                        "When did the Simpsons first air on television as an animated short on the Tracey Ullman Show?",
                        "When did the Simpsons first air as a half-hour prime time show?",
                    ],
                    "answer": [["April 19, 1987"], ["December 17, 1989"]],
                }
            ],
        },
    },
    {
        "id": "5876478923157469017",
        "question": "Who wrote the song in the still of the night?",
        "annotations": {
            "type": ["singleAnswer", "multipleQAs"],
            "answer": [["Fred Parris"], []],
            "qaPairs": [{"question": [], "answer": []}, {"question": ["a?", "b?"], "answer": [["x"], ["y"]]}],
        },
    },
    {
        "id": "-2127402592574524398",
        "question": "Who played the beast in the 2017 beauty and the beast?",
        "annotations": {
            "type": ["singleAnswer"],
            "answer": [["Dan Stevens"]],
            "qaPairs": [{"question": [], "answer": []}],
        },
    },
]


def test_a_hub_row_becomes_a_record_of_the_official_layout() -> None:
    record = record_from_hub_row(HUB_ROWS[0])
    assert record["annotations"] == [
        {
            "type": "multipleQAs",
            "qaPairs": [
                {"question": HUB_ROWS[0]["annotations"]["qaPairs"][0]["question"][0], "answer": ["April 19, 1987"]},
                {"question": HUB_ROWS[0]["annotations"]["qaPairs"][0]["question"][1], "answer": ["December 17, 1989"]},
            ],
        }
    ]
    assert record_from_hub_row(HUB_ROWS[1])["annotations"][0] == {"type": "singleAnswer", "answer": ["Fred Parris"]}


def test_clarify_data_ambigqa_converts_rows_that_load_and_play(tmp_path: Path) -> None:
    rows = tmp_path / "hub_rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in HUB_ROWS))
    assert main(["data", "ambigqa", "--out", str(tmp_path / "ambigqa"), "--rows", str(rows)]) == 0
    tasks = load_ambigqa(tmp_path / "ambigqa" / "dev.jsonl")
    assert [t.id for t in tasks] == [r["id"] for r in HUB_ROWS]
    simpsons = tasks[0]
    assert simpsons.is_ambiguous and [i.answers for i in simpsons.interpretations] == [
        ("April 19, 1987",),
        ("December 17, 1989",),
    ]
    assert not tasks[1].is_ambiguous and tasks[1].interpretations[0].answers == ("Fred Parris",)  # the first annotation
    env = {"source": {"name": "ambigqa", "path": str(tmp_path / "ambigqa" / "dev.jsonl")}, "costs": "default:heldout"}
    played = RolloutEngine(env, OraclePolicy(), ScriptedUser(), num_envs=3, seed=0).run(6, None, progress=False)
    assert len(played) == 6 and all(e.outcome == "answered" for e in played)
