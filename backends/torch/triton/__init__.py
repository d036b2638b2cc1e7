"""liquidssm.torch.triton (being written)."""
