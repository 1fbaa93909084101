"""What the label app does, independent of HTTP. The JSON API, the pages and the CLI all call
these functions with a database session; each raises `LabelError(status, message)` for anything
the user got wrong. One module per part:

- `common`: `LabelError`, the vocabularies (kinds, modes, flags, strengths, rating scales and
  aspects), guidelines, the checks on text.
- `accounts`: users, passwords, API tokens, the cookie-signing key.
- `projects`: create, find, list with progress.
- `items`: import rows into items and assign them (overlap, random display order).
- `tasks`: an annotator's tasks, what each shows, and the judgment that answers it (exactly once).
- `chats`: live chats whose turns become items.
- `stats`: progress, flags, time and agreement of a project.
- `export`: judgments as training files (ratings: unpaired KTO rows), and the report.

Everything public is importable from here (`from rlhfkit.label import service; service.submit`).
"""

from rlhfkit.label.db import now
from rlhfkit.label.service.accounts import (
    create_user,
    list_users,
    login,
    rotate_token,
    secret_key,
    user_by_name,
    user_by_token,
)
from rlhfkit.label.service.chats import (
    add_candidates,
    add_human_turn,
    chat_failed,
    chat_view,
    chats_of,
    create_chat,
    get_chat,
)
from rlhfkit.label.service.common import (
    FLAGS,
    GUIDELINES,
    KINDS,
    MAX_CANDIDATES,
    MAX_TEXT,
    MODES,
    ROLES,
    SCALES,
    STRENGTHS,
    THUMBS,
    LabelError,
    json_field,
    parse_aspects,
    rating_value,
    storable,
    text_field,
    unicode_text,
)
from rlhfkit.label.service.export import (
    EXPORT_FORMATS,
    export_rows,
    label_rule,
    rating_rows,
    write_jsonl,
)
from rlhfkit.label.service.items import (
    decode_items_file,
    import_items,
    new_assignment,
    parse_item,
    parse_prompt,
    rating_gold,
    read_items_file,
)
from rlhfkit.label.service.projects import create_project, get_project, projects_for
from rlhfkit.label.service.stats import judgments, stats
from rlhfkit.label.service.tasks import get_task, letters_of, next_task, submit, task_view, tasks_of

__all__ = [
    "EXPORT_FORMATS",
    "FLAGS",
    "GUIDELINES",
    "KINDS",
    "MAX_CANDIDATES",
    "MAX_TEXT",
    "MODES",
    "ROLES",
    "SCALES",
    "STRENGTHS",
    "THUMBS",
    "LabelError",
    "add_candidates",
    "add_human_turn",
    "chat_failed",
    "chat_view",
    "chats_of",
    "create_chat",
    "create_project",
    "create_user",
    "decode_items_file",
    "export_rows",
    "get_chat",
    "get_project",
    "get_task",
    "import_items",
    "json_field",
    "judgments",
    "label_rule",
    "letters_of",
    "list_users",
    "login",
    "new_assignment",
    "next_task",
    "now",
    "parse_aspects",
    "parse_item",
    "parse_prompt",
    "projects_for",
    "rating_gold",
    "rating_rows",
    "rating_value",
    "read_items_file",
    "rotate_token",
    "secret_key",
    "stats",
    "storable",
    "submit",
    "task_view",
    "tasks_of",
    "text_field",
    "unicode_text",
    "user_by_name",
    "user_by_token",
    "write_jsonl",
]
