"""The names of the Compress and Dream strategies that reverie.yaml may list, each with what it does. Torch-free,
so that the config can check a name before anything is loaded; the strategies themselves are registered under
these names in code."""

from __future__ import annotations

COMPRESS_STRATEGIES: dict[str, str] = {
    "merge": "merge the Learn adapter into the weights, kept only when the A/B check against the adapter passes",
    "distil": "train the candidate (or compress.distil.student) towards the release's logits on the training data "
    "(KL), to win back what Learn made it forget",
    "prune": "Wanda unstructured and 2:4 sparsity calibrated on the training data, and removal of whole decoder "
    "layers (compress.prune)",
    "quantize": "8-bit and 4-bit GGUF variants run by llama.cpp (compress.quantize; needs the `llama` extra)",
}
DREAM_STRATEGIES: dict[str, str] = {
    "seal": "the trained self-edit generator (see `reverie seal train`; the current release until one is trained) "
    "writes implications of each document to train on",
    "self-consistency": "vote over sampled open-book answers to the training questions and train closed-book on "
    "the winners",
    "dpo": "direct preference optimisation on pairs drawn by data.mix from the preference datasets, plus refusal "
    "pairs from the red-team library (align.dpo)",
    "grpo": "reinforcement learning against the registered reward model plus verifiable rewards, with a KL penalty "
    "to the reference (align.grpo; GRPO or RLOO)",
    "cot-consistency": "sample several step-by-step reasoning paths per training question (and dream.cot.reasoning "
    "item), vote on their final answers, train on one path of each high-agreement answer; majority over minority "
    "paths become preference pairs (dream.cot)",
    "counterfactual": "minimal perturbations of the documents (a year, number or name changed) and false-premise "
    "questions from the training questions, trained to be corrected, beside true-premise controls answered "
    "normally (dream.counterfactual)",
    "redteam": "red-team self-play: the model mutates training-half requests of the red-team library (jailbreak "
    "templates, role-play, encodings, rewording, its own paraphrases, multi-turn escalation) against the candidate; "
    "attacks that worked train refusals, safe look-alikes train compliance, and join the library for review "
    "(dream.redteam)",
}
