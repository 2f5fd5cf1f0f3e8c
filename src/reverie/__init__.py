"""reverie: a language model's version iteration run as a sleep cycle (Learn, Compress, Dream, Gate)."""

__version__ = "0.1.0"
