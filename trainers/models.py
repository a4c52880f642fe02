"""From a run config to a model checkpoint, a generation backend and the LLM agents.

``model.name: tiny`` builds the tiny model (``agents.tiny_model``) once into
``<run_dir>/tiny-model``, with its tokenizer trained on synthetic task texts; any other
name goes through ``agents.model_fetch.resolve_model`` (a known name, a local path or
a hub id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.base import Agent
from agents.generation import GenerationBackend, SamplingParams
from agents.llm_assistant import LLMAssistant, compact_system
from agents.llm_user import LLMUser
from agents.scripted_user import ScriptedUser
from clarify_env.costs import make_cost_sampler
from clarify_env.oracle import context_meanings, move_values
from clarify_env.prompt import system_prompt
from clarify_env.sources import SyntheticSource
from trainers.config import ModelConfig, RunConfig

TINY_MODEL_DIR = "tiny-model"
POLICY_ADAPTER = "policy"  # the name model.adapter is registered under


def tiny_corpus(num_tasks: int = 1000, seed: int = 0) -> list[str]:
    """Texts the tiny tokenizer is trained on: prompts (both styles), queries, every move's
    message and the user's replies, for synthetic tasks at training prices."""
    rng = np.random.default_rng(seed)
    source, prices = SyntheticSource(), make_cost_sampler("default:train")
    texts = []
    for _ in range(num_tasks):
        task, costs = source.sample(rng), prices.sample(rng)
        texts += [system_prompt(costs, task.context), compact_system(costs, task.context), task.query]
        texts += [v.message for v in move_values(context_meanings(task.context), costs, task.query).values()]
        texts += [f"I mean {i.facet}. {i.question}" for i in task.interpretations]
    return texts


def load_policy_model(cfg: RunConfig) -> str:
    """The local path or hub id of the run's policy model, building the tiny model if needed."""
    if cfg.model.name != "tiny":
        from agents.model_fetch import resolve_model

        return resolve_model(cfg.model.name)
    path = Path(cfg.run_dir) / TINY_MODEL_DIR
    if not (path / "config.json").exists():
        from agents.tiny_model import build_tiny_model

        build_tiny_model(path, tiny_corpus(seed=cfg.seed), seed=cfg.seed, **cfg.model.tiny)
    return str(path)


def make_backend(model: ModelConfig, path: str) -> GenerationBackend:
    """The generation backend ``model.backend`` for the checkpoint at ``path``."""
    if model.backend == "vllm":
        from agents.vllm_backend import VLLMBackend

        return VLLMBackend(path, chat_template_kwargs=model.chat_template_kwargs, **model.vllm)
    from agents.hf_backend import TransformersBackend

    return TransformersBackend(path, device=model.device, dtype=model.dtype, batch_size=model.batch_size,
                               chat_template_kwargs=model.chat_template_kwargs, kv_cache=model.kv_cache,
                               wave_tokens=model.wave_tokens)


def make_assistant(
    cfg: RunConfig, backend: GenerationBackend | None, adapter: str | None = None,
    temperature: float | None = None, name: str | None = None,
) -> LLMAssistant:
    """The LLM assistant the config describes (``temperature`` overrides the sampling one).
    ``backend=None`` gives one that only renders prompts (``conversation``)."""
    sampling = SamplingParams(
        temperature=cfg.sampling.temperature if temperature is None else temperature, top_p=cfg.sampling.top_p,
        max_new_tokens=cfg.sampling.max_new_tokens, stop=tuple(cfg.sampling.stop),
    )
    return LLMAssistant(
        backend, sampling, adapter=adapter, prompt_style=cfg.assistant.prompt_style,
        few_shot=cfg.assistant.few_shot, few_shot_format=cfg.assistant.few_shot_format,
        prices_last=cfg.assistant.prices_last, reply_lookup=cfg.assistant.reply_lookup,
        multi_lines=cfg.assistant.multi_lines,
        max_questions=cfg.env.max_questions, name=name,
    )


def make_user_backend(cfg: RunConfig) -> GenerationBackend | None:
    """The LLM user's own backend when ``user.model`` names one (same kind as the policy's), else None."""
    if cfg.user.kind == "scripted" or cfg.user.model is None:
        return None
    from agents.model_fetch import resolve_model

    return make_backend(cfg.model, resolve_model(cfg.user.model))


def make_user(cfg: RunConfig, backend: GenerationBackend | None, user_backend: GenerationBackend | None = None) -> Agent:
    """The scripted user, or the LLM user: on ``backend``'s base model (self-play; never under
    the assistant's adapter) or on ``user.model``'s backend (``user_backend``, built here if not
    given: callers that play many stages pass one, so that it is built once)."""
    if cfg.user.kind == "scripted":
        return ScriptedUser()
    if cfg.user.model is not None:
        backend = user_backend if user_backend is not None else make_user_backend(cfg)
    user_sampling = SamplingParams(  # a user's turn is one line
        temperature=cfg.user.temperature, max_new_tokens=cfg.user.max_new_tokens, stop=("\n",)
    )
    return LLMUser(backend, user_sampling)


def make_agents(cfg: RunConfig, backend: GenerationBackend) -> tuple[LLMAssistant, Agent]:
    """The LLM assistant (under ``model.adapter`` when set) and the user ``cfg.user`` asks for."""
    adapter = None
    if cfg.model.adapter:
        backend.add_adapter(POLICY_ADAPTER, cfg.model.adapter)
        adapter = POLICY_ADAPTER
    return make_assistant(cfg, backend, adapter), make_user(cfg, backend)
