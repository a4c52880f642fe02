"""The check that ``sampling.max_new_tokens`` leaves room for a full MULTI answer."""

from __future__ import annotations

import pytest

from agents.tiny_model import train_tokenizer
from clarify_env.protocol import parse_action
from clarify_env.sources import ListSource
from clarify_env.tasks import Interpretation, Task
from trainers.budget_check import full_multi_message, generation_budget, multi_token_lengths
from trainers.models import tiny_corpus


def task(task_id: str, answers: list[str]) -> Task:
    return Task(
        task_id,
        "Who won?",
        tuple(
            Interpretation(f"Who won in {1990 + k}?", (a, f"alias {k}"), 1.0, f"{1990 + k} edition")
            for k, a in enumerate(answers)
        ),
    )


SHORT = task("short", ["Vo"])
LONG = task("long", ["Bramthus Krelvin Dorsath", "Stuntu Zosvo Sholpa", "Thalbu Zimti", "Shilgi Pemri Krilfe"])


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(tiny_corpus(200), 600)


def test_the_full_multi_message_lists_every_meaning_with_its_first_answer() -> None:
    message = full_multi_message(LONG)
    action = parse_action(message)
    assert action.move.value == "MULTI"
    assert [(i.facet, i.answer) for i in action.items] == [(i.facet, i.answers[0]) for i in LONG.interpretations]


def test_lengths_count_the_message_tokens_and_the_end_token(tokenizer) -> None:
    lengths = multi_token_lengths([SHORT, LONG], tokenizer)
    expected = [len(tokenizer(full_multi_message(t), add_special_tokens=False)["input_ids"]) + 1 for t in (SHORT, LONG)]
    assert lengths.tolist() == expected and expected[0] < expected[1]


def test_a_budget_between_the_two_lengths_cuts_only_the_long_task(tokenizer) -> None:
    short, long = multi_token_lengths([SHORT, LONG], tokenizer).tolist()
    source = ListSource([SHORT, LONG])
    report = generation_budget(source, tokenizer, max_new_tokens=long - 1)
    assert (report.tasks, report.cut, report.longest) == (2, 1, long) and report.cut_share == 0.5
    warning = report.warning()
    assert "sampling.max_new_tokens=" + str(long - 1) in warning and f"at least {long}" in warning
    roomy = generation_budget(source, tokenizer, max_new_tokens=long)
    assert roomy.cut == 0 and roomy.warning() is None
    assert generation_budget(source, tokenizer, max_new_tokens=short - 1).cut == 2


def test_a_sampled_source_is_deterministic_given_the_seed(tokenizer) -> None:
    a = generation_budget("synthetic", tokenizer, max_new_tokens=40, num_tasks=300, seed=1)
    b = generation_budget("synthetic", tokenizer, max_new_tokens=40, num_tasks=300, seed=1)
    assert a == b and a.tasks == 300 and 0 < a.cut < 300
