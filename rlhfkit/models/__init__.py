"""rlhfkit.models."""
