"""Formatting and tokenization: chat template vs HH format, the exact prompt/response boundary,
the truncation policy, Chinese text through a byte-level BPE, and the pad-less stories260K."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rlhfkit.data import (
    collate_pairs,
    encode_pairs,
    encode_prompt,
    encode_prompts,
    encode_ranked,
    encode_response,
    encode_sft,
    ensure_pad_token,
    format_prompt,
)
from rlhfkit.data.tokenize import truncate
from rlhfkit.types import Message, PreferencePair, PromptRecord, RankedList, SFTExample, user

SHARED = Path(__file__).resolve().parents[2] / "shared"
STORIES = SHARED / "models" / "stories260K"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "Human: What is two plus two? Assistant: Four.",
    "熊猫主要吃竹子。一加一等于二。你好，谢谢。",
    "The quick brown fox jumps over the lazy dog.",
]


def tiny_tokenizer(chat_template: str | None = None, pad: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained here on a few lines (no download); no pad token by default."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>"] + (["<pad>"] if pad else [])
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>" if pad else None
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def _stories():
    if not STORIES.exists():
        pytest.skip(f"stories260K absent ({STORIES}); it lives in ../shared only")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(STORIES))


DIALOGUE = (
    Message("system", "Be kind."),
    Message("user", "Hi"),
    Message("assistant", "Hello!"),
    Message("user", "2+2?"),
)


def test_format_prompt_hh_and_template() -> None:
    plain = tiny_tokenizer()
    assert format_prompt(plain, DIALOGUE) == (
        "Be kind.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant:"
    )
    chat = tiny_tokenizer(CHAT_TEMPLATE)
    assert format_prompt(chat, DIALOGUE) == (
        "<|system|>Be kind.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|>"
        "<|user|>2+2?<|end|><|assistant|>"
    )


@pytest.mark.parametrize("template", [None, CHAT_TEMPLATE])
def test_sequence_is_prompt_then_response_with_exact_boundary(template: str | None) -> None:
    tok = tiny_tokenizer(template)
    rec = SFTExample(user("熊猫吃什么？"), "熊猫主要吃竹子。")
    (item,) = encode_sft(tok, [rec], max_length=512)
    prompt_ids = encode_prompt(tok, rec.prompt)
    response_ids = encode_response(tok, rec.response)
    assert item.input_ids == prompt_ids + response_ids
    assert item.prompt_length == len(prompt_ids) and not item.truncated
    assert response_ids[-1] == tok.eos_token_id
    # Chinese round-trips through the byte-level BPE on both sides of the boundary.
    assert tok.decode(item.input_ids[: item.prompt_length]) == format_prompt(tok, rec.prompt)
    reply = tok.decode(item.input_ids[item.prompt_length : -1])
    assert reply == (" " if template is None else "") + "熊猫主要吃竹子。"


def test_truncation_policy_oracle() -> None:
    prompt = [1] + list(range(100, 120))  # BOS + 20 tokens
    short, long_ = list(range(200, 205)), list(range(300, 340))
    # 1. max_prompt_length keeps the end of the prompt, BOS kept first.
    p, (r,), cut = truncate(prompt, [short], max_length=100, max_prompt_length=6, bos_id=1)
    assert p == [1, 115, 116, 117, 118, 119] and r == short and cut
    # 2. Too long overall: the prompt yields first, down to what the reply leaves ...
    p, (r,), cut = truncate(prompt, [short], max_length=20, bos_id=1)
    assert len(p) == 15 and p[0] == 1 and p[1:] == prompt[-14:] and r == short and cut
    # ... but keeps at least half the budget; 3. then the reply is cut at its right end.
    p, (r,), cut = truncate(prompt, [long_], max_length=20, bos_id=1)
    assert p == [1] + prompt[-9:] and r == long_[:10] and cut
    # Nothing to do: unchanged and not flagged.
    p, rs, cut = truncate(prompt, [short, long_], max_length=100)
    assert p == prompt and rs == [short, long_] and not cut


def test_pairs_and_ranked_share_one_prompt_cut(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rlhfkit.data")
    tok = tiny_tokenizer()
    long_prompt = user("The quick brown fox jumps over the lazy dog. " * 20)
    pair = PreferencePair(long_prompt, "Four.", "The quick brown fox jumps over the lazy dog. " * 2)
    (item,) = encode_pairs(tok, [pair], max_length=64)
    assert item.truncated and item.length <= 64
    assert item.chosen_ids[: item.prompt_length] == item.rejected_ids[: item.prompt_length]
    assert "encode_pairs: truncated 1 of 1 sequences" in caplog.text
    ranked = RankedList(long_prompt, ("a", "bb", "The quick brown fox"))
    (r,) = encode_ranked(tok, [ranked], max_length=64)
    heads = {tuple(s[: r.prompt_length]) for s in r.sequences}
    assert len(heads) == 1 and r.length <= 64
    (p,) = encode_prompts(tok, [PromptRecord(long_prompt)], max_prompt_length=16)
    full = encode_prompt(tok, long_prompt)
    assert p.input_ids == full[-16:] and p.truncated


def test_ensure_pad_token_choices() -> None:
    with_pad = tiny_tokenizer(pad=True)
    assert ensure_pad_token(with_pad) == with_pad.convert_tokens_to_ids("<pad>")
    no_pad = tiny_tokenizer()
    assert no_pad.pad_token_id is None
    assert ensure_pad_token(no_pad) == no_pad.eos_token_id  # no UNK here: EOS is reused
    bare = tiny_tokenizer()
    bare.eos_token = None
    n = len(bare)
    assert ensure_pad_token(bare) == n and len(bare) == n + 1  # a new <pad> token was added


def test_padless_stories260k_end_to_end() -> None:
    tok = _stories()
    assert tok.pad_token_id is None
    pad = ensure_pad_token(tok)
    assert pad == tok.unk_token_id == 0  # UNK is never a training target; masks carry validity
    pairs = [
        PreferencePair(user("Once upon a time"), "there was a girl.", "no."),
        PreferencePair(user("你好"), "你好！", "走开。"),  # byte fallback handles Chinese
    ]
    items = encode_pairs(tok, pairs, max_length=128)
    batch = collate_pairs(items, pad)
    for row, seq in enumerate([i.chosen_ids for i in items] + [i.rejected_ids for i in items]):
        assert batch["attention_mask"][row].sum().item() == len(seq)
    assert tok.decode(items[1].chosen_ids[items[1].prompt_length : -1]).strip() == "你好！"
    assert items[0].chosen_ids[0] == tok.bos_token_id  # HH format: the tokenizer's BOS kept


@pytest.mark.parametrize("template", [None, CHAT_TEMPLATE])
def test_raw_template_is_the_texts_as_they_are(template: str | None) -> None:
    # raw = what TRL does with a non-conversational prompt/chosen row: prompt text, reply text,
    # EOS; no HH markers, no chat template, no special tokens, no leading space.
    tok = tiny_tokenizer(template)
    tok.add_bos_token = True  # even a tokenizer that adds BOS gets none under raw
    rec = PreferencePair(user("The quick brown"), " fox jumps.", " dog.")
    (pair,) = encode_pairs(tok, [rec], max_length=512, template="raw")
    prompt = tok("The quick brown", add_special_tokens=False)["input_ids"]
    chosen = tok(" fox jumps.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rejected = tok(" dog.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert pair.chosen_ids == prompt + chosen and pair.rejected_ids == prompt + rejected
    assert pair.prompt_length == len(prompt)
    (sft,) = encode_sft(tok, [SFTExample(rec.prompt, rec.chosen)], 512, template="raw")
    assert sft.input_ids == pair.chosen_ids
    (p,) = encode_prompts(tok, [PromptRecord(rec.prompt)], 64, template="raw")
    assert p.input_ids == prompt
    assert format_prompt(tok, rec.prompt, "raw") == "The quick brown"


def test_raw_template_rejects_dialogues_naming_the_row() -> None:
    tok = tiny_tokenizer()
    rec = SFTExample(DIALOGUE, "4", source="demos.jsonl:7")
    with pytest.raises(ValueError, match=r"demos\.jsonl:7: prompt: .*one-turn prompts.*4 messages"):
        encode_sft(tok, [rec], 512, template="raw")


@pytest.mark.parametrize("chat_template", [None, CHAT_TEMPLATE])
@pytest.mark.parametrize("template", ["chat", "raw"])
@pytest.mark.parametrize("max_len", [512, 5])
def test_online_prompt_ids_are_the_data_layers(
    chat_template: str | None, template: str, max_len: int
) -> None:
    # Every online trainer's prompts (rollout.PromptSource) and the evaluation
    # (data.encode_prompts) give the same ids: `encode_prompt`'s, cut to the last `max_len`
    # tokens with the BOS kept (BOS only in the HH format: a chat template wrote its own
    # markers, raw text gets none).
    from rlhfkit.rollout import prompt_source

    tok = tiny_tokenizer(chat_template)
    tok.add_bos_token = True
    dialogue = user("What is two plus two?")
    full = encode_prompt(tok, dialogue, template)
    source = prompt_source([PromptRecord(dialogue)], tok, max_len, template)
    (evaluated,) = encode_prompts(tok, [PromptRecord(dialogue)], max_len, template)
    assert source.encoded[0].input_ids == evaluated.input_ids
    assert source.texts == [format_prompt(tok, dialogue, template)]
    has_bos = template == "chat" and chat_template is None
    assert (full[0] == tok.bos_token_id) == has_bos
    ids = source.encoded[0].input_ids
    if max_len >= len(full):
        assert ids == full
    else:
        assert len(ids) == max_len
        assert ids[has_bos:] == full[len(full) - max_len + has_bos :]
        assert (ids[0] == tok.bos_token_id) == has_bos  # the BOS survives truncation
