"""The transformers generation backend and the tiny-model factory, on a tiny model built here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from agents.generation import SamplingParams
from agents.hf_backend import PerRowSampler, TransformersBackend, counter_uniform
from agents.tiny_model import build_tiny_model
from helpers import (
    CONVERSATIONS,
    CORPUS,
    NO_SYSTEM_TEMPLATE,
    THINKING_TEMPLATE,
    lively_tiny_model,
    random_lora_adapter,
)

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lively_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="module")
def adapter(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_lora_adapter(tiny, tmp_path_factory.mktemp("adapter") / "lora")


@pytest.fixture(scope="module")
def backend(tiny: Path, adapter: Path) -> TransformersBackend:
    return TransformersBackend(tiny, device="cpu", batch_size=2, adapters={"lora": adapter})


def greedy_reference(model: torch.nn.Module, prompt: tuple[int, ...], steps: int) -> tuple[int, ...]:
    """Greedy decoding by repeated full forward passes: no padding, no cache, no generate()."""
    ids = list(prompt)
    for _ in range(steps):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return tuple(ids[len(prompt) :])


def test_tokenizer_keeps_every_digit_a_single_token(tiny: Path) -> None:
    tokens = AutoTokenizer.from_pretrained(tiny).tokenize("a question costs 0.25 in 1987 and 2012")
    digit_tokens = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digit_tokens == list("02519872012")


def test_checkpoint_round_trips_through_auto_classes(tiny: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert isinstance(model, LlamaForCausalLM) and model.config.tie_word_embeddings
    assert tokenizer.eos_token == "<|end|>" and tokenizer.pad_token == "<|pad|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.vocab_size == len(tokenizer)
    rendered = tokenizer.apply_chat_template(CONVERSATIONS[2], add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|user|>Do you mean the 1987 show?<|end|><|assistant|>CLARIFY: which?<|end|><|user|>2012<|end|><|assistant|>"
    )
    text = "Ron Perlman, 1987."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    again = build_tiny_model(
        tmp_path,
        CORPUS,
        vocab_size=400,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        initializer_range=0.1,
    )
    rebuilt = AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert all(torch.equal(v, rebuilt[k]) for k, v in model.state_dict().items())  # the seed fixes the weights


def test_batched_greedy_equals_one_at_a_time(backend: TransformersBackend) -> None:
    batched = backend.generate(CONVERSATIONS, GREEDY)  # 5 prompts in chunks of 2
    alone = [backend.generate([c], GREEDY)[0] for c in CONVERSATIONS]
    assert batched == alone
    assert len({c[0].token_ids for c in batched}) > 1  # the outputs depend on the prompt


def test_forced_prefix_is_continued_by_the_model_and_kept_in_the_completion(
    backend: TransformersBackend, tiny: Path
) -> None:
    prefixes = ["CLARIFY:", "", "ANSWER:", "MULTI:", ""]
    forced = backend.generate(CONVERSATIONS, GREEDY, prefixes=prefixes)
    plain = backend.generate(CONVERSATIONS, GREEDY)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    for prefix, [got], [free] in zip(prefixes, forced, plain):
        assert got.prompt_token_ids == free.prompt_token_ids  # the prompt without the forced opening
        if not prefix:
            assert got == free  # rows without a prefix are untouched by their neighbours' prefixes
            continue
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        assert got.text.startswith(prefix) and list(got.token_ids[: len(head)]) == head
        rest = greedy_reference(model, (*got.prompt_token_ids, *head), GREEDY.max_new_tokens)
        assert got.token_ids[len(head) :] == rest[: len(got.token_ids) - len(head)]
        assert got.text == tokenizer.decode(list(got.token_ids), skip_special_tokens=True)
    assert forced[0][0].token_ids != plain[0][0].token_ids
    with pytest.raises(ValueError, match="one prefix per conversation"):
        backend.generate(CONVERSATIONS, GREEDY, prefixes=["ANSWER:"])


def test_left_padding_does_not_change_the_output(backend: TransformersBackend, tiny: Path) -> None:
    short, long = CONVERSATIONS[4], CONVERSATIONS[1]
    together = backend.generate([short, long], GREEDY)[0][0]
    alone = backend.generate([short], GREEDY)[0][0]
    assert together == alone
    assert together.prompt_token_ids == tuple(backend.render([short])[0])
    assert backend.pad_token_id not in together.prompt_token_ids
    plain = AutoModelForCausalLM.from_pretrained(tiny).eval()
    assert together.token_ids == greedy_reference(plain, together.prompt_token_ids, GREEDY.max_new_tokens)


def test_static_kv_cache_gives_the_same_completions(backend: TransformersBackend, tiny: Path, adapter: Path) -> None:
    static = TransformersBackend(tiny, device="cpu", batch_size=2, adapters={"lora": adapter}, kv_cache="static")
    sampled = SamplingParams(temperature=1.0, max_new_tokens=12)
    seeds = list(range(len(CONVERSATIONS)))
    for adapter_name in (None, "lora"):
        assert static.generate(CONVERSATIONS, GREEDY, adapter_name) == backend.generate(
            CONVERSATIONS, GREEDY, adapter_name
        )
        assert static.generate(CONVERSATIONS, sampled, adapter_name, seeds=seeds) == backend.generate(
            CONVERSATIONS, sampled, adapter_name, seeds=seeds
        )
    with pytest.raises(ValueError, match="kv_cache"):
        TransformersBackend(tiny, device="cpu", kv_cache="paged")


def test_generation_in_waves_gives_the_tokens_of_one_call(
    backend: TransformersBackend, tiny: Path, adapter: Path
) -> None:
    waves = TransformersBackend(tiny, device="cpu", batch_size=2, adapters={"lora": adapter}, wave_tokens=3)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=12)
    stopped = SamplingParams(temperature=1.0, max_new_tokens=12, stop=("e",))  # rows end at different steps
    seeds = list(range(len(CONVERSATIONS)))
    lengths = set()
    for adapter_name in (None, "lora"):
        for params, row_seeds in ((GREEDY, None), (sampled, seeds), (stopped, seeds)):
            in_waves = waves.generate(CONVERSATIONS, params, adapter_name, seeds=row_seeds)
            assert in_waves == backend.generate(CONVERSATIONS, params, adapter_name, seeds=row_seeds)
            lengths |= {len(c.token_ids) for out in in_waves for c in out}
    assert min(lengths) <= 3 and max(lengths) == 12  # rows ended in the first wave and in the last
    with pytest.raises(ValueError, match="wave_tokens"):
        TransformersBackend(tiny, device="cpu", wave_tokens=0)


def test_lora_adapter_changes_the_output_and_matches_peft(
    backend: TransformersBackend, tiny: Path, adapter: Path
) -> None:
    base = backend.generate(CONVERSATIONS, GREEDY)
    tuned = backend.generate(CONVERSATIONS, GREEDY, adapter="lora")
    assert [c[0].token_ids for c in base] != [c[0].token_ids for c in tuned]
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny).eval()
    for b, t in zip(base, tuned):
        assert t[0].token_ids == greedy_reference(reference, t[0].prompt_token_ids, GREEDY.max_new_tokens)
        assert b[0].token_ids == greedy_reference(plain, b[0].prompt_token_ids, GREEDY.max_new_tokens)


def test_adapters_hot_swap_and_reregistering_a_name_replaces_it(
    backend: TransformersBackend, tiny: Path, tmp_path: Path
) -> None:
    torch.manual_seed(2)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["k_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), config).save_pretrained(tmp_path / "other")
    first = backend.generate(CONVERSATIONS, GREEDY, adapter="lora")
    backend.add_adapter("other", tmp_path / "other")
    other = backend.generate(CONVERSATIONS, GREEDY, adapter="other")
    assert other != first and backend.generate(CONVERSATIONS, GREEDY, adapter="lora") == first
    backend.add_adapter("other", backend.adapters["lora"])
    assert backend.generate(CONVERSATIONS, GREEDY, adapter="other") == first
    with pytest.raises(KeyError, match="unknown adapter"):
        backend.generate(CONVERSATIONS, GREEDY, adapter="missing")


def test_stop_string_cuts_the_text_and_the_tokens(backend: TransformersBackend) -> None:
    full = backend.generate([CONVERSATIONS[0]], GREEDY)[0][0]
    assert full.finish_reason == "length" and len(full.token_ids) == GREEDY.max_new_tokens
    # stop at a printable token of the output whose text first occurs where that token starts
    decode = backend.tokenizer.decode
    k, stop = next(
        (k, piece)
        for k in range(1, len(full.token_ids))
        if (piece := decode(full.token_ids[k : k + 1])).strip()
        and piece.isascii()
        and piece.isprintable()
        and full.text.find(piece) == len(decode(full.token_ids[:k]))
    )
    cut = backend.generate([CONVERSATIONS[0]], SamplingParams(temperature=0, max_new_tokens=12, stop=("@@", stop)))
    assert cut[0][0].finish_reason == "stop"
    assert cut[0][0].text == full.text[: full.text.index(stop)]
    assert cut[0][0].token_ids == full.token_ids[: k + 1]


def test_n_seeded_samples_are_reproducible_and_differ(backend: TransformersBackend) -> None:
    sampling = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, n=3, seed=7)
    first = backend.generate(CONVERSATIONS[:2], sampling)
    assert [len(c) for c in first] == [3, 3]
    assert first == backend.generate(CONVERSATIONS[:2], sampling)
    assert len({c.token_ids for c in first[0]}) > 1
    other_seed = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, n=3, seed=8)
    assert backend.generate(CONVERSATIONS[:2], other_seed) != first


def test_per_conversation_seeds_make_samples_independent_of_the_batch(backend: TransformersBackend) -> None:
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8)
    a, b, c = ([{"role": "user", "content": t}] for t in ("price 0.25", "a much longer question about words", "hi"))
    together = backend.generate([a, b, c], sampling, seeds=[11, 12, 13])
    alone = [backend.generate([conv], sampling, seeds=[s])[0] for conv, s in ((b, 12), (c, 13), (a, 11))]
    assert [together[1], together[2], together[0]] == alone
    reseeded = backend.generate([a, b, c], sampling, seeds=[14, 15, 16])
    assert reseeded != together  # other seeds, other samples
    with pytest.raises(ValueError, match="one seed per conversation"):
        backend.generate([a, b], sampling, seeds=[1])


def test_per_row_sampler_draws_from_the_softmax_and_each_row_from_its_own_seed() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    rows = 20_000
    sampler = PerRowSampler(range(rows), temperature=1.0, top_p=1.0)
    first = sampler(None, logits.expand(rows, -1).clone()).argmax(-1)
    frequencies = torch.bincount(first, minlength=4) / rows
    assert torch.allclose(frequencies, logits.softmax(-1), atol=0.015), frequencies
    second = sampler(None, logits.expand(rows, -1).clone()).argmax(-1)  # the next step: fresh draws
    assert 0.2 < (second != first).float().mean() < 0.8
    # Row 7's stream is the same whatever rows come with it.
    alone = PerRowSampler([7], temperature=1.0, top_p=1.0)
    assert [alone(None, logits[None].clone()).argmax(-1).item() for _ in range(2)] == [
        first[7].item(),
        second[7].item(),
    ]
    uniforms = counter_uniform(torch.arange(64), 0, 1000)
    assert uniforms.min() > 0.0 and uniforms.max() < 1.0 and abs(uniforms.mean().item() - 0.5) < 0.01


def test_seeded_top_p_sampling_keeps_only_the_nucleus(backend: TransformersBackend) -> None:
    conv = [{"role": "user", "content": "price 0.25"}]
    greedy = backend.generate([conv], SamplingParams(temperature=0, max_new_tokens=6))[0][0]
    tiny_nucleus = SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=6)
    assert backend.generate([conv], tiny_nucleus, seeds=[3])[0][0].token_ids == greedy.token_ids


def test_prompts_follow_the_chat_template_kwargs_and_templates_without_a_system_role(tiny: Path) -> None:
    chat = [{"role": "system", "content": "Prices: 0.25"}, {"role": "user", "content": "Who played the Beast?"}]
    quiet = TransformersBackend(tiny, device="cpu", chat_template_kwargs={"enable_thinking": False})
    quiet.tokenizer.chat_template = THINKING_TEMPLATE
    decoded = quiet.tokenizer.decode(quiet.render([chat])[0])
    assert decoded == "<|system|>Prices: 0.25<|end|><|user|>Who played the Beast?<|end|><|assistant|><think></think>"
    plain = TransformersBackend(tiny, device="cpu")
    plain.tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    decoded = plain.tokenizer.decode(plain.render([chat])[0])
    assert decoded == "<|user|>Prices: 0.25\n\nWho played the Beast?<|end|><|assistant|>"
    assert plain.generate([chat], SamplingParams(temperature=0, max_new_tokens=3))[0][0].finish_reason in {
        "stop",
        "length",
    }


def test_bf16_if_fast_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: device == "cuda")
    assert precision.resolve_bf16_if_fast("bf16_if_fast", "cuda") == "bfloat16"
    assert precision.resolve_bf16_if_fast("bf16_if_fast", "cpu") == "float32"  # emulated bf16: slower than float32
    assert precision.resolve_bf16_if_fast("float32", "cuda") == "float32"
    assert precision.resolve_bf16_if_fast("auto", "cpu") == "auto"


def test_merged_copies_of_killed_processes_are_removed(tmp_path: Path) -> None:
    """``remove_stale_merges`` deletes only merged checkpoints whose owner on this host is gone:
    a live owner's, another host's, an unowned folder (perhaps being made) and a garbled owner stay."""
    import os
    import socket
    import subprocess
    import sys

    from agents.vllm_backend import MERGE_OWNER_FILE, MERGED_PREFIX, remove_stale_merges

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    owners = {
        "killed": f"{host} {gone.pid}",
        "live": f"{host} {os.getpid()}",
        "elsewhere": f"another-host {gone.pid}",
        "garbled": "not an owner",
        "unowned": None,
    }
    for name, owner in owners.items():
        (tmp_path / (MERGED_PREFIX + name)).mkdir()
        if owner is not None:
            (tmp_path / (MERGED_PREFIX + name) / MERGE_OWNER_FILE).write_text(owner)
    (tmp_path / "not-a-merge").mkdir()
    assert remove_stale_merges(tmp_path) == [tmp_path / (MERGED_PREFIX + "killed")]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([MERGED_PREFIX + n for n in owners if n != "killed"] + ["not-a-merge"])
    assert remove_stale_merges(tmp_path) == []


def test_engine_processes_of_killed_runs_are_stopped_and_no_other_process_is(tmp_path: Path) -> None:
    """``stop_orphaned_engines`` kills a recorded process only when its owner on this host is gone
    and its start time is the recorded one (a reused pid is spared); a live owner's, another host's
    and a garbled record stay; ``record_children`` records what appeared since its ``before``."""
    import os
    import socket
    import subprocess
    import sys

    import psutil

    from agents.engine_processes import child_pids, forget, record_children, stop_orphaned_engines

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    before = child_pids()
    sleepers = {name: subprocess.Popen(["sleep", "60"]) for name in ("orphan", "live", "reused", "elsewhere")}
    try:
        record = record_children(before, tmp_path)
        assert record is not None and record.read_text().splitlines()[0] == f"{host} {os.getpid()}"
        assert {int(line.split()[0]) for line in record.read_text().splitlines()[1:]} == {
            p.pid for p in sleepers.values()
        }
        forget(record)

        def started(name: str) -> float:
            return psutil.Process(sleepers[name].pid).create_time()

        records = {
            "orphan": f"{host} {gone.pid}\n{sleepers['orphan'].pid} {started('orphan')!r}\n",
            "live": f"{host} {os.getpid()}\n{sleepers['live'].pid} {started('live')!r}\n",
            "reused": f"{host} {gone.pid}\n{sleepers['reused'].pid} {started('reused') - 5.0!r}\n",
            "elsewhere": f"another-host {gone.pid}\n{sleepers['elsewhere'].pid} {started('elsewhere')!r}\n",
            "garbled": "not a record\n",
        }
        for name, text in records.items():
            (tmp_path / f"{name}.txt").write_text(text)
        assert stop_orphaned_engines(tmp_path) == [sleepers["orphan"].pid]
        assert sleepers["orphan"].wait(timeout=10) == -9
        assert all(sleepers[name].poll() is None for name in ("live", "reused", "elsewhere"))
        assert sorted(p.stem for p in tmp_path.iterdir()) == ["elsewhere", "garbled", "live"]
        assert stop_orphaned_engines(tmp_path) == []
    finally:
        for p in sleepers.values():
            p.kill()
            p.wait()
