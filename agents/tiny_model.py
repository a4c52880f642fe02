"""A tiny Llama chat model with its own BPE tokenizer, for fast tests and CPU experiments.

The checkpoint is a normal Hugging Face directory: ``AutoModelForCausalLM``,
``AutoTokenizer``, peft and vLLM load it like any hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROLES = ("system", "user", "assistant")
END, PAD = "<|end|>", "<|pad|>"
SPECIAL_TOKENS = [PAD, END, *(f"<|{r}|>" for r in ROLES)]
# <|role|>content<|end|> per message; the assistant's turn ends with <|end|> (the eos token).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus``, with every digit its own token."""
    tok = Tokenizer(models.BPE())
    # Digits are split off before byte-level BPE so that merges never glue digits: prices stay legible.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=PAD, padding_side="left")
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_tiny_model(
    out_dir: str | Path,
    corpus: Iterable[str],
    vocab_size: int = 4096,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 768,
    max_position_embeddings: int = 2048,
    initializer_range: float = 0.02,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on ``corpus``, build a randomly initialised Llama, save both to ``out_dir``.

    The defaults give about 4M parameters (input and output embeddings tied). The
    weights depend only on ``seed``, the shapes and ``initializer_range`` (the init's std:
    0.02 suits training; around 0.1 makes the untrained model's outputs varied, handy in tests).
    """
    out = Path(out_dir)
    tokenizer = train_tokenizer(corpus, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
