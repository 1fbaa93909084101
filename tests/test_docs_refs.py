"""Docs and code comments cite only what a user of the repository has.

A page (README.md, CHANGELOG.md, docs/*.md, benchmarks/README.md) or a comment or docstring in
rlhfkit/, benchmarks/ or tests/ (Python, shell, and the presets' YAML) fails this test when it
names

- a path outside the repository: one that climbs out of it (`../something` resolved from the
  file's folder), a machine's folders (`/work/…`, `/home/…`, `/Users/…`, `/root/…`, `/mnt/…`) or a
  home folder (`~/…`);
- a file of the repository that does not exist: a markdown link, a path under one of the
  repository's folders or under `rlhfkit/` (`data/tokenize.py`), or a bare file name such as
  `DESIGN.md` or `ppo_throughput.py` that no file of the repository carries.

Each finding is reported as `file:line: what`. Run commands' output paths (`runs/…`, `/tmp/…`)
and files a run writes (`metrics.jsonl`) are not references to the repository.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("rlhfkit", "benchmarks", "tests")

OUTSIDE = re.compile(
    r"(?<![\w.:/-])(/(?:work|home|Users|root|mnt)/|~/(?!\.cache/rlhfkit\b(?!-))[\w.])"
)
PARENT = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a path with a file ending: dir/dir/name.ext (the directories optional)
# a file of another project cited as a source ("CleanRL ppo.py") is not this repository's
EXTERNAL = re.compile(r"\b(CleanRL|LLaMA-Factory|OpenRLHF|TRL|DeepSpeed|vLLM|github\.com)\b")
PLACEHOLDERS = {"NAME", "DIR", "FILE", "PATH"}  # rlhfkit/configs/NAME.yaml
PATHLIKE = re.compile(
    r"(?<![\w./-])((?:[\w.-]+/)*[\w-][\w.-]*\.(?:py|md|yaml|yml|sh|toml|txt|png))\b"
)


@cache
def repo_files() -> tuple[frozenset[str], frozenset[str]]:
    """(paths of the files git tracks or would track, their base names)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = frozenset(p for p in out if (ROOT / p).exists())
    return files, frozenset(Path(p).name for p in files)


def _exists(rel: str) -> bool:
    files, _ = repo_files()
    rel = rel.rstrip("/")
    return rel in files or any(f.startswith(rel + "/") for f in files)


def _top_dirs() -> set[str]:
    files, _ = repo_files()
    return {f.split("/")[0] for f in files if "/" in f}


def _package_dirs() -> set[str]:
    return {p.name for p in (ROOT / "rlhfkit").iterdir() if p.is_dir()}


def problems_in(text: str, where: Path, first_line: int = 1) -> list[str]:
    """Every reference in `text` (found in the file `where`, starting at `first_line`) that
    points outside the repository or to a repository file that does not exist."""
    rel_where = where.relative_to(ROOT)
    out = []
    tops, pkgs = _top_dirs(), _package_dirs()
    _, names = repo_files()
    for offset, line in enumerate(text.split("\n")):
        at = f"{rel_where}:{first_line + offset}"
        for m in OUTSIDE.finditer(line):
            out.append(f"{at}: {m.group(1)}… is a path outside the repository")
        for m in PARENT.finditer(line):
            target = (where.parent / m.group(1)).resolve()
            if not target.is_relative_to(ROOT):
                out.append(f"{at}: {m.group(1)!r} is outside the repository")
            elif not _exists(str(target.relative_to(ROOT))):
                out.append(f"{at}: {m.group(1)!r} is not in the repository")
        linked = set()
        for m in LINK.finditer(line):
            target = m.group(1).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            linked.add(target)
            path = (where.parent / target).resolve()
            if path.is_relative_to(ROOT) and not _exists(str(path.relative_to(ROOT))):
                out.append(f"{at}: link to {target!r}, which is not in the repository")
        for m in PATHLIKE.finditer(line):
            ref = m.group(1)
            if ref in linked or ref.startswith("../") or EXTERNAL.search(line[: m.start()]):
                continue
            if PLACEHOLDERS & {Path(part).stem for part in ref.split("/")}:
                continue
            first = ref.split("/")[0]
            if "/" not in ref:
                missing = ref not in names and (ref.endswith((".py", ".md", ".sh")))
            elif first in tops:
                missing = not _exists(ref)
            elif first in pkgs:
                missing = not _exists(f"rlhfkit/{ref}")
            else:
                continue  # runs/…, a user's own folder: not the repository's
            if missing:
                out.append(f"{at}: {ref!r} names a file that is not in the repository")
    return out


def _comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    source = path.read_text(encoding="utf-8")
    if path.suffix in (".sh", ".yaml"):
        return [
            (i + 1, ln) for i, ln in enumerate(source.split("\n")) if ln.lstrip().startswith("#")
        ]
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    out.append((body[0].lineno, body[0].value.value))
    return out


def _docs() -> list[Path]:
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
    return [p for p in pages if p.is_file()] + sorted((ROOT / "docs").glob("*.md"))


def _code() -> list[Path]:
    """The code to read, this file left out (its docstring and cases name bad paths on purpose)."""
    files, _ = repo_files()
    return [
        ROOT / f
        for f in sorted(files)
        if f.split("/")[0] in CODE_DIRS
        and f.endswith((".py", ".sh", ".yaml"))
        and ROOT / f != Path(__file__).resolve()
    ]


def test_docs_cite_only_what_is_in_the_repository():
    found = []
    for page in _docs():
        found += problems_in(page.read_text(encoding="utf-8"), page)
    assert not found, "\n".join(found)


def test_code_comments_cite_only_what_is_in_the_repository():
    found = []
    for path in _code():
        for line, text in _comments_and_docstrings(path):
            found += problems_in(text, path, line)
    assert not found, "\n".join(found)


def test_the_checker_finds_each_kind_of_bad_reference():
    """The checker itself, on text written to fail it (and on text it must let pass)."""
    here = ROOT / "docs" / "x.md"
    bad = [
        "the assets in ../shared/bench",
        "see /work/shared/DESIGN.md",
        "under ~/.cache/anchors",
        "under ~/.cache/rlhfkit-anchors/assets",
        "cites DESIGN.md §5",
        "in `benchmarks/no_such_script.py`",
        "see `rollout/no_such_module.py`",
        "[a page](no_such_page.md)",
    ]
    for text in bad:
        assert problems_in(text, here), text
    good = [
        "[the PPO page](ppo.md) and [the README](../README.md#install)",
        "see `rlhfkit/data/tokenize.py`, `data/tokenize.py` and `ppo_throughput.py`",
        "writes runs/demo/summary.json and metrics.jsonl; --out /tmp/x; `~/…` expanded",
        "CleanRL ppo.py; `rlhfkit/configs/NAME.yaml`; models in ~/.cache/rlhfkit/models",
    ]
    for text in good:
        assert not problems_in(text, here), (text, problems_in(text, here))
