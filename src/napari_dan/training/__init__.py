"""Training and evaluation: degradations, data sets, the training loop, metrics."""
