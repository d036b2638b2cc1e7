"""liquidssm.torch (being written)."""
