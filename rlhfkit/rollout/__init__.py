"""rlhfkit.rollout."""
