"""Training: train states, jitted steps, optimisers, checkpoints, metrics."""
