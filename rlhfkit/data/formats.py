"""Row parsers: one published schema in, one record out (or a `RowError` naming the field).

Each parser turns a row (a dict) into its *native* record: HH, SHP, summarize comparisons and
WebGPT give `PreferencePair`s; summarize axis ratings give one rated summary per row, grouped into
`RankedList`s by post once the whole file is read; generic rows give whichever record their
fields describe. The readers then convert native records to the task asked for.

Implementation details and sources:

- HH-RLHF (Bai et al. 2022, github.com/anthropics/hh-rlhf): each of `chosen`/`rejected` is a
  transcript `"\\n\\nHuman: …\\n\\nAssistant: …"`. Both are split into turns at the two markers;
  the prompt is the longest run of identical leading turns that ends just before an Assistant
  turn both transcripts have, and each reply is the raw text from that Assistant turn to the end.
  So a reply that runs on into a new `Human:` turn (the model under test wrote one; it happens in
  the real data) is kept verbatim and counted in `notes`; a row whose replies are identical or
  empty is a bad row.
- Stanford SHP (Ethayarajh et al. 2022, huggingface.co/datasets/stanfordnlp/SHP): `history` is
  the post, `human_ref_A`/`human_ref_B` the comments, `labels` = 1 when A is preferred,
  `score_ratio` the ratio of the scores; option `min_score_ratio` keeps only clear preferences
  (the SHP card suggests ratio >= 2).
- OpenAI summarize-from-feedback (Stiennon et al. 2020, github.com/openai/summarize-from-feedback):
  comparisons `{"info": {...}, "summaries": [{"text", "policy"}, ×2], "choice": 0|1}`; axis rows
  `{"info": {...}, "summary": {"text", "policy", "axes": {"overall", "accuracy", ...}}}`. The prompt
  is the paper's query format `SUBREDDIT: r/…\\nTITLE: …\\nPOST: …\\nTL;DR:` (`ARTICLE: …` for
  CNN/DM rows).
- WebGPT comparisons (Nakano et al. 2021, huggingface.co/datasets/openai/webgpt_comparisons):
  `question.full_text`, `answer_0`/`answer_1`, `score_0`/`score_1`; the higher score wins, equal
  scores are ties (dropped unless `keep_ties=True`; then `meta["tie"]` is True), and citation
  markers such as `[1]` or `[2, 3]` are stripped (`strip_citations=True`) since the answers are
  shown without the quotes.
- LLaMA-Factory alpaca rows (github.com/hiyouga/LLaMA-Factory, `data/README.md`): the user turn
  is `instruction`, then `input` on a new line when there is one (LLaMA-Factory's own join),
  after the `history` pairs `[[query, answer], ...]` and an optional `system`; `output` text is
  a demonstration; `output: [chosen, rejected]` (its "ranking" files, e.g. oasst_rm_zh) is a
  pair and a longer list a ranked list, best first; `chosen`/`rejected` text is a pair.
- LLaMA-Factory sharegpt rows: `conversations`, a list of `{"from", "value"}` turns (`human` /
  `user`, `gpt` / `assistant`, `system`; `{"role", "content"}` turns are read too) and an
  optional `system`; ending with the assistant it is a demonstration of that turn, and with
  `chosen`/`rejected` (a turn each, or text) it is a pair after the conversation. Tool turns
  (`function_call`, `observation`) are bad rows: rlhfkit does not train tool use.
- Generic rows: canonical fields `prompt` (text or a list of `{"role","content"}` messages),
  `messages`, `system`, `response` (or TRL's `completion`), `chosen`, `rejected` (text, or message
  lists in the conversational form), `responses` (best first) with optional `scores` (higher is
  better; the list is sorted by score), `margin`, `label` (with `completion` or `response`:
  TRL's unpaired preference row, true = desirable; true/false, 1/0 or their strings);
  `columns` maps a canonical name to the file's column name. Fields not used are carried into `record.meta` (a `meta` object's keys are merged
  into it).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from rlhfkit.data.problems import RowError
from rlhfkit.types import (
    Dialogue,
    Message,
    PreferencePair,
    PromptRecord,
    RankedList,
    SFTExample,
    UnpairedExample,
)

FORMATS = ("hh", "shp", "summarize", "summarize_axis", "webgpt", "alpaca", "sharegpt", "generic")

NativeRecord = SFTExample | PreferencePair | RankedList | PromptRecord | UnpairedExample


@dataclass
class Context:
    """Per-read state a parser needs: where the row is from, options, special-case counts."""

    source: str  # "file:line"
    columns: dict[str, str]
    options: dict[str, Any]
    notes: dict[str, int]

    def note(self, reason: str) -> None:
        self.notes[reason] = self.notes.get(reason, 0) + 1


class Drop(Exception):
    """A row left out on purpose by an option (not a bad row); the reason is counted."""


@dataclass(frozen=True)
class RatedReply:
    """One summarize-from-feedback axis row, waiting to be grouped with its post's siblings."""

    key: str
    prompt: Dialogue
    text: str
    score: float
    source: str


# ---------------------------------------------------------------------------- field helpers


def text_field(value: Any, field: str, allow_empty: bool = False) -> str:
    """`value` as text, or a `RowError`: missing, not a string, empty, or not encodable."""
    if value is None:
        raise RowError(field, "missing")
    if not isinstance(value, str):
        raise RowError(field, f"expected text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON escapes can smuggle lone surrogates past the decoder; no tokenizer takes them.
        raise RowError(field, "text holds undecodable characters (lone surrogate)") from None
    if not allow_empty and not value.strip():
        raise RowError(field, "empty text")
    return value


def _list_field(value: Any, field: str) -> list[Any]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:  # CSV cells carry lists as JSON text
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError(field, f"invalid JSON list: {e.msg}") from None
    if not isinstance(value, (list, tuple)):
        raise RowError(field, f"expected a list, got {type(value).__name__}")
    return list(value)


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or value is None:
        raise RowError(field, f"expected a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RowError(field, f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise RowError(field, f"expected a finite number, got {value!r}")
    return x


_LABELS = {"true": True, "false": False, "1": True, "0": False}


def _label(value: Any, field: str) -> bool:
    """An unpaired row's label: JSON true/false, 1/0, or those as text (CSV cells)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    raise RowError(field, f"expected true or false (desirable or not), got {value!r}")


_ROLE_ALIASES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user"}


def messages_field(value: Any, field: str) -> Dialogue:
    """A list of `{"role", "content"}` objects as a `Dialogue` (`human` is read as `user`)."""
    out = []
    for i, m in enumerate(_list_field(value, field)):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RowError(
                where, f"expected an object with role and content, got {type(m).__name__}"
            )
        role = m.get("role")
        if not isinstance(role, str) or role.lower() not in _ROLE_ALIASES:
            raise RowError(f"{where}.role", f"expected system, user or assistant, got {role!r}")
        content = text_field(m.get("content"), f"{where}.content", allow_empty=True)
        out.append(Message(_ROLE_ALIASES[role.lower()], content))  # type: ignore[arg-type]
    if not out:
        raise RowError(field, "empty message list")
    return tuple(out)


def prompt_field(value: Any, field: str) -> Dialogue:
    """A prompt given as text (one user turn) or as a message list."""
    if isinstance(value, (list, tuple)):
        return messages_field(value, field)
    return (Message("user", text_field(value, field)),)


def _meta(row: dict[str, Any], used: set[str]) -> dict[str, Any]:
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
    meta.update({k: v for k, v in row.items() if k not in used and k != "meta"})
    return meta


def check_pair(pair: PreferencePair) -> PreferencePair:
    """The checks every preference pair gets, whatever its format."""
    if pair.chosen.strip() == pair.rejected.strip():
        raise RowError("rejected", "identical to chosen")
    return pair


def check_ranked(ranked: RankedList, field: str = "responses") -> RankedList:
    if len(ranked.responses) < 2:
        raise RowError(field, f"need at least 2 responses, got {len(ranked.responses)}")
    seen: dict[str, int] = {}
    for i, r in enumerate(ranked.responses):
        j = seen.setdefault(r.strip(), i)
        if j != i:
            raise RowError(f"{field}[{i}]", f"identical to {field}[{j}]")
    return ranked


# ---------------------------------------------------------------------------- HH-RLHF

_HH_MARKER = re.compile(r"\n\nHuman:|\n\nAssistant:")


def _hh_turns(text: str, field: str) -> list[tuple[str, str, int]]:
    """Split a transcript into `(role, content, content_start)` turns."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text  # some copies drop the leading blank line; offsets shift by 2
        shift = 2
    else:
        shift = 0
    marks = list(_HH_MARKER.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        raise RowError(field, "not an HH transcript: expected it to start with '\\n\\nHuman:'")
    turns = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        role = "user" if m.group() == "\n\nHuman:" else "assistant"
        turns.append((role, text[m.end() : end], m.end() - shift))
    return turns


def parse_hh(row: dict[str, Any], ctx: Context) -> PreferencePair:
    chosen = text_field(row.get("chosen"), "chosen")
    rejected = text_field(row.get("rejected"), "rejected")
    if chosen == rejected:
        raise RowError("rejected", "identical to chosen")
    tc, tr = _hh_turns(chosen, "chosen"), _hh_turns(rejected, "rejected")
    n = 0
    while n < min(len(tc), len(tr)) and tc[n][:2] == tr[n][:2]:
        n += 1
    # The reply starts at the last Assistant turn inside the shared prefix, or at turn n when
    # both transcripts have an Assistant turn there (the usual case: they differ only in it).
    k = n if n < min(len(tc), len(tr)) and tc[n][0] == tr[n][0] == "assistant" else None
    if k is None:
        k = next((i for i in range(n - 1, -1, -1) if tc[i][0] == "assistant"), None)
    if k is None:
        raise RowError("chosen", "no Assistant turn shared by chosen and rejected")
    prompt = tuple(Message(role, content.strip()) for role, content, _ in tc[:k])  # type: ignore[arg-type]
    if not any(m.role == "user" for m in prompt):
        raise RowError("chosen", "no Human turn before the reply")
    reply_c = chosen[tc[k][2] :].strip()
    reply_r = rejected[tr[k][2] :].strip()
    if not reply_c:
        raise RowError("chosen", "empty reply after the last 'Assistant:'")
    if not reply_r:
        raise RowError("rejected", "empty reply after the last 'Assistant:'")
    if k < len(tc) - 1 or k < len(tr) - 1:
        ctx.note("hh: a reply runs on into further turns (kept verbatim)")
    if len(prompt) > 1:
        ctx.note("hh: multi-turn prompt")
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
    return check_pair(PreferencePair(prompt, reply_c, reply_r, source=ctx.source, meta=meta))


def split_hh_transcript(text: str) -> SFTExample:
    """One HH transcript as a demonstration: every turn before the last Assistant turn is the
    prompt, that turn's text is the reply. Raises `RowError` on a malformed transcript."""
    turns = _hh_turns(text_field(text, "text"), "text")
    k = next((i for i in range(len(turns) - 1, -1, -1) if turns[i][0] == "assistant"), None)
    if k is None or k == 0:
        raise RowError("text", "needs a Human turn followed by an Assistant turn")
    prompt = tuple(Message(r, c.strip()) for r, c, _ in turns[:k])  # type: ignore[arg-type]
    return SFTExample(prompt, text_field(turns[k][1].strip(), "text"))


# ---------------------------------------------------------------------------- SHP


def parse_shp(row: dict[str, Any], ctx: Context) -> PreferencePair:
    post = text_field(row.get("history"), "history")
    a = text_field(row.get("human_ref_A"), "human_ref_A")
    b = text_field(row.get("human_ref_B"), "human_ref_B")
    label = row.get("labels")
    if label not in (0, 1) or isinstance(label, bool):
        raise RowError("labels", f"expected 0 or 1, got {label!r}")
    meta: dict[str, Any] = {k: row[k] for k in ("post_id", "domain") if k in row}
    min_ratio = ctx.options.get("min_score_ratio")
    if "score_ratio" in row or min_ratio is not None:
        ratio = _number(row.get("score_ratio"), "score_ratio")
        meta["score_ratio"] = ratio
        if min_ratio is not None and ratio < min_ratio:
            raise Drop(f"shp: score_ratio below {min_ratio}")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    pair = PreferencePair((Message("user", post),), chosen, rejected, source=ctx.source, meta=meta)
    return check_pair(pair)


# ---------------------------------------------------------------------------- summarize


def _summarize_prompt(info: Any) -> tuple[str, Dialogue]:
    if not isinstance(info, dict):
        raise RowError("info", "missing" if info is None else "expected an object")
    key = str(info.get("id", ""))
    if info.get("post") is not None:
        post = text_field(info.get("post"), "info.post")
        title = text_field(info.get("title"), "info.title", allow_empty=True)
        sub = info.get("subreddit") or ""
        text = f"SUBREDDIT: r/{sub}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
    else:
        article = text_field(info.get("article"), "info.article")
        text = f"ARTICLE: {article}\nTL;DR:"
    return key or text, (Message("user", text),)


def parse_summarize(row: dict[str, Any], ctx: Context) -> PreferencePair:
    _, prompt = _summarize_prompt(row.get("info"))
    summaries = _list_field(row.get("summaries"), "summaries")
    if len(summaries) != 2:
        raise RowError("summaries", f"expected 2 summaries, got {len(summaries)}")
    texts = []
    for i, s in enumerate(summaries):
        if not isinstance(s, dict):
            raise RowError(f"summaries[{i}]", "expected an object with a text field")
        texts.append(text_field(s.get("text"), f"summaries[{i}].text").strip())
    choice = row.get("choice")
    if choice not in (0, 1) or isinstance(choice, bool):
        raise RowError("choice", f"expected 0 or 1, got {choice!r}")
    meta: dict[str, Any] = {"policies": [s.get("policy") for s in summaries]}
    for k in ("worker", "batch", "split"):
        if k in row:
            meta[k] = row[k]
    if isinstance(row.get("extra"), dict) and "confidence" in row["extra"]:
        meta["confidence"] = row["extra"]["confidence"]
    pair = PreferencePair(prompt, texts[choice], texts[1 - choice], source=ctx.source, meta=meta)
    return check_pair(pair)


def parse_summarize_axis(row: dict[str, Any], ctx: Context) -> RatedReply:
    key, prompt = _summarize_prompt(row.get("info"))
    summary = row.get("summary")
    if not isinstance(summary, dict):
        raise RowError("summary", "missing" if summary is None else "expected an object")
    text = text_field(summary.get("text"), "summary.text").strip()
    axis = ctx.options.get("axis", "overall")
    axes = summary.get("axes")
    if not isinstance(axes, dict):
        raise RowError("summary.axes", "missing" if axes is None else "expected an object")
    score = _number(axes.get(axis), f"summary.axes.{axis}")
    return RatedReply(key, prompt, text, score, ctx.source)


def group_rated(rated: list[RatedReply], ctx: Context) -> list[RankedList]:
    """Axis rows of the same post become one `RankedList`, best score first (ties keep file
    order); posts with fewer than two distinct rated summaries are dropped and counted."""
    groups: dict[str, list[RatedReply]] = defaultdict(list)
    for r in rated:
        groups[r.key].append(r)
    out = []
    for items in groups.values():
        unique: dict[str, RatedReply] = {}
        for r in items:
            unique.setdefault(r.text, r)
        ranked = sorted(unique.values(), key=lambda r: -r.score)
        if len(ranked) < 2:
            ctx.note("summarize_axis: post with fewer than 2 distinct rated summaries (dropped)")
            continue
        out.append(
            RankedList(
                ranked[0].prompt,
                tuple(r.text for r in ranked),
                tuple(r.score for r in ranked),
                source=",".join(r.source for r in ranked),
            )
        )
    return out


# ---------------------------------------------------------------------------- WebGPT

_CITATION = re.compile(r"\s?\[\d+(?:\s*[,–-]\s*\d+)*\]")


def strip_citations(text: str) -> str:
    """Remove WebGPT citation markers: `[1]`, `[2, 3]`, `[4-6]` and the space before them."""
    return _CITATION.sub("", text)


def parse_webgpt(row: dict[str, Any], ctx: Context) -> PreferencePair:
    q = row.get("question")
    question = q.get("full_text") if isinstance(q, dict) else q
    question = text_field(question, "question.full_text" if isinstance(q, dict) else "question")
    answers = []
    for i in (0, 1):
        a = text_field(row.get(f"answer_{i}"), f"answer_{i}")
        answers.append(
            strip_citations(a).strip() if ctx.options.get("strip_citations", True) else a
        )
    s0, s1 = _number(row.get("score_0"), "score_0"), _number(row.get("score_1"), "score_1")
    meta: dict[str, Any] = {"scores": (s0, s1)}
    if s0 == s1:
        if not ctx.options.get("keep_ties", False):
            raise Drop("webgpt: tie (dropped; keep_ties=True keeps it)")
        meta["tie"] = True
    chosen, rejected = (answers[0], answers[1]) if s0 >= s1 else (answers[1], answers[0])
    for field, text in (("answer_0", answers[0]), ("answer_1", answers[1])):
        if not text:
            raise RowError(field, "empty after stripping citation markers")
    return check_pair(
        PreferencePair((Message("user", question),), chosen, rejected, source=ctx.source, meta=meta)
    )


# ---------------------------------------------------------------------------- generic

CANONICAL = (
    "prompt",
    "messages",
    "system",
    "response",
    "completion",
    "chosen",
    "rejected",
    "responses",
    "scores",
    "margin",
    "label",
)


def _reply(value: Any, field: str) -> tuple[Dialogue | None, str]:
    """A reply as text, or (conversational form) a message list ending in an assistant turn:
    then the turns before it are returned as the prompt it continues."""
    if isinstance(value, (list, tuple)):
        msgs = messages_field(value, field)
        if msgs[-1].role != "assistant":
            raise RowError(
                f"{field}[{len(msgs) - 1}].role", "the last message must be the assistant's"
            )
        text = text_field(msgs[-1].content, f"{field}[{len(msgs) - 1}].content")
        return (msgs[:-1] or None), text
    return None, text_field(value, field)


def parse_generic(row: dict[str, Any], ctx: Context) -> NativeRecord:
    col = {name: ctx.columns.get(name, name) for name in CANONICAL}
    has = {name for name in CANONICAL if row.get(col[name]) is not None}
    used = {col[n] for n in has}
    meta = _meta(row, used)

    prompt: Dialogue | None = None
    if "prompt" in has:
        prompt = prompt_field(row[col["prompt"]], col["prompt"])
    elif "messages" in has:
        prompt = messages_field(row[col["messages"]], col["messages"])
    if "system" in has and prompt is not None:
        prompt = (Message("system", text_field(row[col["system"]], col["system"])), *prompt)

    if "responses" in has:
        if prompt is None:
            raise RowError(col["prompt"], "missing")
        responses = [
            text_field(r, f"{col['responses']}[{i}]")
            for i, r in enumerate(_list_field(row[col["responses"]], col["responses"]))
        ]
        scores = None
        if "scores" in has:
            raw = _list_field(row[col["scores"]], col["scores"])
            if len(raw) != len(responses):
                raise RowError(col["scores"], f"{len(raw)} scores for {len(responses)} responses")
            s = [_number(x, f"{col['scores']}[{i}]") for i, x in enumerate(raw)]
            order = sorted(range(len(s)), key=lambda i: -s[i])  # stable: ties keep file order
            responses, scores = [responses[i] for i in order], tuple(s[i] for i in order)
        ranked = RankedList(prompt, tuple(responses), scores, source=ctx.source, meta=meta)
        return check_ranked(ranked, col["responses"])

    if "chosen" in has or "rejected" in has:
        for name in ("chosen", "rejected"):
            if name not in has:
                raise RowError(col[name], "missing")
        pc, chosen = _reply(row[col["chosen"]], col["chosen"])
        pr, rejected = _reply(row[col["rejected"]], col["rejected"])
        if pc != pr:
            raise RowError(
                col["rejected"], "its dialogue differs from the chosen one's before the reply"
            )
        if prompt is None:
            prompt = pc
        elif pc is not None:
            prompt = prompt + pc
        if prompt is None:
            raise RowError(col["prompt"], "missing")
        margin = _number(row[col["margin"]], col["margin"]) if "margin" in has else None
        return check_pair(PreferencePair(prompt, chosen, rejected, margin, ctx.source, meta))

    reply_key = "response" if "response" in has else "completion" if "completion" in has else ""
    if reply_key:  # `completion`: TRL's prompt-completion form (text, or assistant messages)
        before, response = _reply(row[col[reply_key]], col[reply_key])
        if prompt is None:
            raise RowError(col["prompt"], "missing")
        if before is not None:
            prompt = prompt + before
        if "label" in has:
            label = _label(row[col["label"]], col["label"])
            return UnpairedExample(prompt, response, label, source=ctx.source, meta=meta)
        return SFTExample(prompt, response, source=ctx.source, meta=meta)

    if prompt is not None:
        if "prompt" not in has and prompt[-1].role == "assistant":
            # A conversation ending with the assistant is a demonstration of its last turn.
            if len(prompt) < 2:
                raise RowError(col["messages"], "a lone assistant message has no prompt")
            last = len(prompt) - 1
            response = text_field(prompt[-1].content, f"{col['messages']}[{last}].content")
            return SFTExample(prompt[:-1], response, source=ctx.source, meta=meta)
        return PromptRecord(prompt, source=ctx.source, meta=meta)

    raise RowError(
        "<row>",
        f"no known fields (found {sorted(row)[:8]}); expected some of {list(CANONICAL)}"
        " or a columns= mapping",
    )


# ---------------------------------------------------------------------------- LLaMA-Factory

ALPACA = ("instruction", "input", "output", "history")
SHAREGPT = ("conversations",)
COLUMN_NAMES = (*CANONICAL, *ALPACA, *SHAREGPT)  # the names a `columns` mapping may use

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def _col(ctx: Context, name: str) -> str:
    return ctx.columns.get(name, name)


def _system_and_history(row: dict[str, Any], ctx: Context) -> list[Message]:
    turns: list[Message] = []
    system = row.get(_col(ctx, "system"))
    if system:
        turns.append(Message("system", text_field(system, _col(ctx, "system"))))
    history = row.get(_col(ctx, "history"))
    if history:
        name = _col(ctx, "history")
        for i, pair in enumerate(_list_field(history, name)):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise RowError(f"{name}[{i}]", "expected a [query, answer] pair")
            turns.append(Message("user", text_field(pair[0], f"{name}[{i}][0]")))
            turns.append(Message("assistant", text_field(pair[1], f"{name}[{i}][1]")))
    return turns


def parse_alpaca(row: dict[str, Any], ctx: Context) -> NativeRecord:
    names = {n: _col(ctx, n) for n in ("instruction", "input", "output", "chosen", "rejected")}
    query = [text_field(row.get(names["instruction"]), names["instruction"])]
    extra = row.get(names["input"])
    if extra is not None and text_field(extra, names["input"], allow_empty=True).strip():
        query.append(extra)
    prompt = (*_system_and_history(row, ctx), Message("user", "\n".join(query)))
    used = {_col(ctx, n) for n in (*ALPACA, "system", "chosen", "rejected")}
    meta = _meta(row, used)
    if row.get(names["chosen"]) is not None or row.get(names["rejected"]) is not None:
        chosen = text_field(row.get(names["chosen"]), names["chosen"])
        rejected = text_field(row.get(names["rejected"]), names["rejected"])
        return check_pair(PreferencePair(prompt, chosen, rejected, source=ctx.source, meta=meta))
    output = row.get(names["output"])
    if output is None or output == "":
        return PromptRecord(prompt, source=ctx.source, meta=meta)
    if isinstance(output, (list, tuple)):
        replies = tuple(text_field(r, f"{names['output']}[{i}]") for i, r in enumerate(output))
        ranked = check_ranked(
            RankedList(prompt, replies, source=ctx.source, meta=meta), names["output"]
        )
        if len(replies) == 2:  # LLaMA-Factory "ranking": [chosen, rejected]
            return PreferencePair(prompt, replies[0], replies[1], source=ctx.source, meta=meta)
        return ranked
    response = text_field(output, names["output"])
    return SFTExample(prompt, response, source=ctx.source, meta=meta)


def _sharegpt_turn(turn: Any, field: str) -> Message:
    if not isinstance(turn, dict):
        raise RowError(field, f"expected an object with from and value, got {type(turn).__name__}")
    role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
    role = turn.get(role_key)
    if not isinstance(role, str) or role.lower() not in _SHAREGPT_ROLES:
        raise RowError(
            f"{field}.{role_key}", f"expected human, gpt or system (no tool turns), got {role!r}"
        )
    content = text_field(turn.get(text_key), f"{field}.{text_key}")
    return Message(_SHAREGPT_ROLES[role.lower()], content)  # type: ignore[arg-type]


def parse_sharegpt(row: dict[str, Any], ctx: Context) -> NativeRecord:
    name = _col(ctx, "conversations")
    turns = [
        _sharegpt_turn(t, f"{name}[{i}]") for i, t in enumerate(_list_field(row.get(name), name))
    ]
    if not turns:
        raise RowError(name, "empty conversation")
    system = row.get(_col(ctx, "system"))
    if system and turns[0].role != "system":
        turns.insert(0, Message("system", text_field(system, _col(ctx, "system"))))
    used = {name, _col(ctx, "system"), _col(ctx, "chosen"), _col(ctx, "rejected")}
    meta = _meta(row, used)
    replies = {}
    for key in ("chosen", "rejected"):
        value = row.get(_col(ctx, key))
        if value is not None:
            replies[key] = (
                _sharegpt_turn(value, _col(ctx, key)).content
                if isinstance(value, dict)
                else text_field(value, _col(ctx, key))
            )
    prompt = tuple(turns)
    if replies:
        for key in ("chosen", "rejected"):
            if key not in replies:
                raise RowError(_col(ctx, key), "missing")
        if prompt[-1].role != "user":
            raise RowError(
                f"{name}[{len(prompt) - 1}]", "the turn before chosen/rejected must be the user's"
            )
        pair = PreferencePair(
            prompt, replies["chosen"], replies["rejected"], source=ctx.source, meta=meta
        )
        return check_pair(pair)
    if prompt[-1].role == "assistant":
        if not any(m.role == "user" for m in prompt[:-1]):
            raise RowError(name, "no user turn before the assistant's reply")
        return SFTExample(prompt[:-1], prompt[-1].content, source=ctx.source, meta=meta)
    return PromptRecord(prompt, source=ctx.source, meta=meta)


PARSERS = {
    "hh": parse_hh,
    "shp": parse_shp,
    "summarize": parse_summarize,
    "summarize_axis": parse_summarize_axis,
    "webgpt": parse_webgpt,
    "alpaca": parse_alpaca,
    "sharegpt": parse_sharegpt,
    "generic": parse_generic,
}


def format_for_columns(columns: dict[str, str]) -> str:
    """The format a `columns` mapping under `format="auto"` is meant for: alpaca when it names
    alpaca fields, sharegpt when it names `conversations`, else generic."""
    if any(name in ALPACA for name in columns):
        return "alpaca"
    if any(name in SHAREGPT for name in columns):
        return "sharegpt"
    return "generic"


def sniff_format(row: dict[str, Any]) -> str:
    """The format a row's fields identify (`generic` when none of the published ones)."""
    if "history" in row and "human_ref_A" in row:
        return "shp"
    if "summaries" in row and "choice" in row:
        return "summarize"
    if isinstance(row.get("summary"), dict) and "info" in row:
        return "summarize_axis"
    if "answer_0" in row and "answer_1" in row:
        return "webgpt"
    if "instruction" in row and ("output" in row or "chosen" in row):
        return "alpaca"
    if isinstance(row.get("conversations"), list):
        return "sharegpt"
    chosen = row.get("chosen")
    if (
        "prompt" not in row
        and isinstance(chosen, str)
        and chosen.lstrip(" ").startswith(("\n\nHuman:", "Human:"))
    ):
        return "hh"
    return "generic"
