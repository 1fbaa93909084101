"""Live chat comparisons: two replies from a local policy folder, generated off the request
thread; the chosen one continues the dialogue; the export holds every turn's comparison."""

from __future__ import annotations

import json
import time

from label_helpers import wait_for

from rlhfkit.data import read_preferences


def _project(env, policy, **extra):
    admin = env.client("admin")
    r = admin.post(
        "/api/projects",
        json={"name": f"chat-{time.monotonic_ns()}", "kind": "chat", "policy_a": str(policy),
              "max_new_tokens": 12, **extra},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def test_two_turn_chat_comparison(env, tiny_policy, tmp_path):
    project = _project(env, tiny_policy, mode="red_team")
    ann = env.client("ann1")
    chat = ann.post(f"/api/projects/{project['id']}/chats").json()
    assert chat["status"] == "human" and "MORE harmful" in chat["guidelines"]
    chosen = []
    for turn, text in enumerate(["Hello there!", "What is the capital of France?"]):
        started = time.monotonic()
        r = ann.post(f"/api/chats/{chat['chat']}/messages", json={"text": text})
        assert r.status_code == 202 and r.json()["status"] in ("generating", "choosing")
        assert time.monotonic() - started < 5  # answered before the model ran
        # a second message while the replies are pending is refused, not queued
        if r.json()["status"] == "generating":
            assert (
                ann.post(f"/api/chats/{chat['chat']}/messages", json={"text": "x"}).status_code
                == 409
            )
        view = wait_for(
            lambda: (
                (v := ann.get(f"/api/chats/{chat['chat']}").json())["status"]
                in ("choosing", "error")
                and v
            )
        )
        assert view["status"] == "choosing", view["error"]
        task = view["task"]
        assert [m["content"] for m in task["prompt"] if m["role"] == "user"][-1] == text
        assert len(task["candidates"]) == 2 and all(c["text"] for c in task["candidates"])
        pick = task["candidates"][turn]
        r = ann.post(
            f"/api/tasks/{task['task']}/judgment", json={"choice": pick["label"], "strength": 2}
        )
        assert r.status_code == 201
        chosen.append(pick["text"])
        view = ann.get(f"/api/chats/{chat['chat']}").json()
        assert view["status"] == "human" and view["messages"][-1] == {
            "role": "assistant",
            "content": pick["text"],
        }
    assert [m["role"] for m in view["messages"]] == ["user", "assistant"] * 2
    assert env.client("ann2").get(f"/api/chats/{chat['chat']}").status_code == 404

    rows = (
        env.client("admin").get(f"/api/projects/{project['id']}/export?format=pairs").json()["rows"]
    )
    assert len(rows) == 2
    # red-team: the picked (more harmful) reply is exported as rejected
    assert [r["rejected"] for r in rows] == chosen
    assert rows[1]["prompt"][1] == {"role": "assistant", "content": chosen[0]}
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_preferences(path).records) == 2
    hh = env.client("admin").get(f"/api/projects/{project['id']}/export?format=hh").json()["rows"]
    assert hh[1]["rejected"].startswith("\n\nHuman: Hello there!\n\nAssistant: ")


def test_a_broken_policy_is_reported_on_the_chat(env, tmp_path):
    project = _project(env, tmp_path / "no-such-model")
    ann = env.client("ann1")
    chat = ann.post(f"/api/projects/{project['id']}/chats").json()
    ann.post(f"/api/chats/{chat['chat']}/messages", json={"text": "Hi"})
    view = wait_for(
        lambda: (v := ann.get(f"/api/chats/{chat['chat']}").json())["status"] == "error" and v
    )
    assert "generation failed" in view["error"]
    assert view["messages"] == []  # the message can be sent again
    assert ann.post(f"/api/chats/{chat['chat']}/messages", json={"text": "Hi"}).status_code == 202
