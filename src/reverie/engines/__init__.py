"""Engines do the heavy lifting (models, training, generation, evaluation) for every phase and command."""
