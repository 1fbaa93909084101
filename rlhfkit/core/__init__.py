"""rlhfkit.core."""
