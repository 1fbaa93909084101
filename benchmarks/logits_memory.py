"""Peak memory of token log-probs + entropy, forward and backward, three ways (issue #30).

- `naive`: the LM head over every token at once, then `gather_logprobs` / `entropy_from_logits`
  (what rlhfkit did before `core.head_logprobs`);
- `function`: `core.head_logprobs` chunked, its autograd.Function recomputing each chunk in the
  backward with the closed-form gradient;
- `checkpoint`: the naive computation per chunk under `torch.utils.checkpoint` (the alternative).

Each variant runs in its own process (fresh allocator); the figure is the peak RSS growth over
the RSS after the inputs exist, in MiB. Defaults are SmolLM2-135M's head (H = 576, V = 49,152)
on 2,048 tokens.

    OMP_NUM_THREADS=1 python -m benchmarks.logits_memory [--tokens 2048] [--chunk 170]

`--chunk-sweep N [N ...]` times instead: forward + backward of `core.head_logprobs` as the
policy step runs it (log-probs and entropies forward, the gradient of the log-probs), one
process, one torch thread, median of `--repeats` calls after one warm call, for each chunk size
in tokens (0: the whole input in one piece, the unchunked autograd path) and
`default_chunk(V)`'s choice. The anchor workload's head and the SmolLM2 head:

    python -m benchmarks.logits_memory --chunk-sweep 0 2047 512 256 128 --tokens 2048 --hidden 256 --vocab 4096
    python -m benchmarks.logits_memory --chunk-sweep 170 128 64 32 --tokens 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from benchmarks.common import positive


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _run(variant: str, tokens: int, hidden: int, vocab: int, chunk: int, bf16: bool) -> dict:
    from torch.utils.checkpoint import checkpoint

    from rlhfkit.core import entropy_from_logits, gather_logprobs, head_logprobs

    g = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=g).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * 0.05).requires_grad_()
    ids = torch.randint(0, vocab, (tokens,), generator=g)
    coef = torch.randn(tokens, generator=g)

    def naive(h, w, ids):
        logits = torch.nn.functional.linear(h, w)
        lp = gather_logprobs(logits[None], ids[None])[0]
        return lp, entropy_from_logits(logits)

    before = _rss_mib()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if variant == "naive":
            lp, ent = naive(h, w, ids)
        elif variant == "function":
            lp, ent = head_logprobs(h, w, None, ids, with_entropy=True, chunk_size=chunk)
        else:
            parts = [
                checkpoint(naive, h[i : i + chunk], w, ids[i : i + chunk], use_reentrant=False)
                for i in range(0, tokens, chunk)
            ]
            lp, ent = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    ((lp + 0.01 * ent) * coef).sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "peak_growth_mib": round(peak - before, 1)}


def whole(text: str) -> int:
    """argparse type: an int ≥ 0 (0: the whole input in one piece)."""
    if text.strip() == "0":
        return 0
    try:
        return positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a chunk size ≥ 0, got {text!r}") from None


def _sweep(args: argparse.Namespace) -> None:
    from benchmarks.common import command, median_us
    from rlhfkit.core import head_logprobs
    from rlhfkit.core.logprobs import default_chunk

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(args.tokens, args.hidden, generator=g).requires_grad_()
    w = (torch.randn(args.vocab, args.hidden, generator=g) * 0.05).requires_grad_()
    ids = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    coef = torch.randn(args.tokens, generator=g)

    def step(chunk: int) -> None:  # the policy step's use: the entropy a metric, no gradient
        lp, _ = head_logprobs(h, w, None, ids, with_entropy=True, chunk_size=chunk)
        (lp * coef).sum().backward()
        h.grad = w.grad = None

    for chunk in args.chunk_sweep:
        ms = median_us(lambda c=chunk or args.tokens: step(c), args.repeats) / 1e3
        print(
            json.dumps(
                {
                    "chunk_tokens": chunk or args.tokens,
                    "fwd_bwd_ms": round(ms, 1),
                    "tokens": args.tokens,
                    "hidden": args.hidden,
                    "vocab": args.vocab,
                }
            )
        )
    print(json.dumps({"default_chunk": default_chunk(args.vocab), "command": command()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--chunk", type=int, default=170)
    ap.add_argument("--bf16", action="store_true", help="under CPU bf16 autocast")
    ap.add_argument("--variant", choices=["naive", "function", "checkpoint"])
    ap.add_argument(
        "--chunk-sweep", type=whole, nargs="+", help="time these chunk sizes instead (0: one piece)"
    )
    ap.add_argument("--repeats", type=positive, default=7)
    args = ap.parse_args()
    if args.chunk_sweep:
        _sweep(args)
        return
    if args.variant:
        out = _run(args.variant, args.tokens, args.hidden, args.vocab, args.chunk, args.bf16)
        print(json.dumps(out))
        return
    for variant in ("naive", "function", "checkpoint"):
        cmd = [sys.executable, __file__, "--variant", variant] + sys.argv[1:]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(line)
        print(json.dumps({**row, **{k: v for k, v in vars(args).items() if k != "variant"}}))


if __name__ == "__main__":
    main()
