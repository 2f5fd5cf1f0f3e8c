"""The workspace's SEAL self-edit generator: trained by ReST-EM (`reverie seal train`), recorded in the
registry as `generator` versions behind the `generator` alias, measured by `reverie seal eval | bench`, and
used by the Dream phase to write implications of the workspace's documents.

Before any training the generator is the current release itself (SEAL's untrained starting point).
State lives under .reverie/seal/: one folder per run, keyed by what it was asked, so rerunning the same
command resumes it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from peft import PeftModel

from reverie.config import ModelConfig, SealConfig
from reverie.data.knowledge import load_knowledge
from reverie.data.passages import Passage, knowledge_passages, load_passages
from reverie.engines.evaluation import Grader
from reverie.engines.inner_loop import InnerLoop
from reverie.engines.judge import JudgeGrader
from reverie.engines.models import LoadedModel, load_pretrained, load_version, resolve_source
from reverie.engines.rest_em import GeneratorRound, RoundSettings, finished_rounds, fingerprint, train_generator
from reverie.engines.seal_bench import SealBench
from reverie.errors import ReverieError
from reverie.registry import GENERATOR_ALIAS, RELEASE_ALIAS, ModelRecord
from reverie.workspace import Workspace, code_version

SEAL_STATE = "seal"


def round_settings(seal: SealConfig) -> RoundSettings:
    """The engine's view of dream.seal."""
    return RoundSettings(style=seal.style, samples=seal.samples, temperature=seal.temperature,
                         max_new_tokens=seal.max_new_tokens, generator_train=seal.generator_train)


def workspace_passages(ws: Workspace, spec: str, split: str, key: str) -> list[Passage]:
    """'knowledge' (the workspace's documents with their train_qa or eval_qa) or a SQuAD-format file; `key`
    names where `spec` came from in error messages."""
    if spec == "knowledge":
        return knowledge_passages(load_knowledge(ws.config.data.knowledge, ws.root), split)
    try:
        return load_passages(ws.root / Path(spec).expanduser())
    except ReverieError as exc:
        raise ReverieError(f"{key}: {exc} (use 'knowledge' or a SQuAD-format JSON file)") from None


def current_release(ws: Workspace) -> ModelRecord:
    model_id = ws.registry.get_alias(RELEASE_ALIAS)
    if model_id is None:
        raise ReverieError(f"{ws.root} has no release yet: run `reverie cycle` first")
    return ws.registry.get_model(model_id)


def current_generator(ws: Workspace) -> ModelRecord:
    """The newest trained generator, or the current release when none has been trained."""
    model_id = ws.registry.get_alias(GENERATOR_ALIAS)
    return ws.registry.get_model(model_id) if model_id else current_release(ws)


def load_plain(ws: Workspace, record: ModelRecord) -> LoadedModel:
    """A model version with any adapter merged in: the form the inner loop and generation need."""
    loaded = load_version(ws, record)
    if record.adapter:
        loaded.model = loaded.model.merge_and_unload()
    return loaded


def load_writer(ws: Workspace, record: ModelRecord) -> LoadedModel:
    """A version that only writes (self-edits for Dream or `seal write`): run by model.runtime, as the Gate runs a
    version (llama.cpp or vLLM where configured, with a logged fallback), its adapter merged under transformers."""
    loaded = load_version(ws, record, inference=True)
    if isinstance(loaded.model, PeftModel):
        loaded.model = loaded.model.merge_and_unload()
    return loaded


def judge_grader(ws: Workspace) -> Grader | None:
    """The judge named by dream.seal.judge_model, or None for the default containment grader."""
    seal = ws.config.dream.seal
    if seal.grader != "judge":
        return None
    directory = resolve_source(seal.judge_model, ws.cache_dir, ws.root)
    judge = load_pretrained(directory, ModelConfig(trust_remote_code=seal.judge_trust_remote_code))
    return JudgeGrader(judge.model, judge.tokenizer, ws.config.eval.batch_size)


def _loop_factory(ws: Workspace, start: ModelRecord) -> Callable[[Path | None], InnerLoop]:
    seal = ws.config.dream.seal
    grader = judge_grader(ws)

    def load_loop(directory: Path | None) -> InnerLoop:
        loaded = load_plain(ws, start) if directory is None else load_pretrained(directory, ws.config.model)
        return InnerLoop(loaded.model, loaded.tokenizer, seal.lora, seal.inner, ws.config.eval.max_new_tokens,
                         ws.config.eval.batch_size, grader)

    return load_loop


def _run_dir(ws: Workspace, kind: str, *parts: object) -> Path:
    """A run's state folder, keyed by what it was asked; it remembers the model it started from."""
    seal = ws.config.dream.seal
    key = fingerprint(kind, *parts, seal.lora.model_dump(), seal.inner.model_dump(), seal.grader, seal.judge_model)
    return ws.state / SEAL_STATE / f"{kind}-{key[:16]}"


def _start_model(ws: Workspace, run_dir: Path) -> ModelRecord:
    marker = run_dir / "start.json"
    if marker.is_file():
        return ws.registry.get_model(json.loads(marker.read_text())["model"])
    start = current_generator(ws)
    ws.write_text_atomic(marker, json.dumps({"model": start.id}) + "\n")
    return start


def train(ws: Workspace, rounds: int | None = None,
          on_round: Callable[[GeneratorRound, ModelRecord], None] | None = None,
          ) -> list[tuple[GeneratorRound, ModelRecord]]:
    """ReST-EM on the configured training passages; each round's generator is registered as it finishes.

    Rerunning resumes an interrupted run; a larger `rounds` extends a finished one.
    """
    seal = ws.config.dream.seal
    passages = workspace_passages(ws, seal.passages, "train", "dream.seal.passages")[: seal.max_passages]
    if not passages:
        raise ReverieError(f"dream.seal.passages ({seal.passages}): no passage has questions to train on")
    settings = round_settings(seal)
    run_dir = _run_dir(ws, "train", [p.model_dump() for p in passages], asdict(settings))
    start = _start_model(ws, run_dir)

    def register(finished: GeneratorRound) -> None:
        record = _register_round(ws, run_dir, finished, start)
        if on_round is not None:
            on_round(finished, record)

    with ws.cycle_lock():  # a cycle's garbage collection must not see a checkpoint before it is registered
        for finished in finished_rounds(run_dir):  # rounds of a run killed before it could register them
            _register_round(ws, run_dir, finished, start)
        _, done = train_generator(_loop_factory(ws, start), passages, settings, rounds or seal.rounds, run_dir,
                                  ws.artifacts, on_round=register)
        return [(finished, _register_round(ws, run_dir, finished, start)) for finished in done]


def generator_id(run_dir: Path, finished: GeneratorRound) -> str:
    """Deterministic per run and round, so registering is idempotent (a round that kept nothing leaves the
    weights, and so the checkpoint, unchanged, but is still its own version)."""
    return "g-" + hashlib.sha256(f"{run_dir.name}/{finished.round}".encode()).hexdigest()[:12]


def _register_round(ws: Workspace, run_dir: Path, finished: GeneratorRound, start: ModelRecord) -> ModelRecord:
    model_id = generator_id(run_dir, finished)
    if (existing := ws.registry.find_model(model_id)) is not None:
        return existing
    previous = finished_rounds(run_dir)[finished.round - 2] if finished.round > 1 else None
    parent = generator_id(run_dir, previous) if previous else start.id
    record = ModelRecord(id=model_id, status="generator", weights=finished.checkpoint, parent_id=parent,
                         phase=f"rest-em round {finished.round}", config_hash=ws.config.fingerprint(),
                         code_version=code_version(), created_at=time.time())
    ws.registry.add_generator(record)
    ws.registry.log_metrics(model_id, "rest-em", {k: float(v) for k, v in asdict(finished.result).items()})
    return record


def bench(ws: Workspace, evaluation: list[Passage], training: list[Passage],
          on_round: Callable[[GeneratorRound], None] | None = None, use_trained: bool = False) -> SealBench:
    """The paper's table on these passages, starting from the current release. With `use_trained`, the seal
    condition uses the workspace's registered generator instead of training one in the run's own folder."""
    seal = ws.config.dream.seal
    settings = round_settings(seal)
    release = current_release(ws)
    generator_dir = None
    if use_trained:
        generator = current_generator(ws)
        if generator.status != "generator":
            raise ReverieError("no generator has been trained in this workspace yet: run `reverie seal train`")
        generator_dir = ws.artifacts.path(generator.weights)
    kind = "eval" if use_trained else "bench"
    run_dir = _run_dir(ws, kind, release.id, generator_dir and generator_dir.name, seal.rounds,
                       [p.model_dump() for p in evaluation], [p.model_dump() for p in training], asdict(settings))
    return SealBench(_loop_factory(ws, release), settings, evaluation, training, seal.rounds, run_dir,
                     [seal.lora.model_dump(), seal.inner.model_dump()], on_round, generator_dir)
