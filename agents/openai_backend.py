"""Generation on OpenAI-compatible servers: `vllm serve` (one or a fleet), llama.cpp, hosted APIs.

Two request kinds:

- with a local ``tokenizer``, prompts are rendered here exactly as the local backends render
  them (``render_prefixed``: chat template, forced openings) and sent to ``/v1/completions`` as
  token ids; the server returns the generated token ids (vLLM's ``return_token_ids``). The same
  model on a vLLM server then gives the in-process ``VLLMBackend``'s tokens;
- without one, conversations go to ``/v1/chat/completions`` and the server applies its own chat
  template (any hosted API). Forced openings then need a server that continues a final assistant
  message (vLLM's ``continue_final_message``).

Requests run concurrently (at most ``max_concurrency``), spread round-robin over ``base_urls``;
the openai client retries connection errors, rate limits (429) and server errors (5xx) with
exponential backoff (``max_retries``). Per-conversation seeds go in each request's ``seed``.
Responses are cached on disk keyed by the full request (``ResponseCache``), so a re-run or a
resumed evaluation sends nothing it already sent; unseeded sampled requests are never cached.
LoRA adapters are loaded into the servers at run time (``/v1/load_lora_adapter``; the servers
need ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` and ``--enable-lora``) under a name that carries a
digest of the adapter's weights, so a changed adapter never reuses another's prefix cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from agents.generation import Completion, Conversation, GenerationBackend, SamplingParams, cut_at_stop


class ServerError(RuntimeError):
    """A server cannot be reached, does not serve the model, or refused a request (one line)."""


@dataclass(frozen=True)
class Prices:
    """Money per 1,000 tokens (prompt and completion), for the cost column of an evaluation."""

    prompt_per_1k: float = 0.0
    completion_per_1k: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens / 1000 * self.prompt_per_1k + completion_tokens / 1000 * self.completion_per_1k


class ResponseCache:
    """Responses by request digest in one SQLite file (safe across threads and killed runs)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    @staticmethod
    def key(kind: str, body: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps([kind, body], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()

    def close(self) -> None:
        self._db.close()


def adapter_digest(path: str | Path) -> str:
    """A short digest of an adapter's weights and config (its version)."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        file = Path(path) / name
        if file.is_file():
            h.update(file.read_bytes())
    return h.hexdigest()[:10]


class OpenAIBackend(GenerationBackend):
    """Completions from OpenAI-compatible servers (see the module docstring).

    Args:
        model: the model's name on the servers.
        base_urls: one or more ``http://host:port/v1`` endpoints serving it.
        tokenizer: a local tokenizer (path or hub id) for token-id prompts; None: chat requests.
        api_key_env: the environment variable holding the API key ("EMPTY" when unset, as vLLM takes).
        max_concurrency, max_retries, timeout: requests in flight, retries per request, seconds per try.
        cache_path: the response cache's SQLite file (None: no cache).
        prices: money per 1k tokens, counted in ``usage``.
        chat_template_kwargs: to the chat template (locally with a tokenizer, else sent to vLLM).
    """

    def __init__(
        self,
        model: str,
        base_urls: str | Sequence[str],
        tokenizer: str | Path | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 6,
        timeout: float = 120.0,
        cache_path: str | Path | None = None,
        prices: Prices = Prices(),
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        from openai import OpenAI

        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("OpenAIBackend needs at least one base URL")
        self.model, self.base_urls, self.prices = model, [u.rstrip("/") for u in urls], prices
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        key = os.environ.get(api_key_env) or "EMPTY"
        self.clients = [
            OpenAI(base_url=u, api_key=key, max_retries=max_retries, timeout=timeout) for u in self.base_urls
        ]
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        if tokenizer is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        else:
            self.tokenizer = None
        self.cache = ResponseCache(cache_path) if cache_path is not None else None
        self.adapters: dict[str, str] = {}  # name -> the versioned name it is loaded under
        self._counts_lock = threading.Lock()

    # --- adapters ---------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load the adapter in ``path`` into every server as ``<name>-<digest of its weights>``."""
        versioned = f"{name}-{adapter_digest(path)}"
        body = {"lora_name": versioned, "lora_path": str(Path(path).resolve())}
        for url, client in zip(self.base_urls, self.clients):
            try:
                client.post("/load_lora_adapter", body=body, cast_to=str)
            except Exception as e:  # openai's APIStatusError, APIConnectionError
                if "already been loaded" in str(e):
                    continue
                raise ServerError(
                    f"{url} did not load the adapter {path} ({_reason(e)}); start the server with "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 and --enable-lora, on a machine that can "
                    "read the adapter's path"
                ) from None
        self.adapters[name] = versioned

    # --- generation -------------------------------------------------------------------------------
    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: str | None = None,
        seeds: Sequence[int] | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        """See ``GenerationBackend.generate`` (one request per conversation, ``sampling.n`` choices each)."""
        self.check_request(conversations, adapter, seeds, prefixes)
        model = self.model if adapter is None else self.adapters[adapter]
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(conversations)
        prefixes = list(prefixes) if prefixes is not None else [""] * len(conversations)
        if self.tokenizer is not None:
            prompts, heads = self.render_prefixed(conversations, prefixes)
            jobs = [
                (i, "completions", self._completion_body(model, p, sampling, s))
                for i, (p, s) in enumerate(zip(prompts, seeds))
            ]
        else:
            prompts, heads = [[] for _ in conversations], [[] for _ in conversations]
            jobs = [
                (i, "chat", self._chat_body(model, c, sampling, s, f))
                for i, (c, s, f) in enumerate(zip(conversations, seeds, prefixes))
            ]
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(jobs)))) as pool:
            responses = list(pool.map(lambda job: self._request(*job, cacheable=_cacheable(sampling, job[2])), jobs))
        return [
            [self._completion(choice, prompt, head, prefix, sampling) for choice in response["choices"]]
            for response, prompt, head, prefix in zip(responses, prompts, heads, prefixes)
        ]

    @staticmethod
    def _body(model: str, sampling: SamplingParams, seed: int | None, **fields: Any) -> dict:
        """A request body: the model, ``fields`` (the prompt or messages, ``extra_body``), the sampling."""
        return {
            "model": model,
            **fields,
            "max_tokens": sampling.max_new_tokens,
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": seed,
            "stop": list(sampling.stop) or None,
        }

    def _completion_body(self, model: str, prompt: list[int], sampling: SamplingParams, seed: int | None) -> dict:
        return self._body(model, sampling, seed, prompt=prompt, extra_body={"return_token_ids": True})

    def _chat_body(
        self, model: str, conversation: Conversation, sampling: SamplingParams, seed: int | None, prefix: str
    ) -> dict:
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
        extra: dict[str, Any] = {"chat_template_kwargs": self.chat_template_kwargs} if self.chat_template_kwargs else {}
        if prefix:  # vLLM continues a final assistant message
            messages.append({"role": "assistant", "content": prefix})
            extra.update(continue_final_message=True, add_generation_prompt=False)
        return self._body(model, sampling, seed, messages=messages, extra_body=extra or None)

    def _request(self, index: int, kind: str, body: dict, cacheable: bool) -> dict:
        """One request's response as a plain dict (from the cache where it is there)."""
        key = ResponseCache.key(kind, body) if self.cache is not None and cacheable else None
        if key is not None and (cached := self.cache.get(key)) is not None:
            self._count(cached, sent=False)
            return cached
        url, client = self.base_urls[index % len(self.base_urls)], self.clients[index % len(self.clients)]
        call = client.completions.create if kind == "completions" else client.chat.completions.create
        try:
            response = call(**{k: v for k, v in body.items() if v is not None}).model_dump()
        except Exception as e:
            raise self._server_error(e, url, body["model"]) from None
        if key is not None:
            self.cache.put(key, response)
        self._count(response, sent=True)
        return response

    def _count(self, response: Mapping[str, Any], sent: bool) -> None:
        usage = response.get("usage") or {}
        with self._counts_lock:
            self.usage.add(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                requests=int(sent),
                cached=int(not sent),
                cost=self.prices.cost(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
                if sent
                else 0.0,
            )

    def _completion(
        self, choice: Mapping[str, Any], prompt: list[int], head: list[int], prefix: str, sampling: SamplingParams
    ) -> Completion:
        text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content") or ""
        token_ids = tuple(choice.get("token_ids") or ())
        finish = "stop" if choice.get("finish_reason") == "stop" else "length"
        if self.tokenizer is not None:
            return self.prefixed(Completion(text, token_ids, tuple(prompt), finish), head, sampling.stop)
        body, _ = cut_at_stop(text, sampling.stop)  # a server may return the stop string
        return Completion(prefix + body, token_ids, (), finish)

    def _server_error(self, error: Exception, url: str, model: str) -> ServerError:
        import openai

        if isinstance(error, openai.APIConnectionError):
            return ServerError(
                f"cannot reach {url} ({_reason(error)}) after {self.max_retries} retries: is the server "
                "running, and is the URL right (it ends in /v1)?"
            )
        if isinstance(error, openai.NotFoundError):
            return ServerError(f"{url} does not serve the model {model!r} (it serves: {self._served(url)})")
        if isinstance(error, openai.AuthenticationError):
            return ServerError(
                f"{url} refused the API key ({_reason(error)}): set it in the environment variable the "
                "config names (model.openai.api_key_env)"
            )
        return ServerError(f"{url} failed the request for {model!r}: {_reason(error)}")

    def _served(self, url: str) -> str:
        try:
            client = self.clients[self.base_urls.index(url)]
            return ", ".join(m.id for m in client.models.list().data) or "nothing"
        except Exception:  # the listing is a courtesy
            return "unknown"

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        for client in self.clients:
            client.close()


def _reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return " ".join(message.split())[:300]


def _cacheable(sampling: SamplingParams, body: Mapping[str, Any]) -> bool:
    """A request's response can be replayed: greedy, or sampled with a seed (the same sample again)."""
    return sampling.temperature == 0 or body.get("seed") is not None
