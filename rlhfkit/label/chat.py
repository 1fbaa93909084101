"""Live replies for chat projects, generated off the request thread.

The annotator's message is stored and the request returns at once (status "generating"); one
worker thread then loads the project's policies (once per folder, kept in memory), samples one
reply from policy A and one from policy B (the same folder twice when only one is given: two
independent samples) with rlhfkit's sampler (`rollout.sample_batches`, the code evaluation and
`sim collect` use), and stores them as an item assigned to the annotator. The page polls until
the replies are there. One worker, because CPU generation already uses every core and a second
would only slow both; torch is told to use one thread fewer than the machine has, so the
server's request threads stay responsive while it runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rlhfkit.label import service
from rlhfkit.label.db import Chat, Database, Project

log = logging.getLogger(__name__)
MAX_TRIES = 5  # samples per reply before giving up on an empty one


class ChatWorker:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-generate")
        self._models: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def start(self, chat_id: int) -> Future[None]:
        return self._executor.submit(self._run, chat_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, chat_id: int) -> None:
        try:
            with self.database.session() as db:
                chat = db.get(Chat, chat_id)
                settings = db.get(Project, chat.project_id).settings
                messages = list(chat.messages)
            replies = [
                self._sample(settings[key], messages, settings) for key in ("policy_a", "policy_b")
            ]
            with self.database.session() as db:
                service.add_candidates(db, chat_id, replies)
        except Exception as e:  # reported on the chat page; the server keeps running
            log.exception("chat %s: generation failed", chat_id)
            with self.database.session() as db:
                service.chat_failed(db, chat_id, f"generation failed: {type(e).__name__}: {e}")

    def _load(self, path: str) -> tuple[Any, Any]:
        with self._lock:
            if path not in self._models:
                import torch

                from rlhfkit.models import ModelConfig, load_policy, load_tokenizer

                torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
                model = load_policy(ModelConfig(name_or_path=path)).eval()
                self._models[path] = (model, load_tokenizer(path))
            return self._models[path]

    def _sample(self, path: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        import torch

        from rlhfkit.rollout import RolloutConfig, sample_batches
        from rlhfkit.types import Message, PromptRecord

        model, tokenizer = self._load(path)
        record = PromptRecord(tuple(Message(m["role"], m["content"]) for m in messages))
        cfg = RolloutConfig(
            max_new_tokens=int(settings.get("max_new_tokens", 48)),
            temperature=float(settings.get("temperature", 1.0)),
            batch_size=1,
        )
        for _ in range(MAX_TRIES):
            generator = torch.Generator().manual_seed(secrets.randbits(63))
            with torch.inference_mode():
                for _, _, texts in sample_batches(model, tokenizer, [record], cfg, generator):
                    if texts[0]:
                        return texts[0][: service.MAX_TEXT]
        raise RuntimeError(f"{path} gave {MAX_TRIES} empty replies; send the message again")
