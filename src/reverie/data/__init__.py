"""The data layer: knowledge drops, evaluation suites and training examples. Needs no torch."""
