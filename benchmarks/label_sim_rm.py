"""End to end on the simulated world: `sim collect --server` labels pairs through a running
`rlhfkit label serve`, the export trains `rlhfkit rm`, and its gold agreement is compared with an
RM trained on the offline `sim collect` file of the same seed.

1. The world (`make_world`, seed S, enough RL prompts) and an SFT policy (`sft_sim` preset), or
   `--policy DIR` to reuse one.
2. Offline: `rlhfkit sim collect -n N --seed S -o offline.jsonl`.
3. Through the app: `rlhfkit label serve` (a child process on 127.0.0.1, SQLite or --pg), an admin
   account from `rlhfkit label user create`, then `rlhfkit sim collect ... --server URL` (which
   creates the annotators' accounts and the project, imports the pairs, and labels them through
   the API in one thread per annotator), then `rlhfkit label export --format pairs`.
4. The two files compared row by row (prompt, chosen, rejected), then one RM (`rm_sim` preset,
   same seed) trained on each and evaluated on the world's held-out pairs.

    python -m benchmarks.label_sim_rm [--out runs/label_sim] [--seed 0] [-n 2000]
        [--policy DIR] [--pg postgresql://postgres@127.0.0.1:54329/postgres]

Writes OUT/report.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"


def rlhfkit(*args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return out.stdout


def key(row: dict) -> tuple[str, str, str]:
    return json.dumps(row["prompt"]), row["chosen"], row["rejected"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/label_sim"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=2000, help="prompts to sample pairs for")
    ap.add_argument("--policy", type=Path, help="reuse this SFT model folder")
    ap.add_argument("--pg", help="PostgreSQL admin URL: the app's database lives there")
    args = ap.parse_args()

    import httpx
    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos import rm, sft
    from rlhfkit.config import load_config
    from rlhfkit.sim.make import make_world

    out, seed = args.out, args.seed
    world = out / "sim"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (world / "manifest.json").is_file():
        make_world(world, seed=seed, n_prompts=max(args.n, 500))
    timings["world_s"] = time.perf_counter() - t

    t = time.perf_counter()
    policy = args.policy
    if policy is None:
        cfg = load_config(
            sft.SFTConfig,
            preset="sft_sim",
            overrides=[f"out_dir={out / 'sft'}", f"tokenizer={world / 'tokenizer'}",
                       f"data.train={world / 'sft/train.jsonl'}",
                       f"data.validation={world / 'sft/validation.jsonl'}",
                       "engine.resume=false", f"engine.seed={seed}"],
        )  # fmt: skip
        policy = sft.train(cfg).model_dir
    timings["sft_s"] = time.perf_counter() - t

    collect = ["sim", "collect", "--world", str(world), "--policy", str(policy),
               "-n", str(args.n), "--seed", str(seed)]  # fmt: skip
    t = time.perf_counter()
    rlhfkit(*collect, "-o", str(out / "offline.jsonl"))
    timings["collect_offline_s"] = time.perf_counter() - t

    if args.pg:
        import psycopg

        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "rlhfkit_label_sim" WITH (FORCE)')
            conn.execute('CREATE DATABASE "rlhfkit_label_sim"')
        db = f"{args.pg.rsplit('/', 1)[0]}/rlhfkit_label_sim"
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out / 'label.db'}{suffix}").unlink(missing_ok=True)
        db = f"sqlite:///{out / 'label.db'}"
    created = rlhfkit("label", "user", "create", "admin", "--role", "admin", "--db", db,
                      env={"RLHFKIT_LABEL_PASSWORD": "admin-password"})  # fmt: skip
    token = created.rsplit(": ", 1)[1].strip()
    port = 8765
    server = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.label.cli", "serve", "--db", db, "--host", HOST,
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=(out / "server.log").open("w"),
    )  # fmt: skip
    url = f"http://{HOST}:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        t = time.perf_counter()
        rlhfkit(*collect, "-o", str(out / "served.jsonl"), "--server", url, "--token", token)
        timings["collect_server_s"] = time.perf_counter() - t
    finally:
        server.terminate()
        server.wait(timeout=30)
    project = f"sim-collect-{seed}"
    rlhfkit("label", "export", "--project", project, "--format", "pairs",
            "-o", str(out / "exported.jsonl"), "--db", db)  # fmt: skip
    stats = json.loads(rlhfkit("label", "stats", "--project", project, "--db", db))

    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (out / name).read_text().splitlines()]

    offline, exported = rows("offline.jsonl"), rows("exported.jsonl")
    same = sum(key(a) == key(b) for a, b in zip(offline, exported, strict=False))

    results = {}
    for name in ("offline", "exported"):
        cfg = load_config(
            rm.RMConfig,
            preset="rm_sim",
            overrides=[f"out_dir={out / ('rm_' + name)}", f"model.name_or_path={policy}",
                       f"data.train={out / (name + '.jsonl')}",
                       f"data.validation={world / 'preferences/test.jsonl'}",
                       "engine.resume=false", f"engine.seed={seed}"],
        )  # fmt: skip
        t = time.perf_counter()
        metrics = rm.train(cfg).metrics
        timings[f"rm_{name}_s"] = time.perf_counter() - t
        results[name] = {
            "pairs": len(rows(name + ".jsonl")),
            "rm_label_agreement": round(metrics["eval/accuracy"], 4),
            "rm_gold_agreement": round(metrics["eval/gold_agreement"], 4),
            "gold_pairs": metrics.get("eval/gold_pairs"),
        }
    report = {
        "seed": seed,
        "prompts": args.n,
        "database": db.split(":", 1)[0],
        "rows_identical": same,
        "rows": [len(offline), len(exported)],
        "judgments_in_app": stats["judgments"],
        "rm": results,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    print(json.dumps(report, indent=2))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
