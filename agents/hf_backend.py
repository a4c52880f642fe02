"""Generation with Hugging Face transformers (CPU or GPU), with optional peft LoRA adapters."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager, Mapping, Sequence

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList

from agents.generation import (
    Completion,
    Conversation,
    GenerationBackend,
    SamplingParams,
    cut_at_stop,
    sample_seed,
)
from agents.precision import resolve_bf16_if_fast

_GOLDEN = 0x9E3779B97F4A7C15 - 2**64  # SplitMix64's constants as signed int64 (torch has no uint64 arithmetic)
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def _shift_right(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (``>>`` on int64 is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 tensors (multiplication wraps modulo 2**64)."""
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def counter_uniform(row_keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniforms in (0, 1), shape (rows, vocab): element (r, v) is draw number ``step * vocab + v``
    of SplitMix64 seeded with ``row_keys[r]``. Counter-based, so one vectorised call serves
    a whole batch and each row's draws depend on its own key alone."""
    counters = (step * vocab + torch.arange(vocab, dtype=torch.int64)) * _GOLDEN
    bits = _splitmix64(row_keys[:, None] + counters[None, :] + _GOLDEN)
    return (_shift_right(bits, 11).double() + 0.5) * 2.0**-53


class PerRowSampler(LogitsProcessor):
    """Sampling with one random stream per row (Gumbel-max: the argmax of logits/T plus
    Gumbel noise is a draw from softmax(logits/T)), run under greedy decoding. Row i's
    draws depend on its own seed alone (a counter-based generator: ``counter_uniform``), so
    a sample does not change with the rest of the batch, and the noise for all rows is one
    vectorised computation per step."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, start_step: int = 0) -> None:
        self.keys = _splitmix64(torch.tensor([int(s) % 2**63 for s in seeds], dtype=torch.int64))
        self.temperature, self.top_p = temperature, top_p
        self.step = start_step  # a continued generation draws where the first call stopped

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:  # keep the smallest set of tokens whose probability reaches top_p
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            probs = sorted_scores.softmax(dim=-1)
            drop_sorted = probs.cumsum(dim=-1) - probs >= self.top_p
            scores = scores.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
        uniform = counter_uniform(self.keys, self.step, scores.shape[-1])
        self.step += 1
        gumbel = -torch.log(-torch.log(uniform))
        return scores + gumbel.to(scores.device, torch.float32)


class TransformersBackend(GenerationBackend):
    """Batched ``model.generate`` over left-padded chat prompts.

    ``model`` is a local checkpoint directory or a hub id; ``device`` is ``"cpu"``,
    ``"cuda"`` or ``"auto"`` (cuda when available); ``dtype`` is ``"auto"`` (the
    checkpoint's), a torch dtype name, or ``"bf16_if_fast"`` (bfloat16 where the device computes
    it natively, ``agents.precision.native_bf16``, else float32). Prompts are generated ``batch_size`` rows at a
    time (a conversation sampled ``n`` times takes ``n`` rows). ``adapters`` maps names
    to peft LoRA adapter directories; more can be added with ``add_adapter``.
    ``chat_template_kwargs`` go to the chat template (``render_chat``). ``kv_cache`` is
    transformers' cache implementation: ``"dynamic"`` (grown by concatenation each step)
    or ``"static"`` (preallocated per generate call: the same tokens; the quickstart's grow
    stage runs 1.3x faster with it on CPU, ``benchmarks/cpu_speedups.py``).

    ``wave_tokens`` (None: one ``generate`` call per batch) generates in waves: at most
    that many new tokens for every row, then the rows still unfinished go on in a new call
    (their prompt and tokens so far re-encoded, the finished rows dropped), the wave
    doubling each time up to ``max_new_tokens``. A batch no longer decodes every row until its
    longest message ends: on CPU, where a decode step costs in proportion to the rows and
    their cache, the quickstart's grow stage runs 1.35x faster (``benchmarks/cpu_speedups.py``).
    Greedy rows and seeded samples (``seeds``: the noise continues from the step the last wave
    reached) are the tokens a single call gives, up to floating-point rounding between a
    cached and a re-encoded prefix.
    """

    def __init__(
        self,
        model: str | Path,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int = 32,
        adapters: dict[str, str | Path] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        kv_cache: str = "dynamic",
        wave_tokens: int | None = None,
    ) -> None:
        if kv_cache not in ("dynamic", "static"):
            raise ValueError(f"kv_cache must be 'dynamic' or 'static', got {kv_cache!r}")
        if wave_tokens is not None and wave_tokens < 1:
            raise ValueError(f"wave_tokens must be a positive number of tokens or None, got {wave_tokens!r}")
        self.kv_cache, self.wave_tokens = kv_cache, wave_tokens
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, resolve_bf16_if_fast(dtype, self.device))
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype).to(self.device)
        self.model.eval()
        config_eos = self.model.generation_config.eos_token_id
        config_eos = config_eos if isinstance(config_eos, list) else [config_eos]
        # Stop where vLLM stops: the tokenizer's eos plus the generation config's.
        self.eos_token_ids = sorted({i for i in [self.tokenizer.eos_token_id, *config_eos] if i is not None})
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        # A blank config, so that the checkpoint's sampling defaults (top_k, repetition_penalty...)
        # never leak into generate: SamplingParams says everything.
        self.model.generation_config = GenerationConfig(eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id)
        self.adapters: dict[str, Path] = {}
        for name, path in (adapters or {}).items():
            self.add_adapter(name, path)

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load the peft LoRA adapter in ``path`` as ``name`` (replacing one of that name)."""
        if not isinstance(self.model, PeftModel):
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        else:
            if name in self.adapters:
                self.model.delete_adapter(name)
            self.model.load_adapter(str(path), adapter_name=name)
        self.model.eval()
        self.adapters[name] = Path(path)

    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: str | None = None,
        seeds: Sequence[int] | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        """See ``GenerationBackend.generate``."""
        self.check_request(conversations, adapter, seeds, prefixes)
        prompts, heads = self.render_prefixed(conversations, prefixes)
        rows = [p for p in prompts for _ in range(sampling.n)]
        row_seeds = None if seeds is None else [sample_seed(s, j) for s in seeds for j in range(sampling.n)]
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        done: list[Completion] = []
        for start in range(0, len(rows), self.batch_size):
            chunk_seeds = None if row_seeds is None else row_seeds[start : start + self.batch_size]
            done += self._generate_rows(rows[start : start + self.batch_size], sampling, adapter, chunk_seeds)
        outputs = [
            [self.prefixed(c, head, sampling.stop) for c in done[i * sampling.n : (i + 1) * sampling.n]]
            for i, head in enumerate(heads)
        ]
        self.usage.count(outputs)
        return outputs

    def _generate_rows(
        self, rows: list[list[int]], sampling: SamplingParams, adapter: str | None, seeds: list[int] | None
    ) -> list[Completion]:
        budget = sampling.max_new_tokens
        new: list[list[int]] = [[] for _ in rows]
        active, produced, wave = list(range(len(rows))), 0, self.wave_tokens or budget
        while active and produced < budget:
            size = min(wave, budget - produced)
            outs = self._generate_once(
                [rows[i] + new[i] for i in active],
                sampling,
                adapter,
                None if seeds is None else [seeds[i] for i in active],
                size,
                produced,
            )
            for i, out in zip(active, outs):
                new[i] += out
            active = [i for i in active if not self._finished(new[i], sampling.stop)]
            produced, wave = produced + size, wave * 2
        return [self._completion(r, n, sampling.stop) for r, n in zip(rows, new)]

    def _finished(self, new: list[int], stop: Sequence[str]) -> bool:
        """Whether generation of a row has ended (an end-of-turn token or a stop string)."""
        return any(t in self.eos_token_ids for t in new) or (bool(stop) and cut_at_stop(self._decode(new), stop)[1])

    @torch.inference_mode()
    def _generate_once(
        self,
        rows: list[list[int]],
        sampling: SamplingParams,
        adapter: str | None,
        seeds: list[int] | None,
        max_new_tokens: int,
        start_step: int,
    ) -> list[list[int]]:
        """One ``generate`` call: each row's new tokens (padding after its end included)."""
        width = max(map(len, rows))
        ids = torch.tensor([[self.pad_token_id] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            stop_strings=list(sampling.stop) or None,
            cache_implementation="static" if self.kv_cache == "static" else None,
            **(
                dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
                if sampling.temperature > 0 and seeds is None
                else dict(do_sample=False)
            ),
        )
        processors = LogitsProcessorList()
        if sampling.temperature > 0 and seeds is not None:
            processors.append(PerRowSampler(seeds, sampling.temperature, sampling.top_p, start_step))
        with self._using(adapter):
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                tokenizer=self.tokenizer,
                logits_processor=processors,
            )
        return out[:, width:].tolist()

    def _using(self, adapter: str | None) -> ContextManager[None]:
        """A context that runs the model under ``adapter``, or with all adapters off for None."""
        if not isinstance(self.model, PeftModel):
            return nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return nullcontext()

    def _completion(self, prompt: list[int], new: list[int], stop: Sequence[str]) -> Completion:
        """Trim padding after the end-of-turn token, and everything after a stop string."""
        end = next((i + 1 for i, t in enumerate(new) if t in self.eos_token_ids), None)
        new = new[:end] if end else new
        text, stopped = cut_at_stop(self._decode(new), stop)
        if stopped:  # keep the tokens up to the one that completed the stop string
            new = next(new[:k] for k in range(1, len(new) + 1) if cut_at_stop(self._decode(new[:k]), stop)[1])
        return Completion(text, tuple(new), tuple(prompt), "stop" if end or stopped else "length")

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
