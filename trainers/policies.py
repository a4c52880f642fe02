"""Policies named on the command line, built into agents for evaluation and comparison.

A policy spec is one of:

- a scripted policy: ``oracle``, ``always_answer``, ``always_multi``, ``always_clarify``, ``random_mixture``;
- ``base``: the config's model as it is (``model.adapter`` on it, if set);
- ``openai:NAME`` or ``openai:NAME@URL``: NAME on an OpenAI-compatible server (``model.openai``'s
  settings; the URL defaults to its first ``base_urls`` entry);
- a run directory (it holds ``config.yaml``): the policy of its last finished stage, prompted
  and decoded as that run's own config says;
- an adapter directory (it holds ``adapter_config.json``): that LoRA adapter on the config's model;
- a model directory (it holds ``config.json``, e.g. a fully fine-tuned stage's ``policy/``): that
  model in place of the config's, prompted and decoded as the config says;
- ``forced:MOVE:SPEC``: the model policy SPEC with its first message opening with the move tag
  MOVE (ANSWER, MULTI or CLARIFY), which the model then continues.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.base import Agent, UserSimulator
from agents.generation import GenerationBackend
from agents.llm_assistant import ForcedOpening
from agents.llm_user import LLMUser
from trainers.config import ConfigError, RunConfig


@dataclass
class BuiltPolicy:
    """An assistant ready to evaluate, the user it plays against (None: the scripted user), the
    backends whose usage the evaluation reports, and the config that built it."""

    name: str
    assistant: Agent
    user: UserSimulator | None
    cfg: RunConfig
    meters: dict[str, GenerationBackend] = field(default_factory=dict)

    def close(self) -> None:
        for backend in {id(b): b for b in self.meters.values()}.values():
            backend.close()


def policy_name(spec: str) -> str:
    """A short name for a spec, usable as a folder name."""
    if spec.startswith("forced:"):
        move, _, inner = spec.removeprefix("forced:").partition(":")
        return f"{policy_name(inner)}+{move.lower()}"
    if spec.startswith("openai:"):
        return spec.removeprefix("openai:").split("@")[0].replace("/", "_")
    path = Path(spec)
    if any((path / marker).exists() for marker in ("config.yaml", "adapter_config.json", "config.json")):
        return path.name
    return spec


def build_policy(spec: str, cfg: RunConfig, tokenizer: str | None = None) -> BuiltPolicy:
    """The agents ``spec`` names (see the module docstring), evaluated under ``cfg``'s rules.
    ``tokenizer``: for a served model, render prompts with it and send token ids."""
    from agents import make_baseline
    from agents.baselines import BASELINES

    if spec.startswith("forced:"):
        move, _, inner = spec.removeprefix("forced:").partition(":")
        built = build_policy(inner, cfg, tokenizer)
        if built.meters == {}:
            raise ConfigError(f"{spec!r}: only a model policy can be forced to open with a move")
        built.assistant = ForcedOpening(built.assistant, move.upper())
        built.name = f"{built.name}+{move.lower()}"
        return built
    if spec == "oracle" or spec in BASELINES:
        if cfg.user.kind != "scripted":
            raise ConfigError(f"the scripted policy {spec!r} plays against the scripted user: set user.kind=scripted")
        from trainers.models import run_rules

        return BuiltPolicy(spec, make_baseline(spec, run_rules(cfg)), None, cfg)
    if spec.startswith("openai:"):
        served, _, url = spec.removeprefix("openai:").partition("@")
        server = replace(
            cfg.model.openai,
            served_model=served,
            base_urls=[url] if url else cfg.model.openai.base_urls,
            tokenizer=tokenizer,
        )
        return _model_policy(policy_name(spec), replace(cfg, model=replace(cfg.model, backend="openai", openai=server)))
    path = Path(spec)
    if (path / "config.yaml").exists():
        return _run_policy(path, cfg)
    if (path / "adapter_config.json").exists():
        return _model_policy(path.name, replace(cfg, model=replace(cfg.model, adapter=str(path))))
    if (path / "config.json").exists():
        return _model_policy(path.name, replace(cfg, model=replace(cfg.model, name=str(path), adapter=None)))
    if spec == "base":
        return _model_policy("base", cfg)
    raise ConfigError(
        f"policy {spec!r} is not a scripted policy ({', '.join(['oracle', *BASELINES])}), `base`, "
        "`openai:NAME[@URL]`, a run directory (with config.yaml), an adapter directory (with "
        "adapter_config.json) or a model directory (with config.json)"
    )


def _model_policy(name: str, cfg: RunConfig) -> BuiltPolicy:
    from trainers.models import load_policy_model, make_agents, make_backend

    cfg = replace(cfg, sampling=replace(cfg.sampling, temperature=cfg.eval.temperature))
    served = cfg.model.backend == "openai" and cfg.model.openai.tokenizer != "model"
    backend = make_backend(cfg.model, cfg.model.name if served else load_policy_model(cfg), cfg.run_dir)
    assistant, user = make_agents(cfg, backend)
    assistant.name = name
    meters = {"assistant": backend}
    if isinstance(user, LLMUser):  # one engine serving both roles is one meter, counted once
        meters = {"assistant and user": backend} if user.backend is backend else {**meters, "user": user.backend}
    return BuiltPolicy(name, assistant, user, cfg, meters)


def _run_policy(run_dir: Path, cfg: RunConfig) -> BuiltPolicy:
    """A run's last finished policy, prompted as its own config says, under ``cfg``'s evaluation."""
    from trainers.config_loading import load_config
    from trainers.stages import Stage

    own = load_config(run_dir / "config.yaml", check=False)
    stages = sorted(run_dir.glob("iter-*/done.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    names = [p.parent.name for p in stages] or [n for n in ("bc", "start") if (run_dir / n / "done.json").exists()]
    if not names:
        raise ConfigError(f"{run_dir} holds no finished policy (no iter-*/done.json, bc/done.json)")
    if names[-1] == "start":
        policy = Stage(run_dir, "start/eval").policy()
    else:
        policy = Stage(run_dir, names[-1]).policy()
    model = replace(own.model, name=policy.model, adapter=policy.adapter)
    merged = replace(cfg, model=model, assistant=own.assistant, run_dir=str(run_dir))
    built = _model_policy(f"{run_dir.name}:{policy.name}", merged)
    built.cfg = merged
    return built


def describe(built: BuiltPolicy) -> dict[str, Any]:
    """What was evaluated, for the comparison's record."""
    model = built.cfg.model
    served = model.openai.served_model if model.backend == "openai" else None
    return {
        "name": built.name,
        "assistant": type(built.assistant).__name__,
        "backend": model.backend,
        "model": served or model.name,
        "adapter": model.adapter,
    }
