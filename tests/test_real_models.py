"""What real models bring that the tiny ones built here do not: a tokenizer without a pad token,
BOS, chat templates that inject a system turn, an end-of-turn token that is not EOS, tied
embeddings, and reward-model folders read by plain `transformers`.

On stories260K from the developers' model folder beside the checkout (a pretrained Llama: no pad
token, BOS `<s>`, EOS `</s>`, tied embeddings; skipped with a reason where it is absent) and, where a behaviour must be
forced (a policy that always says `<|im_end|>`), on a GPT-2 built here. Oracles: a row scored
alone without padding; the chat template's own rendering of the whole conversation; the model
before saving.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
)

from rlhfkit.core import last_valid_index
from rlhfkit.data import (
    encode_pairs,
    encode_prompt,
    encode_prompts,
    encode_response,
    end_token_id,
    stop_token_ids,
)
from rlhfkit.models import (
    LoraSettings,
    ModelConfig,
    build_scalar_model,
    load_policy,
    load_reward_model,
    load_tokenizer,
    save_policy,
)
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.rollout import RolloutConfig, ended_at
from rlhfkit.rollout.texts import sample_batches
from rlhfkit.types import Message, PreferencePair, PromptRecord, user

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"

# SmolLM2-Instruct's template in shape: ChatML turns, and a default system turn injected when the
# dialogue has none (Qwen2.5 does the same with its own default text)
SMOL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def stories() -> Path:
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"stories260K absent ({STORIES}); it lives in ../shared only")
    return STORIES


def _chat_tokenizer(folder: Path):
    """stories260K's tokenizer with ChatML specials and the SmolLM2-like template: EOS stays
    `</s>`, the chat end-of-turn is `<|im_end|>` (as in a base model given a chat template)."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = SMOL_TEMPLATE
    return tok


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
    return ids, mask


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), True
    return ids, mask


def _story_rows(tok) -> list[list[int]]:
    """Prompt + reply rows as the RM trainer encodes them (HH format: BOS first, EOS last)."""
    pairs = [
        PreferencePair(user("Once upon a time"), "there was a little girl named Lily.", "no."),
        PreferencePair(user("Tell me about the sun"), "It is big.", "The sun is hot and red."),
    ]
    items = encode_pairs(tok, pairs, max_length=64)
    return [r for it in items for r in (it.chosen_ids, it.rejected_ids)]


# -- a tokenizer without a pad token, and pad = EOS ---------------------------------------------


@pytest.mark.parametrize("pad", ["default", "eos"])
def test_padless_tokenizer_scores_land_on_the_last_real_token(stories, pad):
    """stories260K has no pad token (`load_tokenizer` picks UNK); forced to pad = EOS, the pads
    after a reply are EOS ids too. Either way, padded left or right, every row's score is the
    score of the row alone (read at its own final EOS), never at a pad or the token before."""
    tok = load_tokenizer(stories)
    assert tok.pad_token_id == tok.unk_token_id != tok.eos_token_id
    if pad == "eos":
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    rm = build_scalar_model(ModelConfig(name_or_path=str(stories))).eval()
    rows = _story_rows(tok)
    assert all(r[-1] == tok.eos_token_id for r in rows)
    alone = torch.cat(
        [rm.score(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.bool)) for r in rows]
    )
    for pad_rows in (_right_pad, _left_pad):
        ids, mask = pad_rows(rows, tok.pad_token_id)
        torch.testing.assert_close(rm.score(ids, mask), alone, atol=1e-5, rtol=1e-5)
    # and the scores differ from those read one token earlier (the test can see a wrong index)
    before_eos = torch.cat(
        [
            rm.score(torch.tensor([r[:-1]]), torch.ones(1, len(r) - 1, dtype=torch.bool))
            for r in rows
        ]
    )
    assert (before_eos - alone).abs().min() > 1e-3


# -- BOS on truncated prompts ---------------------------------------------------------------------


def test_truncated_prompts_keep_their_bos(stories):
    """Keeping the end of a long prompt must not drop the BOS the model was trained with."""
    tok = load_tokenizer(stories)
    long = user("Once upon a time there was a girl. " * 20 + "What happened next?")
    full = encode_prompt(tok, long)
    assert full[0] == tok.bos_token_id and len(full) > 40
    (p,) = encode_prompts(tok, [PromptRecord(long)], max_prompt_length=16)
    assert p.truncated and len(p.input_ids) == 16
    assert p.input_ids == [tok.bos_token_id] + full[-15:]
    (pair,) = encode_pairs(tok, [PreferencePair(long, "She ran.", "No.")], max_length=24)
    assert pair.chosen_ids[0] == pair.rejected_ids[0] == tok.bos_token_id
    assert len(pair.chosen_ids) <= 24 and pair.chosen_ids[-1] == tok.eos_token_id


# -- chat templates: a default system turn, an end-of-turn token that is not EOS ----------------


def test_chat_template_with_an_injected_system_turn(stories):
    """The prompt ids are the template's own rendering up to the assistant's turn, with its
    default system turn once (or the dialogue's own system turn instead); the reply is its
    text's ids followed by the template's end-of-turn `<|im_end|>`, not EOS `</s>`."""
    tok = _chat_tokenizer(stories)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end_token_id(tok) == im_end != tok.eos_token_id
    text = "Once upon a time."
    assert encode_response(tok, text) == tok(text, add_special_tokens=False)["input_ids"] + [im_end]
    for dialogue in (
        user("Tell me a story."),
        (Message("system", "You write stories."), Message("user", "Tell me a story.")),
    ):
        prompt = tok.decode(encode_prompt(tok, dialogue))
        messages = [{"role": m.role, "content": m.content} for m in dialogue]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert prompt == rendered and prompt.endswith("<|im_start|>assistant\n")
        assert prompt.count("<|im_start|>system") == 1 and prompt.count("<s>") == 0
        assert ("SmolLM" in prompt) == (len(dialogue) == 1)


def test_templates_without_their_own_end_token_end_replies_with_eos(stories):
    tok = load_tokenizer(stories)
    assert end_token_id(tok) == tok.eos_token_id and stop_token_ids(tok) == [tok.eos_token_id]
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert end_token_id(tok) == tok.eos_token_id
    assert end_token_id(_chat_tokenizer(stories), template="raw") == tok.eos_token_id


def test_generation_stops_at_the_chat_end_token(stories):
    """A policy that always says `<|im_end|>`: sampling stops after it (with EOS-only stopping
    it would run to max_new_tokens), and the reply counts as ended."""
    tok = _chat_tokenizer(stories)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=128)
    cfg.tie_word_embeddings = False
    policy = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # constant hidden state b, logits W·b: only <|im_end|> scores
        policy.transformer.ln_f.weight.zero_()
        policy.transformer.ln_f.bias.fill_(1.0)
        policy.lm_head.weight.zero_()
        policy.lm_head.weight[im_end] = 1.0
    assert stop_token_ids(tok) == [im_end, tok.eos_token_id]
    rollout_cfg = RolloutConfig(max_new_tokens=8, temperature=1.0, batch_size=2)
    gen = torch.Generator().manual_seed(0)
    prompts = [PromptRecord(user("Hi")), PromptRecord(user("Tell me a story."))]
    ((_, out, texts),) = list(sample_batches(policy, tok, prompts, rollout_cfg, gen))
    assert out.response_mask.sum(1).tolist() == [1, 1]
    assert out.response_ids[:, 0].tolist() == [im_end, im_end] and texts == ["", ""]
    assert ended_at(out.response_ids, stop_token_ids(tok))[:, 0].all()


# -- tied embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True])
def test_tied_embeddings_stay_tied_through_save_and_reload(stories, tmp_path, lora):
    """stories260K ties its output head to its input embeddings. After a training step the
    saved policy (LoRA merged into a copy) reloads tied, with the same logits."""
    tok = load_tokenizer(stories)
    settings = LoraSettings(r=4, dropout=0.0) if lora else None
    policy = load_policy(ModelConfig(name_or_path=str(stories), lora=settings))
    ids = torch.tensor([encode_prompt(tok, user("Once upon a time"))])
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    policy(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    policy.eval()
    with torch.no_grad():
        expected = policy(input_ids=ids).logits
    save_policy(policy, tok, tmp_path / "policy")
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy")).eval()
    assert reloaded.config.tie_word_embeddings
    out_w, in_w = reloaded.get_output_embeddings().weight, reloaded.get_input_embeddings().weight
    assert out_w.data_ptr() == in_w.data_ptr()
    # merging LoRA (W + s·BA) rounds once per weight in float32: logits (|z| ≈ 10) then move by
    # up to 4e-5, measured; without LoRA the saved weights are the live ones, bit for bit
    tol = 1e-4 if lora else 1e-6
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=tol, rtol=tol)
    if not lora:  # the step moved the shared matrix, and it was saved once, moved
        base = AutoModelForCausalLM.from_pretrained(str(stories))
        assert not torch.equal(base.get_input_embeddings().weight, in_w)


# -- the RM folder under plain transformers -------------------------------------------------------


def _hf_scores(folder: Path, rows: list[list[int]], side: str | None = None) -> torch.Tensor:
    """What a user of plain transformers gets: the folder's tokenizer pads (on its own side, or
    `side`), the HF class reads."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    batch = tok.pad({"input_ids": rows}, padding_side=side, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1)


@pytest.mark.parametrize("pad", ["default", "eos"])
def test_saved_llama_rm_reads_the_same_token_under_plain_transformers(stories, tmp_path, pad):
    """stories260K (Llama: RMSNorm, bias-free head) as a normalised RM, saved with pad = UNK or
    pad = EOS: `AutoModelForSequenceClassification` reads every row at its last real token, with
    the scale folded in; the offset, which a bias-free Llama head cannot hold, is the one
    constant recorded in config.json (module docstring of `models.scalar`, point 7)."""
    tok = load_tokenizer(stories)
    if pad == "eos":
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    rm = build_scalar_model(ModelConfig(name_or_path=str(stories))).eval()
    rm.set_normalization(offset=0.7, scale=1.3)
    rows = _story_rows(tok)
    ids, mask = _right_pad(rows, tok.pad_token_id)
    ours = rm.score(ids, mask)
    rm.save(tmp_path / "rm", tok)
    loaded = load_reward_model(tmp_path / "rm")
    torch.testing.assert_close(loaded.score(ids, mask), ours, atol=1e-5, rtol=1e-5)
    assert tok.pad_token_id == (tok.eos_token_id if pad == "eos" else 0)  # caller's untouched
    offset = loaded.score_offset
    assert offset == pytest.approx(0.7 * 1.3) and loaded.score_scale == 1.0
    for side in ("right", "left"):
        torch.testing.assert_close(
            _hf_scores(tmp_path / "rm", rows, side) - offset, ours, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("pad", ["pad", "eos"])
def test_saved_gpt2_rm_gives_plain_transformers_the_same_scores(tmp_path, pad):
    """GPT-2 (a final LayerNorm with a bias): the whole normalisation folds into the weights,
    so the HF class gives exactly `load_reward_model`'s scores; with pad = EOS too."""
    from rlhfkit.sim.tokenizer import train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran in the park", "what is two plus two"] * 20
    tok = train_tokenizer(texts, vocab_size=300, min_frequency=1)
    save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=1), tmp_path / "lm", tok)
    if pad == "eos":
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    rm = build_scalar_model(ModelConfig(name_or_path=str(tmp_path / "lm"))).eval()
    rm.set_normalization(offset=-0.4, scale=2.5)
    rows = [
        encode_prompt(tok, user(q)) + encode_response(tok, a)
        for q, a in [("what is two plus two", "the cat"), ("a dog", "ran in the park")]
    ]
    ids, mask = _right_pad(rows, tok.pad_token_id)
    ours = rm.score(ids, mask)
    rm.save(tmp_path / "rm", tok)
    loaded = load_reward_model(tmp_path / "rm")
    assert (loaded.score_offset, loaded.score_scale) == (0.0, 1.0)  # all in the weights
    torch.testing.assert_close(loaded.score(ids, mask), ours, atol=1e-5, rtol=1e-5)
    values = loaded(ids, mask, return_values=True).values
    torch.testing.assert_close(
        values[mask], rm(ids, mask, return_values=True).values[mask], atol=1e-5, rtol=1e-5
    )
    # the folder's tokenizer pads on the right: GPT-2's HF class numbers positions from column 0,
    # so left-padded rows would need explicit position_ids there (rotary Llama does not care)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "rm")).padding_side == "right"
    torch.testing.assert_close(_hf_scores(tmp_path / "rm", rows), ours, atol=1e-5, rtol=1e-5)
    assert last_valid_index(mask).tolist() == [len(r) - 1 for r in rows]


def test_a_tokenizer_whose_every_special_token_is_eos_gets_a_new_pad_in_the_rm_folder(tmp_path):
    """GPT-2's own tokenizer has one special token, `<|endoftext|>`, for BOS, EOS, UNK (and
    pad, as users set it): no existing token can pad, so the saved folder adds one (an embedding
    row in the saved copy only) and HF's class still reads the last real token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlhfkit.models.scalar import PAD_TOKEN

    words = ["the", "cat", "sat", "on", "mat", "a", "dog"]
    vocab = {"<|endoftext|>": 0, **{w: i + 1 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    special = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=special, eos_token=special, unk_token=special
    )
    tok.pad_token = special
    cfg = GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=2, n_head=2, n_positions=32)
    cfg.eos_token_id = cfg.bos_token_id = cfg.pad_token_id = 0
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    rm = build_scalar_model(ModelConfig(name_or_path=str(tmp_path / "lm"))).eval()
    rm.set_normalization(offset=0.3, scale=1.0)
    rows = [tok("the cat sat")["input_ids"] + [0], tok("a dog sat on the mat")["input_ids"] + [0]]
    ids, mask = _right_pad(rows, tok.pad_token_id)
    ours = rm.score(ids, mask)
    rm.save(tmp_path / "rm", tok)
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "rm"))
    assert saved.pad_token == PAD_TOKEN and saved.pad_token_id == len(tok)
    assert tok.pad_token == special and rm.config.vocab_size == len(tok)  # the live ones as were
    torch.testing.assert_close(_hf_scores(tmp_path / "rm", rows), ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(load_reward_model(tmp_path / "rm").score(ids, mask), ours)


def test_model_and_tokenizer_paths_under_the_home_folder_load(stories, tmp_path, monkeypatch):
    """`~/…` paths: checked and loaded with the home folder expanded (transformers does not)."""
    import shutil

    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer

    shutil.copytree(stories, tmp_path / "models" / "stories")
    monkeypatch.setenv("HOME", str(tmp_path))
    tok = load_tokenizer("~/models/stories")
    policy = load_policy(ModelConfig(name_or_path="~/models/stories"))
    assert tok.vocab_size == policy.config.vocab_size
