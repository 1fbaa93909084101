"""Live chats: the annotator's turns, the two generated replies as an item, the dialogue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhfkit.label.db import Assignment, Chat, Item, Project, User, valid_id
from rlhfkit.label.service.common import LabelError, text_field
from rlhfkit.label.service.items import new_assignment
from rlhfkit.label.service.tasks import task_view


def create_chat(db: Session, user: User, project: Project) -> Chat:
    if project.kind != "chat":
        raise LabelError(422, f"project {project.name!r} is not a chat project")
    chat = Chat(project_id=project.id, user_id=user.id, messages=[], status="human", error="")
    db.add(chat)
    db.commit()
    return chat


def chats_of(db: Session, user: User, project: Project) -> list[Chat]:
    q = select(Chat).where(Chat.user_id == user.id, Chat.project_id == project.id)
    return list(db.scalars(q.order_by(Chat.id)))


def get_chat(db: Session, user: User, chat_id: int) -> Chat:
    chat = db.get(Chat, chat_id) if valid_id(chat_id) else None
    if chat is None or chat.user_id != user.id:
        raise LabelError(404, f"no chat {chat_id} for you")
    return chat


def add_human_turn(db: Session, chat: Chat, text: Any) -> None:
    """Append the annotator's message; the caller then starts generation."""
    if chat.status not in ("human", "error"):
        raise LabelError(409, f"chat {chat.id} is {chat.status}, not waiting for your message")
    text = text_field(text, "text")
    chat.messages = [*chat.messages, {"role": "user", "content": text}]
    chat.status, chat.error = "generating", ""
    db.commit()


def add_candidates(db: Session, chat_id: int, replies: Sequence[str]) -> Item:
    """Store two generated replies as an item assigned to the chat's annotator."""
    chat = db.get(Chat, chat_id)
    project = db.get(Project, chat.project_id)
    position = db.scalar(select(func.max(Item.position)).where(Item.project_id == project.id))
    item = Item(
        project_id=project.id,
        position=0 if position is None else position + 1,
        prompt=list(chat.messages),
        candidates=list(replies),
        gold=None,
        meta={"chat": chat.id, "turn": sum(m["role"] == "user" for m in chat.messages)},
        chat_id=chat.id,
    )
    db.add(item)
    db.flush()
    user = db.get(User, chat.user_id)
    task = new_assignment(item, user)
    db.add(task)
    db.flush()
    chat.status, chat.item_id = "choosing", item.id
    db.commit()
    return item


def chat_failed(db: Session, chat_id: int, message: str) -> None:
    chat = db.get(Chat, chat_id)
    chat.status, chat.error = "error", message[:2000]
    chat.messages = (
        chat.messages[:-1]
        if chat.messages and chat.messages[-1]["role"] == "user"
        else chat.messages
    )
    db.commit()


def chat_view(db: Session, chat: Chat) -> dict[str, Any]:
    project = db.get(Project, chat.project_id)
    view: dict[str, Any] = {
        "chat": chat.id,
        "project": project.name,
        "project_id": project.id,
        "mode": project.mode,
        "guidelines": project.guidelines,
        "status": chat.status,
        "error": chat.error,
        "messages": chat.messages,
        "task": None,
    }
    if chat.status == "choosing" and chat.item_id is not None:
        task = db.scalar(select(Assignment).where(Assignment.item_id == chat.item_id))
        view["task"] = task_view(db, task)
    return view
