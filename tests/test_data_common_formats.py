"""The files users have, read with no conversion: LLaMA-Factory alpaca (SFT, `output: [chosen,
rejected]` rankings, chosen/rejected) and sharegpt (SFT, preference), TRL conversational and
prompt-completion; a `columns` mapping for renamed alpaca files; and the SFT / RM trainers
training on them through `data.columns` / `data.format` in their configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.algos.rm import RMConfig
from rlhfkit.algos.sft import SFTConfig
from rlhfkit.config import ConfigError, load_config
from rlhfkit.data import read_preferences, read_prompts, read_ranked, read_sft
from rlhfkit.types import Message

FIX = Path(__file__).resolve().parent / "fixtures" / "data"


def test_alpaca_sft_joins_instruction_and_input_after_system_and_history():
    result = read_sft(FIX / "alpaca_sft.jsonl")
    assert result.format == "alpaca" and not result.problems
    first, second, third = result.records
    assert first.prompt == (Message("user", "Translate to French.\nGood morning"),)
    assert first.response == "Bonjour"
    assert second.prompt == (Message("user", "Name a primary colour."),)
    assert third.prompt == (
        Message("system", "Be brief."),
        Message("user", "Name a primary colour."),
        Message("assistant", "Red."),
        Message("user", "And another one?"),
    )
    assert third.response == "Blue."


def test_alpaca_ranking_output_is_chosen_then_rejected_and_longer_lists_rank():
    pairs = read_preferences(FIX / "alpaca_rm_zh.jsonl").records
    assert (pairs[0].chosen, pairs[0].rejected) == ("北京。", "上海。")
    assert pairs[1].prompt == (Message("user", "把这句话翻译成英文\n我喜欢猫"),)
    assert len(pairs) == 1 + 3  # a list of 3 gives its 3 pairs
    ranked = read_ranked(FIX / "alpaca_rm_zh.jsonl").records
    assert ranked[1].responses == ("I like cats.", "I like dogs.", "Cats.")
    dpo = read_preferences(FIX / "alpaca_dpo.jsonl").records
    assert (dpo[0].chosen, dpo[0].rejected) == ("4.", "5.")


def test_sharegpt_sft_and_preference():
    sft = read_sft(FIX / "sharegpt_sft.jsonl")
    assert sft.format == "sharegpt"
    rec = sft.records[0]
    assert rec.prompt[0] == Message("system", "You are kind.")
    assert rec.prompt[-1] == Message("user", "Say a fruit.") and rec.response == "Apple."
    pair = read_preferences(FIX / "sharegpt_dpo.jsonl").records[0]
    assert pair.prompt == (Message("user", "What is 2+2?"),)
    assert (pair.chosen, pair.rejected) == ("4.", "22.")


def test_trl_conversational_preference_and_prompt_completion():
    pair = read_preferences(FIX / "trl_conversational_pref.jsonl").records[0]
    assert pair.prompt == (Message("user", "What color is the sky?"),)
    assert (pair.chosen, pair.rejected) == ("It is blue.", "It is green.")
    conv, plain = read_sft(FIX / "trl_prompt_completion.jsonl").records
    assert conv.prompt == (Message("user", "What color is the sky?"),)
    assert conv.response == "It is blue."
    assert plain.prompt == (Message("user", "The sky is"),) and plain.response == " blue."


def test_bad_rows_of_the_new_formats_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [
        {
            "conversations": [
                {"from": "human", "value": "x"},
                {"from": "function_call", "value": "f"},
            ]
        },
        {"instruction": "x", "output": ["same", "same"]},
        {"instruction": "", "output": "y"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = read_sft(path, on_error="skip")
    lines = {(p.line, p.field) for p in result.problems}
    assert (1, "conversations[1].from") in lines
    result = read_preferences(path, format="alpaca", on_error="skip")
    fields = {p.line: p.field for p in result.problems}
    assert fields[2] == "output[1]" and fields[3] == "instruction"


def test_columns_map_renamed_alpaca_fields(tmp_path):
    path = tmp_path / "renamed.jsonl"
    path.write_text(json.dumps({"question": "Why?", "context": "Sky.", "answers": ["Air.", "No."]}))
    cols = {"instruction": "question", "input": "context", "output": "answers"}
    pair = read_preferences(path, columns=cols).records[0]
    assert pair.prompt == (Message("user", "Why?\nSky."),) and pair.chosen == "Air."
    prompts = read_prompts(FIX / "alpaca_rm_zh.jsonl").records
    assert prompts[0].prompt == (Message("user", "中国的首都是哪里？"),)


def test_trainer_data_configs_carry_the_reader_options():
    for cls in (SFTConfig, RMConfig):
        cfg = load_config(
            cls,
            overrides=[
                "data.columns={instruction: q, output: a}",
                "data.split=test",
                "data.drop_duplicates=true",
                "data.format=alpaca",
                "tokenizer=t",
            ],
        )
        opts = cfg.data.reader_options()
        assert opts["columns"] == {"instruction": "q", "output": "a"}
        assert (opts["split"], opts["drop_duplicates"], opts["format"]) == ("test", True, "alpaca")
        with pytest.raises(ConfigError, match="data.columns"):
            load_config(cls, overrides=["data.columns={answer: a}"])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim.tokenizer import train_tokenizer

    texts = [p.read_text(encoding="utf-8") for p in FIX.glob("*.jsonl")]
    tok = train_tokenizer(texts * 3, vocab_size=400, min_frequency=1)
    root = tmp_path_factory.mktemp("formats")
    return save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0), root / "m", tok)


def _common(base: Path, out: Path) -> dict:
    return {
        "out_dir": str(out),
        "model": {"name_or_path": str(base)},
        "max_steps": 2,
        "engine": {"device": "cpu", "threads": 1},
    }


@pytest.mark.timeout(120)
def test_rm_trains_on_a_llama_factory_ranking_file_and_sft_on_sharegpt(tmp_path, base):
    from rlhfkit.algos import rm, sft

    data = {"train": str(FIX / "alpaca_rm_zh.jsonl"), "validation_fraction": 0.0}
    cfg = RMConfig.model_validate(
        {**_common(base, tmp_path / "rm"), "data": {**data, "max_length": 64}}
    )
    assert (rm.train(cfg).model_dir / "config.json").exists()
    data = {"train": str(FIX / "sharegpt_sft.jsonl"), "validation_fraction": 0.0}
    cfg = SFTConfig.model_validate(
        {**_common(base, tmp_path / "sft"), "data": {**data, "max_length": 64}}
    )
    assert (sft.train(cfg).model_dir / "config.json").exists()
