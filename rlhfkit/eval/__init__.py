"""rlhfkit.eval: evaluation that does not trust the reward model alone.

Modules: `judges` (gold / reward-model / pairwise judges, asked in both orders; the LLM judges
themselves, a local causal LM or an OpenAI-compatible endpoint with an editable prompt template,
are `rlhfkit.rollout.llm_judge`, below the trainers, so online DPO can label with them), `ceiling` (best-of-n ceilings), `winrate` (win rate
with ties counted half and a Wilson interval), `metrics` (KL to a reference, perplexity, length,
repetition, refusal rates), `overopt` (proxy vs gold reward against √KL, Gao et al. 2022),
`evaluate` (generate from policies on a prompt set and score them), `report` (the self-contained
HTML run report), `cli` (`rlhfkit eval ...`).
"""
