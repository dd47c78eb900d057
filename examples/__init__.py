"""Examples: the paper's models trained with `model.fit`."""
