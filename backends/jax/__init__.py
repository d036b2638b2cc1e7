"""liquidssm.jax (being written)."""
