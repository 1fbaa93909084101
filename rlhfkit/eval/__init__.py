"""rlhfkit.eval."""
