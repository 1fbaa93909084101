"""rlhfkit.sim."""
