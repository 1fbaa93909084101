"""`make_world`: write the simulated world's data sets, tokenizer and manifest to a folder.

Everything is drawn from one `random.Random` per output stream seeded from `seed`, so the same
seed and sizes give byte-identical files. Files (JSON Lines, UTF-8, one object per line):

    sft/{train,validation}.jsonl
        {"prompt": P, "response": str, "meta": {"family", "kind", "behaviour", "gold"}}
    preferences/{train,validation,test}.jsonl
        {"prompt": P, "chosen": str, "rejected": str,
         "meta": {"family", "kind", "annotator", "p_chosen", "chosen_gold", "rejected_gold",
                  "chosen_behaviour", "rejected_behaviour", "held_out"}}
    hh/{train,validation,test}.jsonl      (the same pairs as preferences/, as HH-RLHF transcripts)
        {"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": "\\n\\nHuman: …\\n\\nAssistant: …"}
    ranked/{train,test}.jsonl
        {"prompt": P, "responses": [best, …, worst], "meta": {"family", "kind", "gold": [...],
         "behaviours": [...], "annotator"}}
    prompts/{train,validation,eval}.jsonl
        {"prompt": P, "meta": {"family", "kind", "held_out", "ideal"}}
    prompts/eval_harmful.jsonl            (only when n_eval_harmful > 0; same rows)
        held-out harmful requests only, so harm rates are measured on enough of them; its text
        is left out of the tokenizer's training text, so every other file is the same with or
        without it
    tokenizer/                            (Hugging Face tokenizer folder, `train_tokenizer`)
    manifest.json                         (seed, sizes, counts, annotators, measured agreement)

P is the prompt: a string (the user turn) for one-turn prompts, or, for two-turn dialogues, a
messages list ``[{"role": "user", …}, {"role": "assistant", …}, {"role": "user", …}]``.

`meta` is for evaluation and analysis only: gold scores and behaviours there are what training
must never see (the reward model learns from the noisy `chosen`/`rejected` labels alone).

Splits: SFT, preference, HH and ranked train/validation rows, the RL train prompts and
`prompts/validation` (in-distribution evaluation: new draws of the training items) come from the
training items; preference/HH/ranked test rows and `prompts/eval` (generalisation: unseen
phrasings, operand pairs, words) come from the held-out items (`rlhfkit.sim.world.Split`). Preference pairs are two replies with different behaviours drawn from
`PREFERENCE_MIX` and labelled by one of `n_annotators` simulated annotators whose shared temperature
is calibrated so that their expected pairwise agreement on the training pairs equals `agreement`;
the manifest also records the agreement measured by letting every annotator label every pair.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rlhfkit
from rlhfkit.sim.annotators import (
    Annotator,
    ScoredPair,
    annotator_agreement,
    calibrate_temperature,
    expected_agreement,
    gold_win_rate,
    make_annotators,
    simulate_preference,
)
from rlhfkit.sim.behaviours import (
    PREFERENCE_MIX,
    SFT_MIX,
    BehaviourMix,
    behaviours_for,
    sample_reply,
)
from rlhfkit.sim.gold import judge_task
from rlhfkit.sim.tokenizer import train_tokenizer
from rlhfkit.sim.world import FAMILY_WEIGHTS, Split, Task, sample_task

# Draws one task from the world: (rng, held_out, family=None) -> Task.
Draw = Callable[..., Task]

DEFAULT_SIZES: dict[str, Any] = {
    "n_sft": 2000,  # SFT demonstrations (train)
    "n_sft_val": 200,
    "n_pref": 2000,  # preference pairs (train); hh/ holds the same pairs
    "n_pref_val": 200,
    "n_pref_test": 200,  # from held-out items
    "n_ranked": 300,  # ranked lists (train)
    "n_ranked_test": 100,  # from held-out items
    "ranked_k": 4,  # replies per ranked list
    "n_prompts": 500,  # RL prompts (train)
    "n_val_prompts": 200,  # evaluation prompts from the training items (new draws)
    "n_eval_prompts": 200,  # evaluation prompts from held-out items
    "n_eval_harmful": 0,  # extra held-out harmful prompts (harm rates with statistical power)
    "vocab_size": 1024,  # tokenizer vocabulary; 0 skips the tokenizer
    "agreement": 0.68,  # target inter-annotator agreement (0.5, 1)
    "n_annotators": 3,
    "length_bias_std": 0.01,  # per-annotator utility per word ~ N(0, std²)
    "sft_ideal": SFT_MIX.ideal,  # share of ideal behaviour in SFT demonstrations
    "pref_ideal": PREFERENCE_MIX.ideal,  # share of ideal behaviour among preference replies
    "family_weights": {},  # overrides of world.FAMILY_WEIGHTS, e.g. {"arithmetic": 0.05}
}


def _prompt_field(task: Task) -> str | list[dict[str, str]]:
    if len(task.prompt) == 1:
        return task.prompt[0].content
    return [{"role": m.role, "content": m.content} for m in task.prompt]


def hh_transcript(task: Task, reply: str) -> str:
    """The HH-RLHF rendering: "\\n\\nHuman: …\\n\\nAssistant: …" for every turn, reply last."""
    speaker = {"user": "Human", "assistant": "Assistant", "system": "System"}
    turns = "".join(f"\n\n{speaker[m.role]}: {m.content}" for m in task.prompt)
    return f"{turns}\n\nAssistant: {reply}"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _sft_rows(rng: random.Random, draw: Draw, n: int, mix: BehaviourMix) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        task = draw(rng, False)
        behaviour = mix.sample(task, rng)
        reply = sample_reply(task, behaviour, rng)
        gold = judge_task(task, reply)
        meta = {
            "family": task.family,
            "kind": task.kind,
            "behaviour": behaviour,
            "gold": gold.score,
        }
        rows.append({"prompt": _prompt_field(task), "response": reply, "meta": meta})
    return rows


def _two_replies(task: Task, rng: random.Random, mix: BehaviourMix) -> tuple[str, str, str, str]:
    first = mix.sample(task, rng)
    second = first
    while second == first:  # two different behaviours: real pairs rarely compare near-duplicates
        second = mix.sample(task, rng)
    return first, sample_reply(task, first, rng), second, sample_reply(task, second, rng)


def _scored_pairs(
    rng: random.Random, draw: Draw, n: int, held_out: bool, mix: BehaviourMix
) -> list[tuple[Task, str, str, ScoredPair]]:
    out = []
    for _ in range(n):
        task = draw(rng, held_out)
        b_a, a, b_b, b = _two_replies(task, rng, mix)
        out.append((task, b_a, b_b, (judge_task(task, a).score, a, judge_task(task, b).score, b)))
    return out


def _label_pairs(
    pairs: list[tuple[Task, str, str, ScoredPair]],
    annotators: list[Annotator],
    rng: random.Random,
    held_out: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pref_rows, hh_rows = [], []
    for task, b_a, b_b, (g_a, a, g_b, b) in pairs:
        annotator = rng.choice(annotators)
        pref = simulate_preference(task.prompt, a, b, annotator, rng, gold_a=g_a, gold_b=g_b)
        a_wins = pref.chosen == a
        chosen, rejected = pref.chosen, pref.rejected
        meta = {
            "family": task.family,
            "kind": task.kind,
            "annotator": annotator.name,
            "p_chosen": pref.p_first if a_wins else 1 - pref.p_first,
            "chosen_gold": pref.chosen_gold,
            "rejected_gold": pref.rejected_gold,
            "chosen_behaviour": b_a if a_wins else b_b,
            "rejected_behaviour": b_b if a_wins else b_a,
            "held_out": held_out,
        }
        pref_rows.append(
            {"prompt": _prompt_field(task), "chosen": chosen, "rejected": rejected, "meta": meta}
        )
        hh_rows.append(
            {"chosen": hh_transcript(task, chosen), "rejected": hh_transcript(task, rejected)}
        )
    return pref_rows, hh_rows


def _ranked_rows(
    rng: random.Random, draw: Draw, n: int, k: int, held_out: bool, annotators: list[Annotator]
) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        task = draw(rng, held_out)
        options = list(behaviours_for(task))
        behaviours = rng.sample(options, min(k, len(options)))
        replies = [sample_reply(task, b, rng) for b in behaviours]
        golds = [judge_task(task, r).score for r in replies]
        annotator = rng.choice(annotators)
        order = annotator.rank(golds, replies, rng)
        meta = {
            "family": task.family,
            "kind": task.kind,
            "gold": [golds[i] for i in order],
            "behaviours": [behaviours[i] for i in order],
            "annotator": annotator.name,
            "held_out": held_out,
        }
        rows.append(
            {"prompt": _prompt_field(task), "responses": [replies[i] for i in order], "meta": meta}
        )
    return rows


def _prompt_rows(
    rng: random.Random, draw: Draw, n: int, held_out: bool, family: str | None = None
) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        task = draw(rng, held_out, family)
        meta = {"family": task.family, "kind": task.kind, "held_out": held_out, "ideal": task.ideal}
        rows.append({"prompt": _prompt_field(task), "meta": meta})
    return rows


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    """Every string of the written rows except meta (tokenizer training text)."""
    out: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key == "meta":
                continue
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, list):
                out.extend(v["content"] if isinstance(v, dict) else v for v in value)
    return out


def make_world(out_dir: str | Path, seed: int = 0, **sizes: Any) -> dict[str, Any]:
    """Write the simulated world (see the module docstring) to `out_dir` and return the manifest.

    `sizes` overrides `DEFAULT_SIZES` (unknown names are an error).
    """
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise TypeError(
            f"make_world: unknown size option(s) {sorted(unknown)}; known: {sorted(DEFAULT_SIZES)}"
        )
    cfg = {**DEFAULT_SIZES, **sizes}
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = Split.from_seed(seed)
    weights = {**FAMILY_WEIGHTS, **cfg["family_weights"]}
    if (
        set(weights) != set(FAMILY_WEIGHTS)
        or min(weights.values()) < 0
        or not sum(weights.values()) > 0
    ):
        raise ValueError(
            f"family_weights: give non-negative weights for families among {sorted(FAMILY_WEIGHTS)}, "
            f"not all zero; got {cfg['family_weights']}"
        )

    def draw(rng: random.Random, held_out: bool, family: str | None = None) -> Task:
        return sample_task(rng, split, held_out, family, weights=weights)

    sft_mix = BehaviourMix(ideal=cfg["sft_ideal"])
    pref_mix = BehaviourMix(ideal=cfg["pref_ideal"])

    # Separate streams per output, so changing one size does not reshuffle the other files.
    def stream(name: str) -> random.Random:
        return random.Random(f"{seed}-{name}")

    files: dict[str, list[dict[str, Any]]] = {}
    files["sft/train"] = _sft_rows(stream("sft-train"), draw, cfg["n_sft"], sft_mix)
    files["sft/validation"] = _sft_rows(stream("sft-validation"), draw, cfg["n_sft_val"], sft_mix)

    pair_sets = {
        "train": _scored_pairs(stream("pref-train"), draw, cfg["n_pref"], False, pref_mix),
        "validation": _scored_pairs(
            stream("pref-validation"), draw, cfg["n_pref_val"], False, pref_mix
        ),
        "test": _scored_pairs(stream("pref-test"), draw, cfg["n_pref_test"], True, pref_mix),
    }
    train_scored = [p[3] for p in pair_sets["train"]] or [
        p[3] for s in pair_sets.values() for p in s
    ]
    temperature = calibrate_temperature(
        train_scored, cfg["agreement"], cfg["n_annotators"], cfg["length_bias_std"], seed
    )
    annotators = make_annotators(cfg["n_annotators"], temperature, cfg["length_bias_std"], seed)
    for name, pairs in pair_sets.items():
        pref_rows, hh_rows = _label_pairs(
            pairs, annotators, stream(f"label-{name}"), name == "test"
        )
        files[f"preferences/{name}"] = pref_rows
        files[f"hh/{name}"] = hh_rows

    files["ranked/train"] = _ranked_rows(
        stream("ranked-train"), draw, cfg["n_ranked"], cfg["ranked_k"], False, annotators
    )
    files["ranked/test"] = _ranked_rows(
        stream("ranked-test"), draw, cfg["n_ranked_test"], cfg["ranked_k"], True, annotators
    )
    files["prompts/train"] = _prompt_rows(stream("prompts-train"), draw, cfg["n_prompts"], False)
    files["prompts/validation"] = _prompt_rows(
        stream("prompts-validation"), draw, cfg["n_val_prompts"], False
    )
    files["prompts/eval"] = _prompt_rows(stream("prompts-eval"), draw, cfg["n_eval_prompts"], True)
    # Left out of the tokenizer's text below, so adding this set leaves every other file as is.
    extra = {}
    if cfg["n_eval_harmful"]:
        extra["prompts/eval_harmful"] = _prompt_rows(
            stream("prompts-eval-harmful"), draw, cfg["n_eval_harmful"], True, "harmful"
        )

    for name, rows in {**files, **extra}.items():
        _write_jsonl(out / f"{name}.jsonl", rows)

    if cfg["vocab_size"]:
        texts = [
            t for name, rows in files.items() if not name.startswith("hh/") for t in _texts(rows)
        ]
        train_tokenizer(texts, vocab_size=cfg["vocab_size"]).save_pretrained(str(out / "tokenizer"))

    labelled = files["preferences/train"]
    decided = [r for r in labelled if r["meta"]["chosen_gold"] != r["meta"]["rejected_gold"]]
    manifest = {
        "rlhfkit_version": rlhfkit.__version__,
        "seed": seed,
        "sizes": cfg,
        "counts": {name: len(rows) for name, rows in {**files, **extra}.items()},
        "families": {
            "sft/train": dict(Counter(r["meta"]["family"] for r in files["sft/train"])),
            "prompts/eval": dict(Counter(r["meta"]["family"] for r in files["prompts/eval"])),
        },
        "sft_behaviours": dict(Counter(r["meta"]["behaviour"] for r in files["sft/train"])),
        "annotators": {
            "temperature": temperature,
            "length_biases": {a.name: a.length_bias for a in annotators},
            "target_agreement": cfg["agreement"],
            "expected_agreement": expected_agreement(train_scored, annotators),
            "measured_agreement": annotator_agreement(train_scored, annotators, seed),
            "expected_gold_win_rate": sum(gold_win_rate(train_scored, a) for a in annotators)
            / len(annotators),
            "measured_gold_win_rate": (
                sum(r["meta"]["chosen_gold"] > r["meta"]["rejected_gold"] for r in decided)
                / len(decided)
                if decided
                else None
            ),
        },
        "split": split.to_manifest(),
        "generation_seconds": round(time.perf_counter() - start, 3),
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest
