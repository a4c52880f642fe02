"""``clarify sft CONFIG --episodes FILE... --out DIR``: fine-tune on episode files."""

from __future__ import annotations

import argparse

from trainers.config_loading import add_config_arguments, config_from_args


def _run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from agents.model_fetch import resolve_model
    from trainers.episodes import read_episodes
    from trainers.sft import build_sft_examples, train_sft

    config = config_from_args(args)
    model = resolve_model(args.model or config.model.name)
    episodes = [e for path in args.episodes for e in read_episodes(path)]
    if not episodes:
        raise ValueError(f"no episodes in {', '.join(args.episodes)}")
    tokenizer = AutoTokenizer.from_pretrained(model)
    examples = build_sft_examples(
        episodes, tokenizer, config.sft.max_length, config.model.chat_template_kwargs, None, config.sft.followup_weight
    )
    train_sft(model, examples, args.out, config.sft, resume=args.resume, init_adapter=args.init_adapter)
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="fine-tune on episodes (loss on the assistant's turns); several processes via "
        "`accelerate launch --multi_gpu --num_processes N -m trainers.cli sft ...`",
    )
    add_config_arguments(p)
    p.add_argument("--episodes", nargs="+", required=True, help="episode JSONL files to train on")
    p.add_argument("--out", required=True, help="where the adapter or checkpoint goes")
    p.add_argument("--model", default=None, help="base model dir or known name (default: the config's model.name)")
    p.add_argument("--init-adapter", default=None, help="continue training this LoRA adapter")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.set_defaults(func=_run)
