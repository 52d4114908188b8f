"""Training: the loss, the loop, validation as the original computes it, checkpoints and their order."""
