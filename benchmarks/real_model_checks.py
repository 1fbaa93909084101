"""The real-model correctness checks of `tests/test_real_models.py`, on SmolLM2-135M-Instruct.

The tests run on stories260K (where the developers' data folder is present); this runs the same checks on the model users start
with: pad = EOS = `<|im_end|>` in its tokenizer, a chat template that injects a default system
turn, `<|im_start|>` as BOS, tied embeddings. Needs the converted folder
(`benchmarks/real/fetch_smollm2.py`, default `~/.cache/rlhfkit/models/SmolLM2-135M-Instruct`,
or `SMOLLM2_DIR`); prints each check and one JSON line; exits 1 if any check fails.

    python -m benchmarks.real_model_checks [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import command


def default_dir() -> Path:
    cache = Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit"))
    return Path(os.environ.get("SMOLLM2_DIR", cache / "models" / "SmolLM2-135M-Instruct"))


def main() -> None:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from rlhfkit.data import (
        encode_pairs,
        encode_prompt,
        encode_prompts,
        end_token_id,
        stop_token_ids,
    )
    from rlhfkit.models import (
        ModelConfig,
        build_scalar_model,
        load_policy,
        load_reward_model,
        load_tokenizer,
        save_policy,
    )
    from rlhfkit.rollout import RolloutConfig, ended_at
    from rlhfkit.rollout.texts import sample_batches
    from rlhfkit.types import PreferencePair, PromptRecord, user

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=default_dir())
    args = ap.parse_args()
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model}: no model; run: python -m benchmarks.real.fetch_smollm2")
    torch.set_num_threads(2)
    print(f"command: {command()}")
    checks: dict[str, bool] = {}

    def check(name: str, ok: bool, detail: str) -> None:
        checks[name] = bool(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    tok = load_tokenizer(args.model)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    check(
        "end_token",
        end_token_id(tok) == im_end and stop_token_ids(tok) == [im_end],
        f"eos={tok.eos_token!r} pad={tok.pad_token!r} end={tok.convert_ids_to_tokens(end_token_id(tok))!r}",
    )

    # the default system turn, once
    prompt = tok.decode(encode_prompt(tok, user("What is the capital of France?")))
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    check(
        "system_turn",
        prompt == rendered and prompt.count("<|im_start|>system") == 1,
        "prompt ids decode to the template's rendering, one system turn",
    )

    # truncation keeps the first token when it is BOS (SmolLM2's BOS is <|im_start|>)
    long = user("Tell me about Paris. " * 60)
    full = encode_prompt(tok, long)
    (cut,) = encode_prompts(tok, [PromptRecord(long)], max_prompt_length=32)
    check(
        "bos_on_truncation",
        cut.input_ids == [tok.bos_token_id] + full[-31:] and full[0] == tok.bos_token_id,
        f"{len(full)} → {len(cut.input_ids)} tokens, first {tok.convert_ids_to_tokens(cut.input_ids[0])!r}",
    )

    # greedy generation stops at <|im_end|>
    policy = load_policy(ModelConfig(name_or_path=str(args.model))).eval()
    cfg = RolloutConfig(max_new_tokens=24, temperature=1.0, top_k=1, batch_size=1)
    gen = torch.Generator().manual_seed(0)
    records = [PromptRecord(user("What is the capital of France?"))]
    ((_, out, texts),) = list(sample_batches(policy, tok, records, cfg, gen))
    n = int(out.response_mask.sum())
    ended = bool(ended_at(out.response_ids, stop_token_ids(tok))[0, n - 1])
    check("stops_at_im_end", ended and n < 24, f"{n} tokens, reply {texts[0]!r}")

    with tempfile.TemporaryDirectory() as tmp:
        # tied embeddings through save and reload
        ids = torch.tensor([encode_prompt(tok, user("Hello"))])
        with torch.no_grad():
            expected = policy(input_ids=ids).logits
        save_policy(policy, tok, Path(tmp) / "policy")
        again = AutoModelForCausalLM.from_pretrained(str(Path(tmp) / "policy")).eval()
        tied = again.get_output_embeddings().weight.data_ptr() == (
            again.get_input_embeddings().weight.data_ptr()
        )
        with torch.no_grad():
            diff = float((again(input_ids=ids).logits - expected).abs().max())
        check("tied_embeddings", tied and diff < 1e-4, f"tied={tied}, max |Δlogit| {diff:.2e}")
        del again, policy

        # the RM folder under plain transformers: pad = EOS in the tokenizer
        torch.manual_seed(0)
        rm = build_scalar_model(ModelConfig(name_or_path=str(args.model))).eval()
        rm.set_normalization(offset=0.5, scale=2.0)
        pairs = [
            PreferencePair(user("What is the capital of France?"), "Paris.", "I don't know."),
            PreferencePair(user("Say hi."), "Hi!", "No."),
        ]
        rows = [r for it in encode_pairs(tok, pairs, 64) for r in (it.chosen_ids, it.rejected_ids)]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
        with torch.no_grad():
            ours = rm.score(ids, mask)
        rm.save(Path(tmp) / "rm", tok)
        loaded = load_reward_model(Path(tmp) / "rm")
        saved_tok = AutoTokenizer.from_pretrained(str(Path(tmp) / "rm"))
        hf = AutoModelForSequenceClassification.from_pretrained(str(Path(tmp) / "rm")).eval()
        batch = saved_tok.pad({"input_ids": rows}, return_tensors="pt")
        with torch.no_grad():
            hf_scores = hf(**batch).logits.squeeze(-1)
            reloaded = loaded.score(ids, mask)
        gap = float((hf_scores - loaded.score_offset - ours).abs().max())
        check(
            "rm_folder_under_hf",
            gap < 1e-3 and float((reloaded - ours).abs().max()) < 1e-3,
            f"saved pad {saved_tok.pad_token!r} (tokenizer's was {tok.pad_token!r}), "
            f"offset left in config {loaded.score_offset:.3f}, max |HF − offset − ours| {gap:.2e}",
        )
    print(json.dumps({"bench": "real_model_checks", "model": args.model.name, **checks}))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
