"""The SmolLM2-135M-Instruct benchmarks (docs/real.md, docs/scaling.md); shared code in
`benchmarks.real.realdata`."""
