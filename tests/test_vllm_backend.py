"""The vLLM backend on a tiny model: it must agree with the transformers backend token for token."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from agents.generation import SamplingParams
from agents.hf_backend import TransformersBackend
from agents.vllm_backend import VLLMBackend
from helpers import CONVERSATIONS, lively_tiny_model, random_lora_adapter, require_vllm

pytestmark = pytest.mark.vllm

GREEDY = SamplingParams(temperature=0, max_new_tokens=16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # head_dim 64, which every vLLM attention backend supports.
    return lively_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden_size=128, intermediate_size=256)


@pytest.fixture(scope="module")
def adapter(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_lora_adapter(tiny, tmp_path_factory.mktemp("adapter") / "lora")


@pytest.fixture(scope="module")
def vllm_backend(tiny: Path, adapter: Path) -> Iterator[VLLMBackend]:
    require_vllm()
    backend = VLLMBackend(
        tiny,
        dtype="float32",
        max_model_len=512,
        max_lora_rank=8,
        enforce_eager=True,
        kv_cache_memory_bytes=64 << 20,  # explicit KV cache size: small, and the same on CPU and GPU
    )
    backend.add_adapter("lora", adapter)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf_backend(tiny: Path, adapter: Path) -> TransformersBackend:
    return TransformersBackend(tiny, device="cpu", dtype="float32", adapters={"lora": adapter})


def assert_same_completions(vllm_out: list, hf_out: list) -> None:
    """Same tokens and finish reasons; the same text, except that vLLM withholds a trailing
    incomplete UTF-8 character that transformers decodes as U+FFFD."""
    for v, h in zip(vllm_out, hf_out, strict=True):
        for a, b in zip(v, h, strict=True):
            assert a.token_ids == b.token_ids and a.prompt_token_ids == b.prompt_token_ids
            assert a.finish_reason == b.finish_reason
            assert a.text.rstrip("\ufffd") == b.text.rstrip("\ufffd")


def test_vllm_batch_equals_one_at_a_time(vllm_backend: VLLMBackend) -> None:
    batched = vllm_backend.generate(CONVERSATIONS, GREEDY)
    assert batched == [vllm_backend.generate([c], GREEDY)[0] for c in CONVERSATIONS]
    assert len({c[0].token_ids for c in batched}) > 1


def test_vllm_greedy_matches_transformers(vllm_backend: VLLMBackend, hf_backend: TransformersBackend) -> None:
    assert_same_completions(vllm_backend.generate(CONVERSATIONS, GREEDY), hf_backend.generate(CONVERSATIONS, GREEDY))


def test_vllm_forced_prefixes_match_transformers(vllm_backend: VLLMBackend, hf_backend: TransformersBackend) -> None:
    prefixes = ["CLARIFY:", "", "ANSWER:", "MULTI:", "ANSWER:"]
    forced = vllm_backend.generate(CONVERSATIONS, GREEDY, prefixes=prefixes)
    assert_same_completions(forced, hf_backend.generate(CONVERSATIONS, GREEDY, prefixes=prefixes))
    assert all(c.text.startswith(p) for [c], p in zip(forced, prefixes))


def test_vllm_lora_request_changes_output_and_matches_transformers(
    vllm_backend: VLLMBackend, hf_backend: TransformersBackend
) -> None:
    base = vllm_backend.generate(CONVERSATIONS, GREEDY)
    tuned = vllm_backend.generate(CONVERSATIONS, GREEDY, adapter="lora")
    assert [c[0].token_ids for c in tuned] != [c[0].token_ids for c in base]
    assert_same_completions(tuned, hf_backend.generate(CONVERSATIONS, GREEDY, adapter="lora"))
    assert vllm_backend.generate(CONVERSATIONS, GREEDY) == base  # the adapter is per call, not sticky


def test_vllm_stop_strings_and_seeded_samples(vllm_backend: VLLMBackend, hf_backend: TransformersBackend) -> None:
    conversation = [CONVERSATIONS[1]]
    full = hf_backend.generate(conversation, GREEDY)[0][0].text
    stop = next(full[i : i + 2] for i in range(2, len(full)) if full[i : i + 2].isascii() and full[i : i + 2].isalnum())
    cut = SamplingParams(temperature=0, max_new_tokens=16, stop=("@@", stop))
    vllm_cut = vllm_backend.generate(conversation, cut)
    assert vllm_cut[0][0].finish_reason == "stop" and vllm_cut[0][0].text == full[: full.index(stop)]
    assert_same_completions(vllm_cut, hf_backend.generate(conversation, cut))
    sampling = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8, n=3, seed=3)
    samples = vllm_backend.generate(CONVERSATIONS[:2], sampling)
    assert [len(s) for s in samples] == [3, 3] and len({c.token_ids for c in samples[0]}) > 1
    assert vllm_backend.generate(CONVERSATIONS[:2], sampling) == samples


def test_vllm_per_request_seeds_make_samples_independent_of_the_batch(vllm_backend: VLLMBackend) -> None:
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8)
    convs = CONVERSATIONS[:3]
    together = vllm_backend.generate(convs, sampling, seeds=[21, 22, 23])
    alone = [vllm_backend.generate([c], sampling, seeds=[s])[0] for c, s in zip(convs, (21, 22, 23))]
    assert [[c.token_ids for c in out] for out in together] == [[c.token_ids for c in out] for out in alone]


def test_seeded_samples_of_prompts_too_many_for_one_engine_step(vllm_backend: VLLMBackend) -> None:
    # 16 prompts of ~250 tokens overflow a step of vLLM-CPU's default chunked prefill, which then
    # splits one and crashes rewinding its seeded generator ("CPU Generator does not use offset");
    # VLLMBackend schedules whole prompts on a CPU, so self-play's seeded batches run.
    sampling = SamplingParams(temperature=0.7, max_new_tokens=8)
    convs = [[{"role": "user", "content": f"word{i} " * 120}] for i in range(16)]
    together = vllm_backend.generate(convs, sampling, seeds=list(range(16)))
    assert all(len(out[0].prompt_token_ids) > 240 for out in together)
    alone = vllm_backend.generate(convs[5:6], sampling, seeds=[5])
    assert together[5][0].token_ids == alone[0][0].token_ids


def test_merged_adapters_generate_what_the_lora_path_does(
    tiny: Path, adapter: Path, vllm_backend: VLLMBackend, tmp_path: Path
) -> None:
    """``merge_adapters``: each adapter merged into its own engine (no LoRA path) gives the LoRA
    path's greedy tokens; one engine per adapter folder, at most ``max_loras`` of them, and a
    retrained adapter in the same folder is merged again."""
    other = random_lora_adapter(tiny, tmp_path / "other", seed=2)
    merged = VLLMBackend(
        tiny,
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        kv_cache_memory_bytes=64 << 20,
        merge_adapters=True,
        max_loras=1,
        merge_dir=tmp_path / "merges",
    )
    try:
        assert merged._llm is None  # no base engine until a call asks for the base model
        merged.add_adapter("lora", adapter)
        merged.add_adapter("same", adapter)
        tuned = merged.generate(CONVERSATIONS, GREEDY, adapter="lora")
        assert_same_completions(tuned, vllm_backend.generate(CONVERSATIONS, GREEDY, adapter="lora"))
        assert merged.generate(CONVERSATIONS, GREEDY, adapter="same") == tuned and len(merged._merged) == 1
        assert merged._llm is None
        merged.add_adapter("other", other)
        vllm_backend.add_adapter("other", other)
        assert_same_completions(
            merged.generate(CONVERSATIONS, GREEDY, adapter="other"),
            vllm_backend.generate(CONVERSATIONS, GREEDY, adapter="other"),
        )
        assert len(merged._merged) == 1  # max_loras=1: the first adapter's engine was shut down
        assert_same_completions(merged.generate(CONVERSATIONS, GREEDY), vllm_backend.generate(CONVERSATIONS, GREEDY))
        random_lora_adapter(tiny, tmp_path / "other", seed=3)  # retrained in place
        retrained = merged.generate(CONVERSATIONS, GREEDY, adapter="other")
        vllm_backend.add_adapter("other", other)
        assert_same_completions(retrained, vllm_backend.generate(CONVERSATIONS, GREEDY, adapter="other"))
    finally:
        merged.close()
    assert not list((tmp_path / "merges").iterdir())  # close deleted every merged copy


KILLED_RUN = """
import sys, time
from agents.generation import SamplingParams
from agents.vllm_backend import VLLMBackend

if __name__ == "__main__":
    backend = VLLMBackend(sys.argv[1], dtype="float32", max_model_len=512, enable_lora=False, enforce_eager=True,
                          kv_cache_memory_bytes=64 << 20)
    backend.generate([[{"role": "user", "content": "hi"}]], SamplingParams(temperature=0, max_new_tokens=2))
    print("READY", flush=True)
    time.sleep(600)
"""


def test_a_killed_runs_engine_processes_are_stopped_by_the_next_backend(tiny: Path, tmp_path: Path) -> None:
    """A run killed with SIGKILL leaves its vLLM engine processes alive (they hold the model and its
    KV cache); the record its engine start wrote lets ``stop_orphaned_engines`` (which every
    ``VLLMBackend`` calls first) kill exactly those."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    from agents.engine_processes import RECORDS_DIR, stop_orphaned_engines

    require_vllm()
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])}
    run = subprocess.Popen([sys.executable, str(script), str(tiny)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert any(line.strip() == "READY" for line in run.stdout), "the run exited before its engine started"
        (record,) = (tmp_path / RECORDS_DIR).glob("*.txt")
        recorded = [int(line.split()[0]) for line in record.read_text().splitlines()[1:]]
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        left = [psutil.Process(pid) for pid in recorded if psutil.pid_exists(pid)]
        # the engine core does not watch its parent (its workers watch it, and a resource tracker may exit)
        cores = [p for p in left if "EngineCore" in " ".join(p.cmdline())]
        assert cores, f"the killed run's engine core exited by itself ({[p.cmdline() for p in left]})"
        killed = stop_orphaned_engines(tmp_path / RECORDS_DIR)
        assert {p.pid for p in cores} <= set(killed) <= set(recorded)
        _, alive = psutil.wait_procs(left, timeout=30)
        assert not alive and not list((tmp_path / RECORDS_DIR).iterdir())
    finally:
        run.kill()
