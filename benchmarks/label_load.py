"""Load and durability of `rlhfkit label serve`: many annotators at once, then `kill -9`.

1. A fresh database (a SQLite file, or a new database on the PostgreSQL server at --pg) gets
   `--clients` annotator accounts and a pairwise project with `--items` items per annotator,
   each assigned to one annotator (overlap 1), so clients never wait on each other's tasks.
2. `rlhfkit label serve` starts as a child process on 127.0.0.1 (loopback only, always).
3. Steady phase: `--clients` threads, one per annotator, each with its own HTTP connection and
   API token, loop "next task → submit judgment" for `--seconds`. Reported: judgments/s (2xx
   answers over the phase) and p50 / p99 latency of the submit request.
4. Crash phase: the same clients start again; after `--kill-after` seconds the server gets
   SIGKILL in the middle of the burst. Every judgment a client saw acknowledged (2xx) is
   remembered; requests cut off by the kill have an unknown outcome.
5. The server restarts on the same database, and the database is checked directly:
   - every acknowledged judgment is there exactly once (lost = duplicated = 0);
   - nothing is half-written: each judgment's assignment is "done", each "done" assignment has
     exactly one judgment (the two are one transaction), counts agree;
   - the restarted server answers and takes new judgments.

    python -m benchmarks.label_load [--pg postgresql://postgres@127.0.0.1:54329/postgres]
        [--clients 50] [--seconds 60] [--kill-after 3] [--items 2000] [--out runs/label_load]

Writes OUT/<backend>.json and prints it. The short version runs as tests/test_label_load.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from rlhfkit.label import service
from rlhfkit.label.db import Assignment, Database, Item, Judgment, User
from rlhfkit.label.security import hash_password, new_token, token_hash

HOST = "127.0.0.1"  # loopback only: the benchmark never listens on or calls anything else


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def seed(url: str, clients: int, items: int) -> tuple[int, dict[str, str]]:
    """Accounts (one password hash shared, to keep set-up short), a project, items assigned
    round the clients; returns (project id, name → API token)."""
    database = Database(url)
    database.upgrade()
    tokens = {f"load{i:03d}": new_token() for i in range(clients)}
    shared = hash_password("load-test-password")
    with database.session() as db:
        db.execute(
            insert(User),
            [{"name": n, "role": "annotator", "password_hash": shared, "token_hash": token_hash(t),
              "created_at": service.now()} for n, t in tokens.items()],
        )  # fmt: skip
        project = service.create_project(db, "load", "pairwise")
        ids = dict(db.execute(select(User.name, User.id)).all())
        rows = [
            {"project_id": project.id, "position": k, "external_id": str(k),
             "prompt": [{"role": "user", "content": f"Question {k}: what is {k} plus {k}?"}],
             "candidates": [f"It is {2 * k}.", f"It is {2 * k + 1}."], "gold": [0], "meta": {}}
            for k in range(clients * items)
        ]  # fmt: skip
        db.execute(insert(Item), rows)
        item_ids = db.scalars(
            select(Item.id).where(Item.project_id == project.id).order_by(Item.position)
        ).all()
        names = list(tokens)
        db.execute(
            insert(Assignment),
            [{"item_id": iid, "user_id": ids[names[k % clients]], "display_order": [k % 2, 1 - k % 2],
              "status": "open", "created_at": service.now()} for k, iid in enumerate(item_ids)],
        )  # fmt: skip
        db.commit()
        pid = project.id
    database.close()
    return pid, tokens


class Server:
    """`rlhfkit label serve` as a child process on the loopback interface."""

    def __init__(self, url: str, port: int, log: Path) -> None:
        self.url, self.port, self.log = url, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "rlhfkit.label.cli", "serve", "--db", self.url,
               "--host", HOST, "--port", str(self.port)]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.base}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer in {timeout} s; see {self.log}")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Phase:
    acked: list[int] = field(default_factory=list)  # assignment ids answered 2xx
    latencies: list[float] = field(default_factory=list)  # seconds per submit
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def run_clients(
    base: str,
    tokens: dict[str, str],
    project: int,
    seconds: float,
    during: Callable[[Phase], None] | None = None,
    min_judgments: int = 1,
) -> Phase:
    """Every annotator labels in its own thread until `seconds` have passed and the phase has
    `min_judgments` acknowledged (at most a minute more, on a slow machine), or its connection
    dies; `during(phase)` runs on the calling thread meanwhile (the crash phase kills there)."""
    phase = Phase()
    start = time.monotonic()

    def running() -> bool:
        elapsed = time.monotonic() - start
        return elapsed < seconds or (len(phase.acked) < min_judgments and elapsed < seconds + 60)

    def client(token: str) -> None:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            while running():
                try:
                    task = http.get(f"/api/projects/{project}/next").json()["task"]
                    if task is None:
                        return
                    t0 = time.perf_counter()
                    r = http.post(
                        f"/api/tasks/{task['task']}/judgment", json={"choice": "A", "strength": 2}
                    )
                    dt = time.perf_counter() - t0
                except (httpx.HTTPError, ValueError):
                    phase.error("connection")  # the outcome of an interrupted submit is unknown
                    return
                if 200 <= r.status_code < 300:
                    with phase.lock:
                        phase.acked.append(task["task"])
                        phase.latencies.append(dt)
                else:
                    phase.error(str(r.status_code))

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in tokens.values()]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    if during is not None:
        during(phase)
    for t in threads:
        t.join(timeout=seconds + 120)
    phase.seconds = time.monotonic() - t0
    return phase


def check_database(url: str, acked: list[int]) -> dict[str, int]:
    """Counts of lost, duplicated and half-written judgments (all must be 0)."""
    database = Database(url)
    with database.session() as db:
        per_task = dict(
            db.execute(
                select(Judgment.assignment_id, func.count()).group_by(Judgment.assignment_id)
            ).all()
        )
        status = dict(db.execute(select(Assignment.id, Assignment.status)).all())
    database.close()
    return {
        "acknowledged": len(acked),
        "acknowledged_twice_by_clients": len(acked) - len(set(acked)),
        "lost": sum(per_task.get(a, 0) == 0 for a in set(acked)),
        "duplicated": sum(n > 1 for n in per_task.values()),
        "judgment_without_done_task": sum(status.get(a) != "done" for a in per_task),
        "done_task_without_judgment": sum(
            s == "done" and a not in per_task for a, s in status.items()
        ),
        "judgments": sum(per_task.values()),
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    url: str, out: Path, clients: int, seconds: float, kill_after: float, items: int
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    project, tokens = seed(url, clients, items)
    server = Server(url, free_port(), out / "server.log")
    server.start()
    try:
        steady = run_clients(server.base, tokens, project, seconds)

        def kill_mid_burst(phase: Phase) -> None:
            deadline = time.monotonic() + kill_after + 60
            time.sleep(kill_after)
            while not phase.acked and time.monotonic() < deadline:  # the burst must be running
                time.sleep(0.05)
            server.kill9()

        crash = run_clients(server.base, tokens, project, kill_after + 60, during=kill_mid_burst)
        server.start()  # same database, same port
        a_few = dict(list(tokens.items())[:5])  # the restarted server answers and stores
        after = run_clients(server.base, a_few, project, 0.5)
    finally:
        server.stop()
    acked = steady.acked + crash.acked + after.acked
    check = check_database(url, acked)
    return {
        "backend": url.split(":", 1)[0].split("+")[0],
        "clients": clients,
        "seconds": round(steady.seconds, 2),
        "judgments": len(steady.acked),
        "judgments_per_s": round(len(steady.acked) / steady.seconds, 1),
        "p50_ms": round(1000 * percentile(steady.latencies, 0.5), 1) if steady.latencies else None,
        "p99_ms": round(1000 * percentile(steady.latencies, 0.99), 1) if steady.latencies else None,
        "errors": steady.errors,
        "crash": {
            "acked_before_kill": len(crash.acked),
            "cut_off_by_kill": crash.errors.get("connection", 0),
            "other_errors": {k: v for k, v in crash.errors.items() if k != "connection"},
            "acked_after_restart": len(after.acked),
        },
        "check": check,
        "ok": check["lost"]
        == check["duplicated"]
        == check["judgment_without_done_task"]
        == check["done_task_without_judgment"]
        == check["acknowledged_twice_by_clients"]
        == 0
        and len(after.acked) > 0,
    }


def fresh_pg_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", help="PostgreSQL admin URL: run on a fresh database there, not SQLite")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--kill-after", type=float, default=3.0)
    ap.add_argument("--items", type=int, default=2000, help="items per client")
    ap.add_argument("--out", type=Path, default=Path("runs/label_load"))
    args = ap.parse_args()
    if args.pg:
        url = fresh_pg_database(args.pg, "rlhfkit_label_load")
        name = "postgresql"
    else:
        db_file = args.out / "load.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        args.out.mkdir(parents=True, exist_ok=True)
        url, name = f"sqlite:///{db_file}", "sqlite"
    result = run(url, args.out / name, args.clients, args.seconds, args.kill_after, args.items)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
