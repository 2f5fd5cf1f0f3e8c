"""Compress and Dream strategies, registered by name (the names reverie.yaml lists: strategy_names.py).

A Compress strategy takes the candidate and returns a typed result; a Dream strategy only writes training
data, and the shared tail in `base.py` trains on it, runs the A/B check and merges or keeps the adapter.
Importing this package registers every strategy."""

from reverie.phases.strategies import merge, seal, self_consistency
from reverie.phases.strategies.base import COMPRESS, DREAM

__all__ = ["COMPRESS", "DREAM", "merge", "seal", "self_consistency"]
