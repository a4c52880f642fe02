"""From a run config to a model checkpoint, a generation backend and the LLM agents.

``model.name: tiny`` builds the tiny model (``agents.tiny_model``) once into
``<run_dir>/tiny-model``, with its tokenizer trained on synthetic task texts; any other
name goes through ``agents.model_fetch.resolve_model`` (a known name, a local path or
a hub id).
"""

from __future__ import annotations

import gc
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from agents.base import UserSimulator
from agents.generation import GenerationBackend, SamplingParams
from agents.llm_assistant import LLMAssistant, compact_system
from agents.llm_user import LLMUser
from agents.scripted_user import ScriptedUser
from clarify_env.costs import make_cost_sampler
from clarify_env.oracle import context_meanings, move_values
from clarify_env.prompt import system_prompt
from clarify_env.scoring import Rules
from clarify_env.sources import SyntheticSource
from trainers.config import ModelConfig, RunConfig
from trainers.stages import Policy, StageError

TINY_MODEL_DIR = "tiny-model"
TINY_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
POLICY_ADAPTER = "policy"  # the name model.adapter is registered under
USER_ADAPTER = "user"  # the name user.adapter is registered under
USER_CLONE = "clone"  # user.adapter's value for the run's own cloned user (stage user/)


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
    if not path.exists():
        from agents.tiny_model import build_tiny_model

        staging = path.with_name(TINY_MODEL_DIR + ".building")
        shutil.rmtree(staging, ignore_errors=True)  # a build killed halfway
        build_tiny_model(staging, tiny_corpus(seed=cfg.seed), seed=cfg.seed, **cfg.model.tiny)
        staging.rename(path)  # atomic: a half-built model never looks built
    missing = [name for name in TINY_MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise StageError(
            f"{path} lacks {', '.join(missing)}: the tiny model is damaged; delete {path} to rebuild it "
            "(the same weights: it depends on the run's seed alone)"
        )
    return str(path)


RESPONSE_CACHE = "responses.sqlite"


def run_rules(cfg: RunConfig) -> Rules:
    """The run's scoring rules: ``cfg.env.rules``, with a ``word_tokenizer`` of ``model`` (a per-token
    price in the policy's own tokens) naming the policy model's checkpoint."""
    rules = cfg.env.rules
    if rules.word_unit == "tokens" and rules.word_tokenizer == "model":
        rules = replace(rules, word_tokenizer=load_policy_model(cfg))
    return rules


def make_backend(model: ModelConfig, path: str, run_dir: str | Path | None = None) -> GenerationBackend:
    """The generation backend ``model.backend`` for the checkpoint at ``path`` (a served model: the
    servers of ``model.openai``, their response cache in ``run_dir``)."""
    if model.backend == "openai":
        return make_server_backend(
            model, model.openai.served_model or model.name, model.openai.base_urls, path, run_dir
        )
    if model.backend == "vllm":
        from agents.vllm_backend import VLLMBackend

        return VLLMBackend(path, chat_template_kwargs=model.chat_template_kwargs, **model.vllm)
    from agents.hf_backend import TransformersBackend

    return TransformersBackend(
        path,
        device=model.device,
        dtype=model.dtype,
        batch_size=model.batch_size,
        chat_template_kwargs=model.chat_template_kwargs,
        kv_cache=model.kv_cache,
        wave_tokens=model.wave_tokens,
    )


def make_server_backend(
    model: ModelConfig, served: str, base_urls: list[str], path: str | None, run_dir: str | Path | None
) -> GenerationBackend:
    """An ``OpenAIBackend`` for ``served`` on ``base_urls`` with ``model.openai``'s settings (``path``: the
    local checkpoint whose tokenizer renders the prompts, where ``model.openai.tokenizer`` says so)."""
    from agents.openai_backend import OpenAIBackend, Prices

    server = model.openai
    tokenizer = path if server.tokenizer == "model" else server.tokenizer
    cache = Path(run_dir) / RESPONSE_CACHE if server.cache and run_dir is not None else None
    return OpenAIBackend(
        served,
        base_urls,
        tokenizer=tokenizer,
        api_key_env=server.api_key_env,
        max_concurrency=server.max_concurrency,
        max_retries=server.max_retries,
        timeout=server.timeout_s,
        cache_path=cache,
        prices=Prices(server.prompt_price_per_1k, server.completion_price_per_1k),
        chat_template_kwargs=model.chat_template_kwargs,
    )


def make_assistant(
    cfg: RunConfig,
    backend: GenerationBackend | None,
    adapter: str | None = None,
    temperature: float | None = None,
    name: str | None = None,
) -> LLMAssistant:
    """The LLM assistant the config describes (``temperature`` overrides the sampling one).
    ``backend=None`` gives one that only renders prompts (``conversation``)."""
    sampling = SamplingParams(
        temperature=cfg.sampling.temperature if temperature is None else temperature,
        top_p=cfg.sampling.top_p,
        max_new_tokens=cfg.sampling.max_new_tokens,
        stop=tuple(cfg.sampling.stop),
    )
    return LLMAssistant(
        backend,
        sampling,
        adapter=adapter,
        prompt_style=cfg.assistant.prompt_style,
        few_shot=cfg.assistant.few_shot,
        few_shot_format=cfg.assistant.few_shot_format,
        reply_lookup=cfg.assistant.reply_lookup,
        rules=run_rules(cfg),
        name=name,
    )


def make_user_backend(cfg: RunConfig) -> GenerationBackend | None:
    """The LLM user's own backend when ``user.model`` names one (same kind as the policy's, or a served
    model: ``openai:NAME``), else None."""
    if cfg.user.kind == "scripted" or cfg.user.model is None:
        return None
    if cfg.user.model.startswith("openai:"):
        urls = [cfg.user.base_url] if cfg.user.base_url else cfg.model.openai.base_urls
        tokenizer = None if cfg.model.openai.tokenizer == "model" else cfg.model.openai.tokenizer
        model = replace(cfg.model, openai=replace(cfg.model.openai, tokenizer=tokenizer))
        return make_server_backend(model, cfg.user.model.removeprefix("openai:"), urls, None, cfg.run_dir)
    from agents.model_fetch import resolve_model

    return make_backend(cfg.model, resolve_model(cfg.user.model), cfg.run_dir)


def make_user(
    cfg: RunConfig, backend: GenerationBackend | None, user_backend: GenerationBackend | None = None
) -> UserSimulator:
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
    adapter = None
    if cfg.user.adapter is not None:
        path = user_adapter_path(cfg)
        if not (path / "adapter_config.json").exists():
            how = (
                f"`clarify train` of this config trains it first (stage {Path(cfg.run_dir) / 'user'})"
                if cfg.user.adapter == USER_CLONE
                else "give the folder of a saved peft adapter"
            )
            raise StageError(f"user.adapter: no LoRA adapter at {path}: {how}")
        if backend.adapters.get(USER_ADAPTER) is None:  # registered once per backend
            backend.add_adapter(USER_ADAPTER, path)
        adapter = USER_ADAPTER
    return LLMUser(backend, user_sampling, adapter)


def user_adapter_path(cfg: RunConfig) -> Path:
    """Where ``user.adapter`` lives: ``<run_dir>/user/adapter`` for ``clone``, else the path given."""
    if cfg.user.adapter == USER_CLONE:
        return Path(cfg.run_dir) / "user" / "adapter"
    return Path(str(cfg.user.adapter))


def make_agents(cfg: RunConfig, backend: GenerationBackend) -> tuple[LLMAssistant, UserSimulator]:
    """The LLM assistant (under ``model.adapter`` when set) and the user ``cfg.user`` asks for."""
    adapter = None
    if cfg.model.adapter:
        backend.add_adapter(POLICY_ADAPTER, cfg.model.adapter)
        adapter = POLICY_ADAPTER
    return make_assistant(cfg, backend, adapter), make_user(cfg, backend)


class PolicyBackends:
    """The generation backend of the current policy's model, and the LLM user's. A LoRA policy is a
    hot-swapped adapter on the same backend (vLLM: a ``LoRARequest``); a fully fine-tuned one
    loads a new backend; a user on its own ``user.model`` keeps one backend for the whole run."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.model: str | None = None
        self.backend: GenerationBackend | None = None
        self.adapters: dict[str, str] = {}  # name -> path registered with the current backend
        self.user_backend: GenerationBackend | None = None

    def get(self, policy: Policy) -> tuple[GenerationBackend, str | None]:
        """The backend generating for ``policy`` and the adapter name to pass it (None: no adapter)."""
        if self.model != policy.model:
            self._close_policy()
            self.backend = make_backend(self.cfg.model, policy.model, self.cfg.run_dir)
            self.model = policy.model
        if policy.adapter is None:
            return self.backend, None
        if self.adapters.get(policy.name) != policy.adapter:
            self.backend.add_adapter(policy.name, policy.adapter)
            self.adapters[policy.name] = policy.adapter
        return self.backend, policy.name

    def agents(self, policy: Policy, temperature: float) -> tuple[LLMAssistant, UserSimulator]:
        """The assistant playing ``policy`` at ``temperature`` and the configured user."""
        backend, adapter = self.get(policy)
        if self.user_backend is None:  # None again for the scripted user or self-play: nothing to build
            self.user_backend = make_user_backend(self.cfg)
        assistant = make_assistant(self.cfg, backend, adapter, temperature, policy.name)
        return assistant, make_user(self.cfg, backend, self.user_backend)

    def _close_policy(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.model, self.backend, self.adapters = None, None, {}
        gc.collect()

    def close(self) -> None:
        """Shut every backend down: a vLLM engine holds its memory (and processes) until then."""
        self._close_policy()
        if self.user_backend is not None:
            self.user_backend.close()
            self.user_backend = None
