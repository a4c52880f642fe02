"""SFT on episodes: label masking, LoRA and full fine-tuning, kill/resume, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents import OraclePolicy, ScriptedUser
from agents.llm_assistant import compact_system
from agents.tiny_model import build_tiny_model
from clarify_env.costs import Costs
from helpers import NO_SYSTEM_TEMPLATE, THINKING_TEMPLATE, defaults_config
from trainers.config import SFTConfig
from trainers.rollout import RolloutEngine
from trainers.sft import IGNORE, METRICS_FILE, build_sft_examples, collate, pack_rows, train_sft
from trainers.sft.checkpoints import CheckpointError, latest_checkpoint
from trainers.sft.examples import example_weights, label_weights
from trainers.sft.losses import (
    PackingUnsupported,
    check_packing,
    label_token_loss_sum,
    supports_label_positions,
    token_loss_sum,
    token_losses,
)

CPU = torch.device("cpu")


def weight_sum(example, move_tag_weight):
    return sum(example_weights(example, move_tag_weight)[1:])


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def cpu_only():
    """On the CPU (where training is deterministic), and no bf16 unless asked for, whatever the machine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        patch.setattr("trainers.sft.loop.native_bf16", lambda device: False)
        yield


class CompactOracle(OraclePolicy):
    """The oracle, recorded in the tiny model's compact prompt format."""

    def conversation(self, observation):
        system = compact_system(Costs.from_array(observation["costs"]), observation["context"])
        return [{"role": "system", "content": system}, *(dict(m) for m in observation["messages"])]


@pytest.fixture(scope="module")
def episodes():
    engine = RolloutEngine(
        {"source": "synthetic"}, CompactOracle(), ScriptedUser(), num_envs=16, samples_per_group=1, seed=3
    )
    return engine.run(24, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, episodes):
    corpus = [m["content"] for e in episodes for m in e.chat]
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny"),
        corpus,
        vocab_size=400,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
    )


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny)


@pytest.fixture(scope="module")
def examples(episodes, tokenizer):
    return build_sft_examples(episodes, tokenizer, max_length=512)


def labelled_runs(example, tokenizer):
    """The decoded text of each contiguous run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return [tokenizer.decode(r) for r in runs + ([current] if current else [])]


NEWLINE_TEMPLATE = (  # ChatML-like: a newline after each end-of-turn token, which stays unlabelled
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.mark.parametrize("template", [None, NEWLINE_TEMPLATE], ids=["tiny", "newline"])
def test_labels_are_exactly_the_assistant_turns_with_their_end_token(episodes, tiny, template):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    if template:
        tokenizer.chat_template = template
    examples = build_sft_examples(episodes, tokenizer, max_length=512)
    assert any(len(e.moves) == 2 for e in episodes)  # a CLARIFY dialogue has two assistant turns
    for episode, example in zip(episodes, examples):
        wanted = [m["content"] + "<|end|>" for m in episode.chat if m["role"] == "assistant"]
        assert labelled_runs(example, tokenizer) == wanted
        assert (
            example.input_ids
            == tokenizer(tokenizer.apply_chat_template(episode.chat, tokenize=False), add_special_tokens=False)[
                "input_ids"
            ]
        )


def test_a_template_without_system_role_trains_on_the_system_text_in_the_first_user_turn(episodes, tiny):
    from agents.generation import render_chat

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    assert episodes[0].chat[0]["role"] == "system"
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template(episodes[0].chat, tokenize=False)
    for episode, example in zip(episodes, build_sft_examples(episodes, tokenizer, max_length=512)):
        system, user = episode.chat[0]["content"], episode.chat[1]["content"]
        text = tokenizer.decode(example.input_ids)
        assert text.startswith(f"<|user|>{system}\n\n{user}<|end|>") and "<|system|>" not in text
        assert text == render_chat(tokenizer, episode.chat)
        assert labelled_runs(example, tokenizer) == [
            m["content"] + "<|end|>" for m in episode.chat if m["role"] == "assistant"
        ]


def test_the_gemma_template_of_the_fetched_base_model_trains_on_model_turns_with_their_end_of_turn(episodes, tiny):
    """gemma3-270m's GGUF has no chat template; fetch_model gives it Gemma's turn format (system
    text in the first user turn), and SFT labels each model turn through <end_of_turn>."""
    from agents.generation import render_chat
    from agents.model_fetch import GEMMA_CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.add_special_tokens(
        {"bos_token": "<bos>", "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}
    )
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    for episode, example in zip(episodes, build_sft_examples(episodes, tokenizer, max_length=512)):
        system, user = episode.chat[0]["content"], episode.chat[1]["content"]
        text = tokenizer.decode(example.input_ids)
        assert text == render_chat(tokenizer, episode.chat)
        assert text.startswith(f"<bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n")
        assert text.count("<bos>") == 1 and "<start_of_turn>assistant" not in text
        assert labelled_runs(example, tokenizer) == [
            m["content"] + "<end_of_turn>" for m in episode.chat if m["role"] == "assistant"
        ]


def test_a_template_that_rewrites_past_turns_trains_each_turn_on_its_own_prompt(episodes, tiny):
    from agents.generation import render_chat

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.chat_template = THINKING_TEMPLATE
    quiet = {"enable_thinking": False}
    examples = {e.episode_id: e for e in build_sft_examples(episodes, tokenizer, max_length=512, template_kwargs=quiet)}
    assert any(len(e.moves) == 2 for e in episodes)
    for episode in episodes:
        turns = [i for i, m in enumerate(episode.chat) if m["role"] == "assistant"]
        # one turn: the whole chat (its prompt is a prefix); two: one example per turn
        names = [episode.episode_id] if len(turns) == 1 else [f"{episode.episode_id}/turn-{k + 1}" for k in range(2)]
        for name, i in zip(names, turns):
            example = examples[name]
            prompt = render_chat(tokenizer, episode.chat[:i], True, quiet)
            assert prompt.endswith("<|assistant|><think></think>")
            assert tokenizer.decode(example.input_ids) == prompt + episode.chat[i]["content"] + "<|end|>"
            assert labelled_runs(example, tokenizer) == [episode.chat[i]["content"] + "<|end|>"]
    assert len(examples) == sum(len(e.moves) for e in episodes)


def test_worked_example_turns_get_no_labels(episodes, tokenizer):
    from dataclasses import replace

    from agents.llm_assistant import LLMAssistant

    prompt = LLMAssistant(None, prompt_style="compact", few_shot=2, few_shot_format="turns")
    env_obs = {
        "system": "",
        "context": "",
        "costs": [0.1, 0.01],
        "questions_asked": 0,
        "messages": [{"role": "user", "content": "Who won?"}],
        "query": "Who won?",
    }
    chat = [*prompt.conversation(env_obs), {"role": "assistant", "content": "ANSWER: Ron"}]
    assert sum(1 for m in chat if m["role"] == "assistant" and m.get("example")) >= 2
    example = build_sft_examples([replace(episodes[0], chat=chat)], tokenizer, max_length=4096)[0]
    assert labelled_runs(example, tokenizer) == ["ANSWER: Ron<|end|>"]


def test_overlong_episodes_are_dropped_and_none_left_is_an_error(episodes, tokenizer, examples):
    lengths = sorted(len(e.input_ids) for e in examples)
    cut = lengths[len(lengths) // 2]
    kept = build_sft_examples(episodes, tokenizer, max_length=cut)
    assert 0 < len(kept) < len(episodes) and all(len(e.input_ids) <= cut for e in kept)
    with pytest.raises(ValueError, match="max_length"):
        build_sft_examples(episodes, tokenizer, max_length=lengths[0] - 1)


def test_lora_training_lowers_the_loss_and_saves_a_loadable_adapter(tiny, examples, tmp_path):
    from peft import PeftModel

    config = SFTConfig(
        lora=True,
        lora_rank=8,
        lora_alpha=16,
        learning_rate=1e-2,
        epochs=10,
        batch_size=1,
        warmup_ratio=0.0,
        logging_steps=4,
    )
    result = train_sft(tiny, examples[:4], tmp_path / "adapter", config)
    curve = [r["loss"] for r in result.metrics["loss_curve"]]
    assert curve[-1] < curve[0] - 0.1
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "adapter" / METRICS_FILE).read_text())["completed"]
    base = AutoModelForCausalLM.from_pretrained(tiny)
    batch = torch.tensor([examples[0].input_ids])
    before = base(batch).logits
    tuned = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert not torch.allclose(tuned(batch).logits, before)
    assert not (tmp_path / "adapter" / "checkpoints").exists()
    frozen = SFTConfig(lora=True, learning_rate=0.0, epochs=1, batch_size=4)  # continue the adapter, changing nothing
    train_sft(tiny, examples[:4], tmp_path / "continued", frozen, init_adapter=tmp_path / "adapter")
    before, after = weights(tmp_path / "adapter"), weights(tmp_path / "continued")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_gradient_checkpointing_changes_nothing_but_memory(tiny, examples, tmp_path):
    losses = []
    for checkpointing in (False, True):
        config = SFTConfig(
            lora_rank=4, lora_dropout=0.0, epochs=2, batch_size=4, logging_steps=1, gradient_checkpointing=checkpointing
        )
        losses.append(
            [
                r["loss"]
                for r in train_sft(tiny, examples[:4], tmp_path / str(checkpointing), config).metrics["loss_curve"]
            ]
        )
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_pack_rows_fills_rows_first_fit_decreasing_and_places_every_item_once():
    lengths = [int(x) for x in torch.randint(5, 120, (200,), generator=torch.Generator().manual_seed(1))]
    rows = pack_rows(lengths, 256)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 256 for row in rows)
    assert len(rows) <= -(-sum(lengths) // 256) + 1  # at most one row more than the tokens need
    assert pack_rows([300, 10], 256) == [[0], [1]]  # an overlong item gets its own row


def test_packed_batch_gives_the_padded_loss_and_gradients_with_no_pad_tokens(tiny, examples):
    model = AutoModelForCausalLM.from_pretrained(tiny)
    batch = list(examples[:12])
    padded, packed = collate(batch, 0, CPU), collate(batch, 0, CPU, packing=True, capacity=256)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert (packed["labels"] != IGNORE).sum() == sum(sum(1 for x in e.labels[1:] if x != IGNORE) for e in batch)
    grads = []
    for b in (padded, packed):
        model.zero_grad()
        loss = token_loss_sum(model, b)
        loss.backward()
        grads.append((loss.item(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-4)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-3, atol=1e-6)
    check_packing(model, batch, 0, 256, CPU)  # passes on a model that honours position_ids

    # a model whose attention ignores position_ids (tokens attend across packed examples) is refused
    original = model.model.forward

    def ignore_positions(*args, position_ids=None, **kwargs):
        return original(*args, **kwargs)

    model.model.forward = ignore_positions
    with pytest.raises(PackingUnsupported, match="sft.packing=false"):
        check_packing(model, batch, 0, 256, CPU)

    # bf16 weights (LoRA's frozen base when training in bf16): checked in float32, then restored exactly
    model.to(torch.bfloat16)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PackingUnsupported, match="sft.packing=false"):
        check_packing(model, batch, 0, 256, CPU)
    model.model.forward = original
    check_packing(model, batch, 0, 256, CPU)
    assert all(v.dtype == torch.bfloat16 and torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_each_examples_losses_are_the_same_with_the_output_layer_at_label_positions_only(tiny, examples, monkeypatch):
    """``losses_by_example`` (the packing check's losses) runs the output layer at the label positions
    only, which a 262k-word vocabulary needs, and gives the full forward's losses, padded and packed."""
    import trainers.sft.losses as losses

    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    batch = list(examples[:8])
    layouts = [
        collate(batch, 0, CPU, with_owner=True),
        collate(batch, 0, CPU, packing=True, capacity=256, with_owner=True),
    ]
    with torch.no_grad():
        labelled = [losses.losses_by_example(model, b, len(batch)) for b in layouts]
        monkeypatch.setattr(losses, "supports_label_positions", lambda model: False)
        full = [losses.losses_by_example(model, b, len(batch)) for b in layouts]
    for a, b in zip(labelled, full):
        assert [len(x) for x in a] == [sum(1 for y in e.labels[1:] if y != IGNORE) for e in batch]
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))


def test_the_output_layer_at_label_positions_only_gives_the_full_loss_and_gradients(tiny, examples, tmp_path):
    """The label-only output layer (the prompt's logits never made) is exact for full fine-tuning
    and LoRA, is not used for a model that changes its logits after the output layer, and training
    with it follows the curve of the full forward (sft.label_positions_only)."""
    from peft import LoraConfig, get_peft_model

    batch = collate(list(examples[:12]), 0, CPU, packing=True, capacity=256)
    full_model = AutoModelForCausalLM.from_pretrained(tiny)
    lora_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    for model in (full_model, lora_model):
        assert supports_label_positions(model)
        results = []
        for loss_sum in (token_loss_sum, label_token_loss_sum):
            model.zero_grad()
            loss = loss_sum(model, batch)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            results.append((loss.item(), grads))
        assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
        for name, grad in results[0][1].items():
            # summation order differs between the two paths (and between CPUs): tolerance on the gradient's scale
            assert torch.allclose(results[1][1][name], grad, rtol=1e-4, atol=1e-6 * grad.abs().max().item()), name

    softcapped = AutoModelForCausalLM.from_pretrained(tiny)
    softcapped.config.final_logit_softcapping = 30.0  # Gemma-2: logits changed after the output layer
    assert not supports_label_positions(softcapped)

    curves = {}
    for only in (True, False):
        config = SFTConfig(
            lora=False,
            learning_rate=1e-3,
            epochs=2,
            batch_size=8,
            logging_steps=1,
            packing=True,
            label_positions_only=only,
        )
        result = train_sft(tiny, examples[:16], tmp_path / str(only), config)
        assert result.metrics["label_positions_only"] is only
        curves[only] = [r["loss"] for r in result.metrics["loss_curve"]]
    assert len(curves[False]) == 4
    assert curves[True] == pytest.approx(curves[False], rel=1e-4)


def test_move_tag_weight_scales_the_loss_of_each_assistant_turns_first_token(tiny, examples):
    """sft.move_tag_weight: the move tag opening each assistant turn weighs w, the turn's other
    tokens 1, the prompt 0 -- the same in padded and packed batches and on both output paths."""
    assert label_weights([IGNORE, IGNORE, 7, 8, 9, IGNORE, 4, 5], 3.0) == [0, 0, 3, 1, 1, 0, 3, 1]
    # an episode with a clarification: two assistant turns, each opening with its move tag
    two_turns = next(
        e for e in examples if sum(1 for i, x in enumerate(e.labels) if x != IGNORE and e.labels[i - 1] == IGNORE) == 2
    )
    starts = [i for i, x in enumerate(two_turns.labels) if x != IGNORE and two_turns.labels[i - 1] == IGNORE]
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert [tokenizer.decode([two_turns.input_ids[i]]).strip() for i in starts][:1] == ["CLARIFY"]
    assert weight_sum(two_turns, 3.0) == pytest.approx(weight_sum(two_turns, 1.0) + 2 * 2.0)

    model = AutoModelForCausalLM.from_pretrained(tiny)
    batch = list(examples[:12])
    with torch.no_grad():
        plain = collate(batch, 0, CPU)
        weighted = collate(batch, 0, CPU, move_tag_weight=3.0)
        by_hand = (
            token_losses(model, plain) * torch.tensor([label_weights(row, 3.0)[1:] for row in plain["labels"].tolist()])
        ).sum()
        packed = collate(batch, 0, CPU, packing=True, capacity=256, move_tag_weight=3.0)
        losses = [token_loss_sum(model, weighted), token_loss_sum(model, packed), label_token_loss_sum(model, packed)]
        unweighted = token_loss_sum(model, plain)
    assert losses[0] > unweighted
    for loss in losses:
        assert loss.item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_a_move_weight_replaces_the_first_move_tags_weight_only(tiny, examples):
    """SFTExample.move_weight (replayed dialogues: 0): the first assistant turn's move tag weighs
    move_weight, every later turn's tag still move_tag_weight; padded and packed alike."""
    from dataclasses import replace

    assert label_weights([IGNORE, IGNORE, 7, 8, IGNORE, 4, 5], 3.0, 0.0) == [0, 0, 0, 1, 0, 3, 1]
    assert label_weights([IGNORE, 7, 8], 3.0, 0.5) == [0, 0.5, 1]
    two_turns = next(
        e for e in examples if sum(1 for i, x in enumerate(e.labels) if x != IGNORE and e.labels[i - 1] == IGNORE) == 2
    )
    untaught = replace(two_turns, move_weight=0.0)
    assert weight_sum(untaught, 3.0) == pytest.approx(weight_sum(two_turns, 3.0) - 3.0)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    batch = [replace(e, move_weight=0.0) if k % 2 else e for k, e in enumerate(examples[:12])]
    expected = [label_weights(e.labels, 3.0, e.move_weight) for e in batch]
    with torch.no_grad():
        padded = collate(batch, 0, CPU, move_tag_weight=3.0)
        width = padded["labels"].shape[1]
        by_hand = (
            token_losses(model, padded) * torch.tensor([(w + [0.0] * (width - len(w)))[1:] for w in expected])
        ).sum()
        packed = collate(batch, 0, CPU, packing=True, capacity=256, move_tag_weight=3.0)
        assert token_loss_sum(model, padded).item() == pytest.approx(by_hand.item(), rel=1e-4)
        assert token_loss_sum(model, packed).item() == pytest.approx(by_hand.item(), rel=1e-4)
        # With move_tag_weight 1, a move weight alone still makes the batch weighted.
        alone = collate([batch[1]], 0, CPU)
        assert "weights" in alone and alone["weights"].tolist()[0] == label_weights(batch[1].labels, 1.0, 0.0)


def test_build_sft_examples_sets_move_weights_per_episode(episodes, tokenizer):
    episodes = episodes[:6]
    built = build_sft_examples(episodes, tokenizer, 512, move_weights=[0.0, None, 2.0, None, None, 0.0])
    assert [e.move_weight for e in built] == [0.0, None, 2.0, None, None, 0.0]
    with pytest.raises(ValueError, match="move_weights: 2 for 6 episodes"):
        build_sft_examples(episodes, tokenizer, 512, move_weights=[0.0, None])


def test_packed_training_follows_the_padded_loss_curve(tiny, examples, tmp_path):
    curves = []
    for packing in (False, True):
        config = SFTConfig(lora=False, learning_rate=1e-3, epochs=2, batch_size=8, logging_steps=1, packing=packing)
        curves.append(
            [r["loss"] for r in train_sft(tiny, examples[:16], tmp_path / str(packing), config).metrics["loss_curve"]]
        )
    assert len(curves[0]) == 4
    assert curves[1] == pytest.approx(curves[0], rel=1e-3)


def test_bf16_mixed_precision_on_the_cpu_packs_and_follows_the_float32_curve(tiny, examples, tmp_path):
    """bf16 autocast (sft.bf16=true, also on a CPU): the packing check runs in float32 before
    the forward is cast (bf16 rounding would otherwise look like a leak), the loss follows the
    float32 curve, and the saved weights stay float32."""
    curves = []
    for bf16 in (False, True):
        config = SFTConfig(
            lora=False, learning_rate=1e-3, epochs=2, batch_size=8, logging_steps=1, packing=True, bf16=bf16
        )
        result = train_sft(tiny, examples[:16], tmp_path / str(bf16), config)
        assert result.metrics["bf16"] is bf16
        curves.append([r["loss"] for r in result.metrics["loss_curve"]])
    assert curves[1] != curves[0]  # the forward did run in bf16
    assert curves[1] == pytest.approx(curves[0], rel=2e-2)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "True").dtype == torch.float32


def test_full_finetuning_saves_a_loadable_checkpoint(tiny, examples, tmp_path):
    config = SFTConfig(lora=False, learning_rate=3e-3, epochs=4, batch_size=8, warmup_ratio=0.0, logging_steps=2)
    result = train_sft(tiny, examples[:8], tmp_path / "full", config)
    curve = [r["loss"] for r in result.metrics["loss_curve"]]
    assert curve[-1] < curve[0]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    base = AutoModelForCausalLM.from_pretrained(tiny)
    assert not torch.equal(model.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert AutoTokenizer.from_pretrained(tmp_path / "full").chat_template


def weights(path):
    from safetensors.torch import load_file

    return load_file(next(Path(path).glob("*.safetensors")))


def test_resume_after_a_kill_gives_the_same_weights_as_an_uninterrupted_run(tiny, examples, tmp_path):
    config = SFTConfig(
        lora=True,
        lora_rank=4,
        lora_dropout=0.2,
        learning_rate=1e-2,
        epochs=3,
        batch_size=4,
        grad_accumulation=2,
        logging_steps=1,
    )
    train_sft(tiny, examples[:16], tmp_path / "straight", config)

    def kill_after_first_epoch(record):  # two steps an epoch: step 3 is in the second epoch
        if record["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny, examples[:16], tmp_path / "killed", config, on_log=kill_after_first_epoch)
    assert latest_checkpoint(tmp_path / "killed").name == "step-2.pt"
    assert not (tmp_path / "killed" / METRICS_FILE).exists()
    steps = []
    train_sft(tiny, examples[:16], tmp_path / "killed", config, resume=True, on_log=lambda r: steps.append(r["step"]))
    assert steps == [3, 4, 5, 6]
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    done = train_sft(tiny, examples[:16], tmp_path / "killed", config, resume=True)  # finished: nothing to do
    assert done.metrics["steps"] == 6


def test_resume_refuses_a_checkpoint_of_other_data(tiny, examples, tmp_path):
    config = SFTConfig(lora=True, lora_rank=4, epochs=2, batch_size=8, logging_steps=1)

    def kill(record):
        if record["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny, examples[:8], tmp_path / "out", config, on_log=kill)
    with pytest.raises(CheckpointError, match="other data or settings"):
        train_sft(tiny, examples[8:16], tmp_path / "out", config, resume=True)


def test_two_processes_train_like_one_with_gradient_accumulation(tiny, episodes, tmp_path, examples):
    """`accelerate launch` with 2 CPU processes (gloo): the same steps and losses as one
    process accumulating 2 micro-batches (no dropout, so the runs are comparable)."""
    path = tmp_path / "episodes.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in episodes[:16]))
    overrides = [
        "sft.lora_rank=4",
        "sft.lora_dropout=0.0",
        "sft.epochs=2",
        "sft.batch_size=4",
        "sft.logging_steps=1",
        "sft.learning_rate=0.01",
        "sft.max_length=512",
        "sft.bf16=false",  # float32 both ways: bf16 autocast rounding would differ by reduction order
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "trainers.cli",
        "sft",
        defaults_config(tmp_path),
        "--episodes",
        str(path),
        "--model",
        str(tiny),
        "--out",
        str(tmp_path / "ddp"),
        *overrides,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / METRICS_FILE).read_text())
    assert ddp["processes"] == 2

    single = SFTConfig(
        lora_rank=4,
        lora_dropout=0.0,
        epochs=2,
        batch_size=4,
        grad_accumulation=2,
        logging_steps=1,
        learning_rate=0.01,
        bf16=False,
    )
    one = train_sft(tiny, examples[:16], tmp_path / "one", single).metrics
    assert [r["step"] for r in ddp["loss_curve"]] == [r["step"] for r in one["loss_curve"]] == [1, 2, 3, 4]
    for a, b in zip(ddp["loss_curve"], one["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)


def test_muon_trains_the_hidden_matrices_and_resumes_to_the_same_weights(tiny, examples, tmp_path):
    config = SFTConfig(
        lora=False,
        optimizer="muon",
        learning_rate=3e-3,
        weight_decay=0.1,
        epochs=3,
        batch_size=4,
        warmup_ratio=0.0,
        logging_steps=1,
    )
    straight = train_sft(tiny, examples[:8], tmp_path / "straight", config)
    curve = [r["loss"] for r in straight.metrics["loss_curve"]]
    assert curve[-1] < curve[0]
    base, trained = weights(tiny), weights(tmp_path / "straight")
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert any("q_proj" in k for k in changed) and any("embed_tokens" in k for k in changed)
    assert any("norm" in k for k in changed)  # the AdamW half

    def kill(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny, examples[:8], tmp_path / "killed", config, on_log=kill)
    train_sft(tiny, examples[:8], tmp_path / "killed", config, resume=True)
    resumed = weights(tmp_path / "killed")
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)


def test_batched_muon_takes_torch_muons_steps():
    from trainers.sft.optim import BatchedMuon

    torch.manual_seed(0)
    shapes = [(16, 8), (16, 8), (8, 24), (32, 32)]  # two of one shape (one batch), a wide and a square matrix
    ours = [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    mine = BatchedMuon(ours, lr=3e-3, weight_decay=0.1)
    reference = torch.optim.Muon(theirs, lr=3e-3, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(4):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        mine.step()
        reference.step()
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(ours, theirs))
    assert all((a - s).abs().max() > 1e-3 for a, s in zip(ours, start))  # they moved
    with pytest.raises(ValueError, match="2-D"):
        BatchedMuon([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)


def test_followup_weight_scales_the_response_after_a_clarification(episodes, tokenizer):
    """sft.followup_weight: every assistant turn after the episode's first weighs w after its tag;
    the first turn and every tag keep theirs; a per-turn example of a later turn counts from it."""
    assert label_weights([IGNORE, 7, 8, IGNORE, 4, 5, 6], 3.0, None, 2.0) == [0, 3, 1, 0, 3, 2, 2]
    assert label_weights([IGNORE, 4, 5], 3.0, None, 2.0, first_turn=1) == [0, 3, 2]
    assert label_weights([IGNORE, 7, 8], 3.0, 0.0, 2.0) == [0, 0, 1]
    plain = build_sft_examples(episodes, tokenizer, 512)
    heavy = build_sft_examples(episodes, tokenizer, 512, followup_weight=4.0)
    assert all(e.followup_weight == 4.0 for e in heavy)
    followups = 0
    for p, h in zip(plain, heavy):
        turns = sum(1 for i, x in enumerate(p.labels) if x != IGNORE and (i == 0 or p.labels[i - 1] == IGNORE))
        later = [i for i, (a, b) in enumerate(zip(example_weights(p, 3.0), example_weights(h, 3.0))) if a != b]
        assert bool(later) == (turns >= 2), p.episode_id
        assert all(example_weights(h, 3.0)[i] == 4.0 for i in later)
        followups += bool(later)
    assert 0 < followups < len(plain)  # the fixture holds both one-turn and clarified episodes
    assert collate(heavy[:1], 0, CPU)["weights"] is not None
