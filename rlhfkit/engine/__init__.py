"""rlhfkit.engine."""
