"""Readers: real HH-RLHF data (where the developers' data folder beside the checkout exists;
skipped otherwise), schema fixtures for SHP, summarize from feedback (comparisons and axis
ratings) and WebGPT, the generic forms in every file type, and the K-way expansion of ranked
lists."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rlhfkit.data import (
    DataError,
    expand_pairs,
    read_preferences,
    read_prompts,
    read_ranked,
    read_sft,
    split_hh_transcript,
    strip_citations,
)
from rlhfkit.types import Message, PreferencePair, PromptRecord, RankedList, SFTExample, user

FIX = Path(__file__).resolve().parent / "fixtures" / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared"
HH_REAL = SHARED / "data" / "hh-rlhf" / "helpful-online-test.jsonl.gz"


def _needs_hh() -> None:
    if not HH_REAL.exists():
        pytest.skip(f"real HH-RLHF file absent ({HH_REAL}); it lives in ../shared only")


# ---------------------------------------------------------------------------- HH-RLHF


def test_hh_real_file_counts_and_special_rows() -> None:
    _needs_hh()
    with pytest.raises(DataError) as err:  # the default policy stops on the 5 bad rows
        read_preferences(HH_REAL)
    assert "helpful-online-test.jsonl.gz:199: rejected: identical to chosen" in str(err.value)

    res = read_preferences(HH_REAL, on_error="skip")
    assert res.n_rows == 1137
    assert len(res.records) == 1132
    assert res.n_skipped == 5
    bad = {(p.line, p.field, p.message.split(" ")[0]) for p in res.problems}
    assert bad == {
        (199, "rejected", "identical"),
        (737, "rejected", "identical"),
        (553, "rejected", "empty"),
        (894, "rejected", "empty"),
        (1054, "rejected", "empty"),
    }
    assert res.notes["hh: a reply runs on into further turns (kept verbatim)"] == 2
    assert res.n_duplicates == 0

    # Oracle: independent reconstruction of every kept row from the raw transcripts.
    raw = [json.loads(line) for line in gzip.open(HH_REAL, "rt", encoding="utf-8")]
    multi = 0
    for rec in res.records:
        row = raw[int(rec.source.rsplit(":", 1)[1]) - 1]
        prompt_text = "".join(
            f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in rec.prompt
        )
        # The reply follows the prompt's last turn and a final "\n\nAssistant:" marker.
        for reply, transcript in ((rec.chosen, row["chosen"]), (rec.rejected, row["rejected"])):
            body = transcript.rstrip()
            assert body.endswith(reply)  # the reply runs to the end of its transcript
            head = body[: len(body) - len(reply)]
            assert head.rstrip(" ").endswith("\n\nAssistant:")
            assert _squash(head) == _squash(prompt_text + "\n\nAssistant:")
        assert rec.prompt[-1].role == "user"
        multi += sum(m.role == "user" for m in rec.prompt) > 1
    assert multi == 759  # prompts with several Human turns, kept as messages


def _squash(text: str) -> str:
    # The reader strips each turn's surrounding spaces; compare modulo whitespace.
    return " ".join(text.split())


def test_hh_fixture_multi_turn_runaway_and_chinese() -> None:
    res = read_preferences(FIX / "hh.jsonl")
    assert len(res.records) == 4
    first, multi, runaway, zh = res.records
    assert first == PreferencePair(user("What is 2 plus 2?"), "4.", "5.", source="hh.jsonl:1")
    assert multi.prompt == (
        Message("user", "Hi"),
        Message("assistant", "Hello! How can I help?"),
        Message("user", "Name a fruit."),
    )
    assert (multi.chosen, multi.rejected) == ("An apple.", "A chair.")
    # Identical first reply; the rejected transcript ran on into a new Human turn: the reply
    # starts at the last Assistant turn shared by both, and the run-on text is kept verbatim.
    assert runaway.prompt == user("Say hi.")
    assert (runaway.chosen, runaway.rejected) == ("Hi!", "Hi!\n\nHuman: Thanks, bye.")
    assert zh.prompt == user("用中文回答：一加一等于几？") and zh.chosen == "一加一等于二。"
    sft = read_sft(FIX / "hh.jsonl").records
    assert [r.response for r in sft] == ["4.", "An apple.", "Hi!", "一加一等于二。"]


def test_hh_divergence_before_last_turn_starts_reply_there(tmp_path: Path) -> None:
    rows = [
        {
            "chosen": "\n\nHuman: A\n\nAssistant: B1\n\nHuman: C\n\nAssistant: D",
            "rejected": "\n\nHuman: A\n\nAssistant: B2\n\nHuman: C\n\nAssistant: D",
        }
    ]
    path = tmp_path / "div.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (rec,) = read_preferences(path, format="hh").records
    assert rec.prompt == user("A")
    assert rec.chosen == "B1\n\nHuman: C\n\nAssistant: D"
    assert rec.rejected == "B2\n\nHuman: C\n\nAssistant: D"


def test_split_hh_transcript() -> None:
    ex = split_hh_transcript("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d")
    assert ex == SFTExample(
        (Message("user", "a"), Message("assistant", "b"), Message("user", "c")), "d"
    )


# ---------------------------------------------------------------------------- published schemas


def test_shp_labels_and_ratio_filter() -> None:
    res = read_preferences(FIX / "shp.jsonl")
    assert [r.chosen[:8] for r in res.records] == ["Rayleigh", "About fi", "No; educ"]
    assert res.records[1].rejected == "Don't bother resting it."  # labels = 0: B preferred
    assert res.records[0].prompt == user("Why is the sky blue during the day but red at sunset?")
    assert res.records[0].meta == {
        "post_id": "p1",
        "domain": "askscience_train",
        "score_ratio": 4.0,
    }
    strict = read_preferences(FIX / "shp.jsonl", min_score_ratio=2.0)
    assert [r.meta["post_id"] for r in strict.records] == ["p1", "p2"]
    assert strict.n_dropped == 1


def test_summarize_comparisons() -> None:
    res = read_preferences(FIX / "summarize_comparisons.jsonl")
    a, b = res.records
    assert a.prompt == user(
        "SUBREDDIT: r/cats\nTITLE: New cat hides all the time\nPOST: I adopted a cat last week"
        " and she hides under the bed all day. How do I help her settle in?\nTL;DR:"
    )
    assert (a.chosen, a.rejected) == ("Cat hides; give her time and a quiet room.", "I have a cat.")
    assert a.meta["confidence"] == 8
    assert b.prompt[0].content.startswith("ARTICLE: The city council voted")
    assert b.chosen == "Council extends bike lanes by 20 km over two years."  # choice = 1


def test_summarize_axis_groups_by_post_and_ranks_by_overall() -> None:
    res = read_ranked(FIX / "summarize_axis.jsonl")
    assert (
        res.notes["summarize_axis: post with fewer than 2 distinct rated summaries (dropped)"] == 1
    )
    cat, council = res.records
    assert cat.responses == (
        "Cat hides; give her time.",
        "New cat is shy and hides under the bed.",
        "I have a cat.",
    )
    assert cat.scores == (6.0, 4.0, 2.0)
    assert council.scores == (7.0, 7.0)
    pairs = read_preferences(FIX / "summarize_axis.jsonl").records
    assert len(pairs) == 3  # 3 pairs from the cat post; the council tie gives none
    by_coverage = read_ranked(FIX / "summarize_axis.jsonl", axis="coverage").records
    assert by_coverage[0].scores == (5.0, 3.0, 1.0)


def test_webgpt_ties_and_citations() -> None:
    res = read_preferences(FIX / "webgpt.jsonl")
    assert res.n_dropped == 1 and len(res.records) == 2
    onion, water = res.records
    assert onion.prompt == user("Why do onions make you cry?")
    assert onion.chosen == (
        "Cutting an onion releases a gas that irritates the eyes. The eyes make tears to wash it away."
    )
    assert water.chosen == "100 degrees Celsius." and water.rejected == "About 90 degrees Celsius."
    kept = read_preferences(FIX / "webgpt.jsonl", keep_ties=True, strip_citations=False).records
    assert len(kept) == 3 and kept[2].meta["tie"] is True
    assert "[1, 2]" in kept[0].chosen


def test_strip_citations_forms() -> None:
    assert strip_citations("a [1] b[2, 3] c [4-6].") == "a b c."
    assert strip_citations("keep [x] and [1a]") == "keep [x] and [1a]"


# ---------------------------------------------------------------------------- generic


def test_generic_pairs_forms_and_meta() -> None:
    res = read_preferences(FIX / "generic_pairs.jsonl")
    plain, system, conv, implicit = res.records
    assert plain == PreferencePair(
        user("What is 17 plus 25?"), "42", "43", source="generic_pairs.jsonl:1"
    )
    assert plain.meta == {"family": "arithmetic", "ideal": "42"}
    assert system.prompt == (Message("system", "Be brief."), Message("user", "Capital of France?"))
    assert system.margin == 1.5
    assert conv.prompt == user("Name a colour.") and (conv.chosen, conv.rejected) == (
        "Blue.",
        "Seven.",
    )
    assert implicit.prompt == user("熊猫吃什么？") and implicit.chosen == "熊猫主要吃竹子。"


def test_generic_sft_and_prompts() -> None:
    sft = read_sft(FIX / "generic_sft.jsonl").records
    assert sft[0] == SFTExample(
        user("What sound does a cow make?"), "Moo.", source="generic_sft.jsonl:1"
    )
    assert sft[1].prompt[-1] == Message("user", "2+2?") and sft[1].response == "4"
    assert sft[2].prompt == user("请把“猫”翻译成英文。")
    prompts = read_prompts(FIX / "generic_prompts.jsonl").records
    assert prompts[0] == PromptRecord(
        user("How do I kill a stuck process?"), source="generic_prompts.jsonl:1"
    )
    assert prompts[0].meta == {"family": "sounds_dangerous"}
    assert [m.role for m in prompts[1].prompt] == ["user", "assistant", "user"]
    # Prompts from preference data: one per pair, duplicates counted (and droppable).
    from_pairs = read_prompts(FIX / "generic_pairs.jsonl")
    assert len(from_pairs.records) == 4 and from_pairs.n_duplicates == 0


def test_generic_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"question": "Q?", "good": "yes", "bad": "no", "extra": 3}) + "\n")
    cols = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    (rec,) = read_preferences(path, columns=cols).records
    assert (rec.prompt, rec.chosen, rec.rejected, rec.meta) == (
        user("Q?"),
        "yes",
        "no",
        {"extra": 3},
    )
    with pytest.raises(ValueError, match="unknown name"):
        read_preferences(path, columns={"question": "prompt"})


def test_ranked_k_way_expansion_oracle() -> None:
    ranked = read_ranked(FIX / "generic_ranked.jsonl").records
    spell, fruits, opposite = ranked
    assert spell.responses == ("tac", "tca", "cat", "dog") and spell.scores is None
    # Scores sort the list, best first.
    assert fruits.responses == ("apple, pear, plum", "pear", "rock")
    assert fruits.scores == (3.0, 1.0, -2.0)
    # Oracle from the definition: i preferred to j for every i < j with a strictly higher score.
    for rec in ranked:
        k = len(rec.responses)
        want = [
            (rec.responses[i], rec.responses[j])
            for i in range(k)
            for j in range(k)
            if (i < j if rec.scores is None else rec.scores[i] > rec.scores[j])
        ]
        got = [(p.chosen, p.rejected) for p in expand_pairs(rec)]
        assert sorted(got) == sorted(want)
    pairs = read_preferences(FIX / "generic_ranked.jsonl")
    assert len(pairs.records) == 6 + 3 + 2  # K(K-1)/2 = 6 and 3, minus the one tie of the third
    assert pairs.notes["ranked: tied pairs left out"] == 1
    assert all(p.prompt == spell.prompt for p in pairs.records[:6])
    # A pair read as a ranked list is K = 2.
    as_ranked = read_ranked(FIX / "generic_pairs.jsonl").records
    assert as_ranked[0] == RankedList(
        user("What is 17 plus 25?"), ("42", "43"), source="generic_pairs.jsonl:1"
    )


def test_ranked_list_with_unknown_prompt_fields_is_sft_best_reply() -> None:
    best = read_sft(FIX / "generic_ranked.jsonl").records
    assert [r.response for r in best] == ["tac", "apple, pear, plum", "cold"]


ROWS = [
    {"prompt": "你好吗？", "chosen": "我很好，谢谢。", "rejected": "不。"},
    {"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet", "dataset"])
def test_generic_file_types(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), "utf-8")
    elif suffix == ".jsonl.gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS, ensure_ascii=False), "utf-8")
    elif suffix == ".csv":
        path.write_text(
            "prompt,chosen,rejected\n你好吗？,我很好，谢谢。,不。\nHi,Hello,Go away\n", "utf-8"
        )
    else:
        import datasets

        ds = datasets.Dataset.from_list(ROWS)
        if suffix == ".parquet":
            ds.to_parquet(str(path))
        else:
            ds.save_to_disk(str(path))
    recs = read_preferences(path).records
    assert [(r.prompt, r.chosen, r.rejected) for r in recs] == [
        (user(r["prompt"]), r["chosen"], r["rejected"]) for r in ROWS
    ]


def test_duplicates_counted_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path.write_text("\n".join(json.dumps({**row, "meta": {"i": i}}) for i in range(3)) + "\n")
    res = read_preferences(path)
    assert len(res.records) == 3 and res.n_duplicates == 2
    dropped = read_preferences(path, drop_duplicates=True)
    assert len(dropped.records) == 1 and dropped.n_duplicates == 2


def test_bad_arguments_are_programmer_errors() -> None:
    with pytest.raises(ValueError, match="format must be"):
        read_preferences(FIX / "shp.jsonl", format="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown reader option"):
        read_preferences(FIX / "shp.jsonl", min_ratio=2)


def test_reads_every_file_the_simulated_world_writes(tmp_path: Path) -> None:
    from rlhfkit.sim import make

    sizes = dict(n_sft=40, n_sft_val=10, n_pref=40, n_pref_val=10, n_pref_test=10, n_ranked=10)
    sizes |= dict(n_ranked_test=5, n_prompts=20, n_eval_prompts=10, vocab_size=0)
    make.make_world(tmp_path, seed=0, **sizes)
    readers = {
        "sft": read_sft,
        "preferences": read_preferences,
        "hh": read_preferences,
        "ranked": read_ranked,
        "prompts": read_prompts,
    }
    for path in sorted(tmp_path.rglob("*.jsonl")):
        res = readers[path.parent.name](path)  # default policy: any bad row would raise
        n_lines = sum(1 for line in path.read_text("utf-8").splitlines() if line.strip())
        assert len(res.records) == res.n_rows == n_lines, path
    # The HH transcripts hold the same pairs as the prompt/chosen/rejected file.
    for split in ("train", "validation", "test"):
        hh = read_preferences(tmp_path / "hh" / f"{split}.jsonl").records
        plain = read_preferences(tmp_path / "preferences" / f"{split}.jsonl").records
        assert [(r.prompt, r.chosen, r.rejected) for r in hh] == [
            (r.prompt, r.chosen, r.rejected) for r in plain
        ]
        assert all("family" in r.meta for r in plain)


def test_datasets_dict_split_and_hub_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS[:1]),
            "test": datasets.Dataset.from_list(ROWS[1:]),
        }
    ).save_to_disk(str(folder))
    assert [r.chosen for r in read_preferences(folder, split="test").records] == ["Hello"]
    with pytest.raises(DataError, match=r"dd:0: <source>: .*no split 'dev'"):
        read_preferences(folder, split="dev")

    # A name that is not a local path goes to datasets.load_dataset (the network call is faked).
    calls = []

    def fake_load_dataset(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    res = read_preferences("someone/prefs", split="validation")
    assert calls == [("someone/prefs", "validation")] and len(res.records) == 2
    assert res.records[0].source == "someone/prefs[validation]:1"
