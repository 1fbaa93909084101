"""Pairwise judges asked in both orders: a first-position judge gives 50 % and 100 %
inconsistency, an additively biased judge gives the unbiased answer; the OpenAI-compatible
client against a local HTTP server on 127.0.0.1; the local-model judge against a hand-computed
softmax; templates; `rlhfkit eval run` with an API judge saving every judgment."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.eval.judges import judge_both_orders
from rlhfkit.rollout.llm_judge import (
    DEFAULT_TEMPLATE,
    LocalLMJudge,
    OpenAIJudge,
    load_template,
    render_dialogue,
)
from rlhfkit.types import Message, user

PROMPTS = [user(f"question {i}") for i in range(6)]
GOOD = [f"good answer {i}" for i in range(6)]
BAD = [f"bad {i}" for i in range(6)]


def test_a_judge_that_always_picks_position_a_is_a_coin_with_full_inconsistency():
    report = judge_both_orders(lambda p, a, b: 1.0, PROMPTS, GOOD, BAD)
    assert report.win_rate.rate == 0.5 and report.win_rate.ties == 6
    assert report.inconsistency == 1.0
    assert all(j.p_ab == 1.0 and j.p_ba == 1.0 for j in report.judgments)


def test_an_additive_position_bias_cancels_to_the_unbiased_answer():
    def unbiased(prompt, a, b):  # prefers the longer reply with probability 0.7
        return 0.5 if len(a) == len(b) else (0.7 if len(a) > len(b) else 0.3)

    def biased(prompt, a, b):
        return unbiased(prompt, a, b) + 0.25  # favours whatever is shown first

    replies_a = GOOD[:3] + BAD[3:]
    replies_b = BAD[:3] + GOOD[3:]
    fair = judge_both_orders(unbiased, PROMPTS, replies_a, replies_b)
    report = judge_both_orders(biased, PROMPTS, replies_a, replies_b)
    assert [j.outcome for j in report.judgments] == pytest.approx([0.7] * 3 + [0.3] * 3)
    assert [j.outcome for j in report.judgments] == pytest.approx(
        [j.outcome for j in fair.judgments]
    )
    assert report.win_rate.rate == pytest.approx(fair.win_rate.rate) == pytest.approx(0.5)
    assert report.inconsistency == 1.0 and fair.inconsistency == 0.0  # 0.95 / 0.55: both "first"
    one_sided = judge_both_orders(biased, PROMPTS, GOOD, BAD)
    assert one_sided.win_rate.rate == pytest.approx(0.7)  # the unbiased preference


class _Judge(http.server.BaseHTTPRequestHandler):
    """A fake chat-completions server: prefers the reply with "good", answers in words."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        text = body["messages"][0]["content"]
        a = text.split("[Reply A]")[1].split("[Reply B]")[0]
        verdict = "A" if "good" in a else "B"
        if "tie" in text:
            verdict = "cannot decide"
        answer = {"choices": [{"message": {"role": "assistant", "content": f"Reply {verdict}."}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Judge.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_compatible_judge_over_http(server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test")
    judge = OpenAIJudge(server, "judge-model", api_key_env="MY_JUDGE_KEY")
    report = judge_both_orders(judge, PROMPTS, GOOD, BAD)
    assert report.win_rate.rate == 1.0 and report.inconsistency == 0.0
    assert len(_Judge.seen) == 12
    req = _Judge.seen[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["model"] == "judge-model" and req["temperature"] == 0
    assert "question 0" in req["messages"][0]["content"]
    j = report.judgments[0]
    assert (j.raw_ab, j.raw_ba) == ("Reply A.", "Reply B.")
    assert judge(user("a tie?"), "x", "y") == 0.5  # no letter in the answer: a tie


def test_templates(tmp_path):
    text = load_template()
    assert not text.startswith("#") and "{reply_a}" in text
    assert DEFAULT_TEMPLATE.read_text().startswith("#")
    bad = tmp_path / "t.txt"
    bad.write_text("# doc\nno placeholders\n")
    with pytest.raises(ValueError, match="placeholder"):
        load_template(bad)
    dialogue = (Message("user", "hi"), Message("assistant", "hello"), Message("user", "2+2?"))
    assert render_dialogue(dialogue) == "User: hi\nAssistant: hello\nUser: 2+2?"
    assert render_dialogue(user("2+2?")) == "2+2?"


def test_local_lm_judge_is_the_softmax_over_a_and_b(tmp_path):
    from rlhfkit.models.tiny import build_tiny_model
    from rlhfkit.sim.tokenizer import train_tokenizer

    tok = train_tokenizer(["A B question good answer bad reply"] * 20, vocab_size=200,
                          min_frequency=1)  # fmt: skip
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0).eval()
    judge = LocalLMJudge(model, tok, "{prompt}|{reply_a}|{reply_b}|", batch_size=2)
    items = [
        (PROMPTS[0], GOOD[0], BAD[0]),
        (PROMPTS[1], "a much longer good answer", "bad"),  # the first batch is left-padded
        (PROMPTS[2], BAD[2], GOOD[2]),  # a second batch
    ]
    batched = judge.judge_many(items)
    for (p, a, b), verdict in zip(items, batched, strict=True):
        ids = torch.tensor([tok.encode(judge.text(p, a, b))])
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        pa = sum(float(probs[i]) for i in judge.choices[0])
        pb = sum(float(probs[i]) for i in judge.choices[1])
        assert verdict.p_a == pytest.approx(
            pa / (pa + pb), abs=1e-5
        )  # left padding changes nothing
    assert judge.text(*items[0]).count("question 0|good answer 0|bad 0|") == 1


def test_eval_run_with_an_api_judge_saves_every_judgment(server, tmp_path):
    from transformers import AutoTokenizer

    from rlhfkit.eval.cli import app
    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim import make_world

    make_world(tmp_path / "w", seed=1, n_sft=5, n_sft_val=2, n_pref=5, n_pref_val=2,
               n_pref_test=2, n_ranked=2, n_ranked_test=2, n_prompts=4, n_eval_prompts=5,
               vocab_size=300)  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tmp_path / "w" / "tokenizer")
    for name, seed in (("a", 0), ("b", 1)):
        model = build_tiny_model("gpt2", "micro", tokenizer=tok, seed=seed)
        save_tiny_model(model, tmp_path / name, tok)
    result = CliRunner().invoke(app, [
        "run", "--policy", f"a={tmp_path / 'a'}", "--policy", f"b={tmp_path / 'b'}",
        "--prompts", str(tmp_path / "w" / "prompts" / "eval.jsonl"), "--max-new-tokens", "6",
        "--judge-url", server, "--judge-api-model", "m", "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "eval_summary.json").read_text())
    judged = summary["b"]["judge_win_rate_vs_a"]
    assert judged["n"] == 5 and "position_inconsistency" in judged
    rows = (tmp_path / "out" / "judgments_b_vs_a.jsonl").read_text().splitlines()
    assert len(rows) == 5 and len(_Judge.seen) == 10
    row = json.loads(rows[0])
    for key in ("prompt", "reply_a", "reply_b", "raw_a_first", "raw_b_first", "outcome"):
        assert key in row
    assert "LLM judge, both orders" in result.output
