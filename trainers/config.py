"""Typed run configs: YAML files plus ``key.sub=value`` overrides, validated strictly.

Every section is a dataclass with documented defaults. An unknown key or a value of the
wrong type is a ``ConfigError`` naming the dotted key (and the file). The resolved config
is saved in every run directory (``save_config``) and reloads to the same run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class ModelConfig:
    """Which model generates, and on what."""

    name: str = "tiny"  # "tiny" (built by the model factory), "smollm2-135m-instruct", a local path or a hub id
    adapter: str | None = None  # a peft adapter directory applied on top
    backend: Literal["transformers", "vllm"] = "transformers"
    device: str = "auto"  # transformers: "cpu", "cuda", "auto"
    dtype: str = "auto"
    batch_size: int = 64  # transformers: prompts per generate call
    kv_cache: Literal["dynamic", "static"] = "dynamic"  # transformers: "static" preallocates the cache (same tokens; 1.3x faster quickstart grow on CPU)
    wave_tokens: int | None = None  # transformers: generate in waves of this many new tokens, dropping finished rows between waves (same tokens; faster when message lengths vary)
    vllm: dict[str, Any] = field(default_factory=dict)  # passed to vllm.LLM (tensor_parallel_size, gpu_memory_utilization, max_model_len, ...)
    tiny: dict[str, Any] = field(default_factory=dict)  # name "tiny": agents.tiny_model.build_tiny_model sizes (hidden_size, num_layers, vocab_size, ...)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # to the chat template when generating and in SFT (Qwen3: {enable_thinking: false})

    def __post_init__(self) -> None:
        if self.wave_tokens is not None and self.wave_tokens < 1:
            raise ConfigError(f"'model.wave_tokens' must be a positive number of tokens (or null), got {self.wave_tokens!r}")


@dataclass
class SamplingConfig:
    """Decoding settings; temperature 0 is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    stop: list[str] = field(default_factory=list)  # stop strings (cut from the message)


@dataclass
class EnvConfig:
    """The environment: tasks, prices, limits."""

    source: Any = "synthetic"  # see clarify_env.sources.make_source
    costs: Any = "default:train"  # see clarify_env.costs.make_cost_sampler
    max_questions: int = 1
    protocol_error_penalty: float = 0.1
    accuracy_metric: Literal["f1", "em"] = "f1"


@dataclass
class AssistantConfig:
    """How the LLM assistant is prompted."""

    prompt_style: Literal["full", "compact"] = "full"  # "compact" suits tiny models
    few_shot: int = 0  # worked examples shown before the dialogue
    few_shot_format: Literal["system", "turns"] = "system"  # in the system prompt, or as earlier chat turns
    prices_last: bool = False  # compact style: the price lines after the user's question, just before the reply
    reply_lookup: bool = False  # compact style: the meaning line a clarification reply names, under the reply
    multi_lines: bool = False  # compact style: taught MULTI messages put one "facet: answer" item a line


@dataclass
class UserConfig:
    """The user simulator."""

    kind: Literal["scripted", "llm"] = "scripted"
    model: str | None = None  # LLM user's model; None = the assistant's model (self-play)
    temperature: float = 0.0
    max_new_tokens: int = 32


@dataclass
class RolloutConfig:
    """The batched self-play engine."""

    num_envs: int = 64  # environments played in lockstep
    samples_per_group: int = 4  # episodes per (task, prices) group
    # ReST's grow stages: consecutive groups sharing a task, each at its own prices (1: a task
    # per group); the kept moves of one task then differ by their prices alone
    price_draws_per_task: int = 1
    # ReST's grow stages: sample k of a group opens with the move tag ANSWER / MULTI / CLARIFY
    # (k mod 3) and the policy writes the rest, so the filter compares every move on the same
    # task and prices (exploration over the first move; samples_per_group a multiple of 3)
    explore_first_move: bool = False
    episodes: int = 256

    def __post_init__(self) -> None:
        for key in ("num_envs", "samples_per_group", "price_draws_per_task"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'rollout.{key}' must be at least 1, got {getattr(self, key)!r}")
        if self.explore_first_move and self.samples_per_group % 3:
            raise ConfigError(
                "'rollout.explore_first_move' opens the samples of a group with each of the 3 moves in turn: "
                f"'rollout.samples_per_group' must be a multiple of 3, got {self.samples_per_group}")


@dataclass
class SFTConfig:
    """The improve step: next-token loss on the assistant's own turns (``trainers.sft``)."""

    lora: bool = True  # false: full fine-tuning (for tiny models)
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"  # peft LoRA target modules
    learning_rate: float = 2e-4
    epochs: int = 1
    max_steps: int = 0  # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = 8  # examples per process per micro-step
    grad_accumulation: int = 1  # micro-steps per optimizer step
    weight_decay: float = 0.0
    # adamw, or muon: Muon on the hidden weight matrices, AdamW on embeddings, norms and biases
    # (one learning rate: Muon's step is scaled to AdamW's RMS)
    optimizer: Literal["adamw", "muon"] = "adamw"
    warmup_ratio: float = 0.03  # share of the steps with a linear learning-rate warm-up (then linear decay to 0)
    max_grad_norm: float = 1.0
    max_length: int = 1024  # longer examples are dropped (never truncated: the last turn would be cut)
    bf16: bool | Literal["auto"] = "auto"  # "auto": bf16 mixed precision where the GPU supports it
    gradient_checkpointing: bool = False
    packing: bool = False  # padding-free: each micro-batch's examples packed end to end into rows of max_length tokens (same examples and loss per step, no pad tokens; 1.4x faster quickstart steps on CPU)
    group_by_length: bool = False  # batches of examples of similar length (less padding: 1.4-1.85x faster steps on the tiny model, but less learnt per step: BENCHMARKS.md)
    # loss weight of each assistant turn's first token (its move tag: the decision the prices steer)
    # against 1 for the turn's other tokens; the step's loss is divided by the summed weights
    turn_start_weight: float = 1.0
    seed: int = 0
    logging_steps: int = 10
    checkpoint_steps: int = 0  # > 0: also checkpoint every n steps (always at each epoch's end)

    def __post_init__(self) -> None:
        if not self.turn_start_weight > 0:
            raise ConfigError(f"'sft.turn_start_weight' must be positive, got {self.turn_start_weight!r}")


@dataclass
class EvalConfig:
    """Evaluation at fixed prices (``trainers.evaluate``)."""

    splits: list[str] = field(default_factory=lambda: ["default:heldout", "default:extrapolation"])
    episodes_per_point: int = 64
    temperature: float = 0.0  # decoding temperature of an LLM policy under evaluation (0: greedy)
    baselines: list[str] = field(default_factory=lambda: ["always_answer", "always_multi", "always_clarify"])
    bootstrap_samples: int = 1000


@dataclass
class WandbConfig:
    """Weights & Biases logging (``trainers.run_logging``); metrics.jsonl is written either way."""

    enabled: bool = True
    project: str = "clarify-env"
    entity: str | None = None
    mode: Literal["auto", "offline", "online", "disabled"] = "auto"  # auto: $WANDB_MODE, else online if logged in, else offline


@dataclass
class SeedConfig:
    """The optional behaviour-cloning start: dialogues of a cost-blind scripted policy
    (a random mixture of moves), so that the starting policy is *not* steerable."""

    enabled: bool = True
    episodes: int = 2000
    weights: dict[str, float] = field(default_factory=lambda: {"ANSWER": 1.0, "MULTI": 1.0, "CLARIFY": 1.0})
    epochs: int = 2  # SFT epochs over the seed dialogues (other SFT settings from the sft section)


@dataclass
class FilterConfig:
    """Which grown episodes the improve step trains on."""

    score: Literal["expected_reward", "reward"] = "expected_reward"  # expected: the luck of a guess removed
    best_k: int = 1  # keep the k best of each (task, prices) group; 0 keeps all that pass
    threshold: float | None = None  # keep only scores >= threshold at the first improve step ...
    threshold_step: float = 0.0  # ... raised by this much at each later step (ReST's rising threshold)
    above_group_mean: bool = False  # keep only episodes scoring above their group's mean
    drop_protocol_errors: bool = True


@dataclass
class ReSTConfig:
    """Grow / filter / improve / evaluate iterations."""

    iterations: int = 2
    grow_episodes: int = 1024  # per iteration; groups of rollout.samples_per_group
    improve_from: Literal["base", "last"] = "base"  # base: re-fine-tune the starting policy each time (ReST-EM)
    seed_mix: float = 0.0  # share of seed dialogues mixed into each improve step's data
    # the loss weight of a mixed-in seed dialogue's first move tag (None: sft.turn_start_weight,
    # as any turn's). 0: the cost-blind seed moves teach nothing about which move to make, only
    # how to carry one out (replay that keeps the copying sharp while the kept episodes teach the moves)
    seed_mix_move_weight: float | None = None
    # true: every pass (sft.epochs) over the kept episodes replays other seed dialogues (drawn
    # without replacement across passes): epochs x more distinct replayed dialogues for the same
    # steps. The improve step then trains one pass over the kept episodes repeated sft.epochs
    # times and all the draws.
    seed_mix_fresh: bool = False
    # true: each improve step trains on the kept episodes of this and every earlier iteration
    # (ReST's growing dataset: more distinct tasks per step), not only this iteration's
    accumulate_kept: bool = False
    eval_start: bool = True  # evaluate the starting policy (the seed stage's, else the base model) as step 0
    eval_each_iteration: bool = True  # else only the starting and the final policy
    final_episodes_per_point: int = 0  # > 0: a larger final evaluation (else eval.episodes_per_point)
    # the eval splits that larger final evaluation covers (empty: all of eval.splits); the
    # others get eval.episodes_per_point (e.g. extrapolation prices, which carry no bar)
    final_splits: list[str] = field(default_factory=list)
    seed: SeedConfig = field(default_factory=SeedConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.seed_mix < 1:
            raise ConfigError(f"'rest.seed_mix' must be in [0, 1), got {self.seed_mix!r}")
        if self.seed_mix_move_weight is not None and not self.seed_mix_move_weight >= 0:
            raise ConfigError(f"'rest.seed_mix_move_weight' must be >= 0, got {self.seed_mix_move_weight!r}")


@dataclass
class RunConfig:
    """A run: everything needed to reproduce it."""

    seed: int = 0
    run_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    assistant: AssistantConfig = field(default_factory=AssistantConfig)
    user: UserConfig = field(default_factory=UserConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    rest: ReSTConfig = field(default_factory=ReSTConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.rest.final_splits if s not in self.eval.splits]
        if unknown:
            raise ConfigError(f"'rest.final_splits' names {unknown}, not among eval.splits {self.eval.splits}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and minimally convert) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"'{key}' must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys by dotted name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key '{where}{unknown[0]}' (known here: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has no key")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] = (), cls: type = RunConfig) -> Any:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def save_config(config: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
