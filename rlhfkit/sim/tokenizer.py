"""A byte-level BPE tokenizer trained offline on the world's own text.

Built with the `tokenizers` library (ByteLevel pre-tokenizer and decoder, as GPT-2; Radford et al.
2019) and wrapped as a `transformers.PreTrainedTokenizerFast`, so `save_pretrained` writes a folder
that `AutoTokenizer.from_pretrained` loads. Byte-level means every string round-trips, including
text outside the training data.

Special tokens: `<|pad|>` (id 0), `<|bos|>`, `<|eos|>`, `<|user|>`, `<|assistant|>`, `<|system|>`.
The chat template (Jinja) renders

    <|bos|><|user|>What is 2 plus 3?<|assistant|>2 plus 3 is 5.<|eos|>

so `apply_chat_template(messages, add_generation_prompt=True, tokenize=False)` ends with
`<|assistant|>` and the reply the model should generate ends with the eos token. The template
adds `<|bos|>` itself; the tokenizer adds no special tokens on plain `tokenizer(text)` calls.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
ROLE_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (vocab_size includes the 256 byte symbols and
    the special tokens) and return it with pad/bos/eos set and the chat template attached."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        additional_special_tokens=list(ROLE_TOKENS),
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
