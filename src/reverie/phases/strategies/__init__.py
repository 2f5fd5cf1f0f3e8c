"""Compress and Dream strategies, registered by name (the names reverie.yaml lists: strategy_names.py).

A Compress strategy takes the candidate and returns a typed result; a Dream strategy writes training data (SFT
examples, preference pairs or RL prompts) and says how to train on it, and the shared tail in `base.py` runs the
A/B check and merges or keeps the adapter.
Importing this package registers every strategy."""

from reverie.phases.strategies import (cot_consistency, counterfactual, distil, dpo, grpo, merge, prune, quantize,
                                      redteam_play, seal, self_consistency)
from reverie.phases.strategies.base import COMPRESS, DREAM

__all__ = ["COMPRESS", "DREAM", "cot_consistency", "counterfactual", "distil", "dpo", "grpo", "merge", "prune",
           "quantize", "redteam_play", "seal", "self_consistency"]
