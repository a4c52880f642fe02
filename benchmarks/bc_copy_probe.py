"""How fast does a tiny model learn the seed dialogues' messages? (behaviour-cloning probe)

    python benchmarks/bc_copy_probe.py --steps 2500 [--vocab 768 --layers 2 --weights '{...}' --reply-lookup]

Builds the tiny model, plays ``--episodes`` dialogues of the cost-blind seed mixture
(compact prompt, scripted user), trains on them (batch 32, AdamW, warm-up then linear
decay) and every ``--eval-every`` steps prints, on 512 held-out dialogues, the share of
assistant messages whose every token is the model's argmax under teacher forcing (the
first turn's move tag excluded: the seed picks it at random), per first move and for the
answer after a clarification ("after_<n>_meanings": the user chose one of n). Writes
benchmarks/results/<--out> (default bc_copy_probe.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.llm_assistant import LLMAssistant
from agents.scripted_user import ScriptedUser
from agents.tiny_model import build_tiny_model
from trainers.models import tiny_corpus
from trainers.rest import SeedPolicy
from trainers.rollout import RolloutEngine
from trainers.sft import IGNORE, _collate, _collate_packed, _label_tokens, _token_loss_sum, build_sft_examples

RESULTS = Path(__file__).parent / "results"


def dialogues(weights: dict, n: int, seed: int, reply_lookup: bool = False):
    policy = SeedPolicy(weights, LLMAssistant(None, prompt_style="compact", reply_lookup=reply_lookup), seed)
    engine = RolloutEngine({"source": "synthetic", "costs": "default:train", "max_questions": 1}, policy,
                           ScriptedUser(), num_envs=256, samples_per_group=1, seed=seed, policy_name="seed")
    return engine.run(n, None, progress=False)


@torch.no_grad()
def exact_messages(model, examples, episodes, pad: int) -> dict[str, float]:
    """Share of assistant messages predicted exactly under teacher forcing, by kind."""
    model.eval()
    hits: dict[str, list[bool]] = {}
    for i in range(0, len(examples), 128):
        batch = _collate(examples[i:i + 128], pad, torch.device("cpu"))
        pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].argmax(-1)
        target = batch["labels"][:, 1:]
        for b, episode in enumerate(episodes[i:i + 128]):
            spans: list[list[int]] = []
            for j in (target[b] != IGNORE).nonzero().flatten().tolist():
                if spans and j == spans[-1][-1] + 1:
                    spans[-1].append(j)
                else:
                    spans.append([j])
            for k, span in enumerate(spans):
                # the answer after a clarification, by the number of meanings it chooses among
                after = f"after_{episode.chat[0]['content'].count('%')}_meanings"
                kind, span = (episode.moves[0], span[2:]) if k == 0 else (after, span)
                hits.setdefault(kind, []).append(bool((pred[b, span] == target[b, span]).all()))
    model.train()
    return {k: round(float(np.mean(v)), 3) for k, v in sorted(hits.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=768)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--episodes", type=int, default=48000)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weights", default='{"ANSWER": 1, "MULTI": 1, "CLARIFY": 1}')
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reply-lookup", action="store_true", help="the compact prompt's reply_lookup (llm_assistant)")
    p.add_argument("--out", default="bc_copy_probe.json", help="file name under benchmarks/results/")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    weights = json.loads(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(tmp, tiny_corpus(seed=args.seed), vocab_size=args.vocab, hidden_size=args.hidden,
                                num_layers=args.layers, num_heads=4, intermediate_size=3 * args.hidden, seed=args.seed)
        tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    train_episodes, test_episodes = (
        dialogues(weights, args.episodes, 1, args.reply_lookup), dialogues(weights, 512, 999, args.reply_lookup))
    train = build_sft_examples(train_episodes, tokenizer, 512)
    test = build_sft_examples(test_episodes, tokenizer, 512)
    pad = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * max(0.05, 1 - s / args.steps))
    rng = np.random.default_rng(args.seed)
    order, position, rows, started = rng.permutation(len(train)), 0, [], time.time()
    for step in range(1, args.steps + 1):
        if position + 32 > len(order):
            order, position = rng.permutation(len(train)), 0
        chosen = [train[j] for j in order[position:position + 32]]
        position += 32
        # padding-free (sft.packing): the same loss as a padded batch, 1.4x faster (cpu_speedups.py)
        batch = _collate_packed(chosen, pad, 512, torch.device("cpu"))
        loss = _token_loss_sum(model, batch) / sum(_label_tokens(e) for e in chosen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0:
            row = {"step": step, "seconds": round(time.time() - started), "loss": round(loss.item(), 4),
                   **exact_messages(model, test, test_episodes, pad)}
            rows.append(row)
            print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
