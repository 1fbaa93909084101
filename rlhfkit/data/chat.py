"""Chat formatting: dialogue → prompt text, reply → token ids, and the pad token.

Implementation details:

- `format_prompt` uses the tokenizer's chat template with `add_generation_prompt=True` when it has
  one (transformers `apply_chat_template`), else the HH-RLHF format of Bai et al. 2022:
  `"\\n\\nHuman: …\\n\\nAssistant: …\\n\\nHuman: …\\n\\nAssistant:"`; a system message, which HH has
  no slot for, is written as plain text before the first turn.
- The prompt is tokenized *alone* (`encode_prompt`) and the reply alone (`encode_response`), so
  the prompt/response boundary of `prompt_ids + response_ids` is exact; tokenizing the joined
  text could merge tokens across the boundary. With a chat template the template already holds
  any BOS, so special tokens are not added again; with the HH format the tokenizer adds its usual
  ones (e.g. Llama's BOS).
- HH replies are encoded with a leading space (`"Assistant:" + " reply"`), as the transcripts
  write them; byte-level BPE tokenizers then use their common space-prefixed tokens, and
  sentencepiece tokenizers, which add a dummy prefix anyway, give the same ids either way.
- The reply ends with its end token so a policy learns to stop and the reward model reads its
  score there: with a chat template, the template's own end-of-turn token (`end_token_id`:
  the first special token the template writes after an assistant message, e.g. `<|im_end|>`
  for ChatML templates such as SmolLM2's and Qwen's, `<|eot_id|>` for Llama 3), which can
  differ from the tokenizer's EOS (a base model's `<|endoftext|>`); EOS otherwise. Generation
  stops at either (`stop_token_ids`).
- `template="raw"` (every `encode_*` and the `prompt_template` option of SFT, RM and PPO) skips
  all formatting for base models and plain-continuation data: a one-turn prompt's text as is,
  the reply's text as is (no leading space) plus EOS, no special tokens added — what TRL's
  trainers do with a non-conversational `prompt`/`chosen` row. The model must then be trained
  and used with the same template throughout.
- `ensure_pad_token`: when the tokenizer has no pad token, reuse UNK, else EOS, as the pad *id*;
  a new token is added only when neither exists (the caller must then resize the embeddings).
  This is safe because rlhfkit never infers validity from the pad id: collators build masks from
  the sequence lengths, so a pad equal to EOS cannot hide a real EOS.
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

from rlhfkit.types import Dialogue

Template = Literal["chat", "raw"]

_HH_ROLE = {"user": "Human", "assistant": "Assistant"}


def has_chat_template(tokenizer: Any) -> bool:
    """Whether `format_prompt` will use the tokenizer's chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: Any, dialogue: Dialogue, template: Template = "chat") -> str:
    """The prompt text a model continues with its reply: chat template, else HH format; with
    `template="raw"` the text of a one-turn prompt as is."""
    if not dialogue:
        raise ValueError("format_prompt: empty dialogue")
    if template == "raw":
        if len(dialogue) != 1:
            raise ValueError(
                f"prompt_template=raw needs one-turn prompts, this one has {len(dialogue)} messages"
            )
        return dialogue[0].content
    if has_chat_template(tokenizer):
        messages = [{"role": m.role, "content": m.content} for m in dialogue]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return format_hh(dialogue)


# the turn markers of chat models' tokenizers (ChatML: SmolLM2, Qwen; Llama 3; Gemma; Phi-3 /
# Zephyr); a tokenizer that has one as a special token was made for a chat template
CHAT_MARKERS = ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>", "<|user|>")


def check_chat_template(tokenizer: Any, template: Template = "chat") -> None:
    """Raise `ConfigError` when `template="chat"` would fall back to the HH format for a
    tokenizer made for a chat template (one of `CHAT_MARKERS` is a special token) that has none:
    the model would see prompts in a format it never saw, silently."""
    if template != "chat" or has_chat_template(tokenizer):
        return
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    found = [m for m in CHAT_MARKERS if m in special]
    if found:
        from rlhfkit.config import ConfigError

        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise ConfigError(
            f"tokenizer {name!r} has chat turn tokens ({found[0]}) but no chat template, so the"
            " prompts would be written in the HH 'Human:/Assistant:' format the model never saw:"
            " add its chat template to the tokenizer folder (chat_template.jinja, or"
            " chat_template in tokenizer_config.json), or set data.prompt_template=raw"
        )


def format_hh(dialogue: Dialogue) -> str:
    """`"\\n\\nHuman: …\\n\\nAssistant:"` for a dialogue (system text, if any, goes first)."""
    parts = []
    for m in dialogue:
        if m.role == "system":
            parts.append(m.content)
        else:
            parts.append(f"\n\n{_HH_ROLE[m.role]}: {m.content}")
    return "".join(parts) + "\n\nAssistant:"


def prompt_special_tokens(tokenizer: Any, template: Template = "chat") -> bool:
    """Whether a formatted prompt is tokenized with the tokenizer's special tokens: only in the
    HH format (a chat template already wrote them; raw text gets none)."""
    return template == "chat" and not has_chat_template(tokenizer)


def encode_prompt(tokenizer: Any, dialogue: Dialogue, template: Template = "chat") -> list[int]:
    """Token ids of `format_prompt(tokenizer, dialogue, template)` (special tokens as
    `prompt_special_tokens` says)."""
    text = format_prompt(tokenizer, dialogue, template)
    special = prompt_special_tokens(tokenizer, template)
    # verbose=False: rlhfkit truncates itself, so the "longer than model_max_length" notice is noise.
    ids = tokenizer(text, add_special_tokens=special, verbose=False)
    return list(ids["input_ids"])


def encode_response(tokenizer: Any, text: str, template: Template = "chat") -> list[int]:
    """The reply's token ids followed by its end token (`end_token_id`; a leading space in the
    HH format, see above)."""
    end = end_token_id(tokenizer, template)
    if template == "chat" and not has_chat_template(tokenizer):
        text = " " + text
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) + [end]


_REPLY_MARKER = "RLHFKIT_REPLY_MARKER"


def end_token_id(tokenizer: Any, template: Template = "chat") -> int:
    """The id that ends a reply: with a chat template (and `template="chat"`), the first special
    token the template writes after an assistant message's text (its end-of-turn token); the
    tokenizer's EOS otherwise, or when the template writes none."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no EOS token; set tokenizer.eos_token before encoding")
    if template != "chat" or not has_chat_template(tokenizer):
        return int(eos)
    # one template rendering per tokenizer state, not one per reply encoded
    key = (tokenizer.chat_template, int(eos), len(tokenizer))
    try:
        cached = _END_CACHE.get(tokenizer)
    except TypeError:  # an object that cannot be weakly referenced: no cache
        return _template_end_id(tokenizer, int(eos))
    if cached is None or cached[0] != key:
        cached = (key, _template_end_id(tokenizer, int(eos)))
        _END_CACHE[tokenizer] = cached
    return cached[1]


_END_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _template_end_id(tokenizer: Any, eos: int) -> int:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _REPLY_MARKER}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that cannot render a reply (generation-only): EOS
        return eos
    if _REPLY_MARKER not in text:
        return eos
    after = text[text.index(_REPLY_MARKER) + len(_REPLY_MARKER) :]
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    for token in tokenizer(after, add_special_tokens=False, verbose=False)["input_ids"]:
        if token in special:
            return int(token)
    return eos


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids generation stops at: the chat template's end-of-turn token (`end_token_id`) and
    EOS, whichever comes first (either ends a reply, whatever the prompt template)."""
    end = end_token_id(tokenizer)
    eos = int(tokenizer.eos_token_id)
    return [end] if eos == end else [end, eos]


def ensure_pad_token(tokenizer: Any) -> int:
    """Give `tokenizer` a pad token if it has none (UNK, else EOS, else a new `<pad>`); return
    the pad id. Validity always comes from attention masks, never from comparing with this id."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    elif tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return int(tokenizer.pad_token_id)
