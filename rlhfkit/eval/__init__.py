"""rlhfkit.eval: evaluation that does not trust the reward model alone.

Modules: `judges` (gold / reward-model / pairwise judges, asked in both orders), `llm_judge` (a
local causal LM or an OpenAI-compatible endpoint as the pairwise judge, with an editable prompt
template in `templates/`), `ceiling` (best-of-n ceilings), `winrate` (win rate
with ties counted half and a Wilson interval), `metrics` (KL to a reference, perplexity, length,
repetition, refusal rates), `overopt` (proxy vs gold reward against √KL, Gao et al. 2022),
`evaluate` (generate from policies on a prompt set and score them), `report` (the self-contained
HTML run report), `cli` (`rlhfkit eval ...`).
"""
