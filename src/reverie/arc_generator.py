"""The workspace's ARC self-edit generator (SEAL's few-shot experiment): trained by ReST-EM on ARC training tasks
(`reverie seal arc train`), measured against in-context learning, untrained self-edits and an oracle
configuration (`reverie seal arc eval`).

It starts from the current release. Unlike the knowledge generator it is not a registry version (Dream does not
use it): each run keeps its journals and checkpoints in its own folder under .reverie/seal/, keyed by what it
was asked, so rerunning the same command resumes it; `latest-arc.json` there names the newest trained one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from reverie.artifacts import ArtifactStore
from reverie.data.arc import ArcTask, load_arc_tasks
from reverie.engines.arc_bench import ArcBench
from reverie.engines.arc_rest_em import train_arc_generator
from reverie.engines.arc_ttt import ArcInnerLoop, ArcTrial
from reverie.engines.models import load_pretrained
from reverie.engines.rest_em import GeneratorRound, fingerprint
from reverie.errors import ReverieError
from reverie.generator import SEAL_STATE, current_release, load_plain
from reverie.workspace import Workspace

LATEST = "latest-arc.json"


def read_tasks(ws: Workspace, challenges: Path, solutions: Path, limit: int | None = None) -> list[ArcTask]:
    """ARC tasks with their test outputs; a relative path is read from the workspace folder."""
    tasks = load_arc_tasks(ws.root / challenges, ws.root / solutions)[:limit]
    if not tasks:
        raise ReverieError(f"{challenges}: no task")
    return tasks


def _loop_factory(ws: Workspace) -> Callable[[Path | None], ArcInnerLoop]:
    release = current_release(ws)

    def load_loop(directory: Path | None) -> ArcInnerLoop:
        loaded = load_plain(ws, release) if directory is None else load_pretrained(directory, ws.config.model)
        return ArcInnerLoop(loaded.model, loaded.tokenizer, ws.config.dream.seal.arc, ws.config.eval.batch_size)

    return load_loop


def _run_dir(ws: Workspace, kind: str, *parts: object) -> Path:
    key = fingerprint(kind, current_release(ws).id, ws.config.dream.seal.arc.model_dump(), *parts)
    return ws.state / SEAL_STATE / f"arc-{kind}-{key[:16]}"


def train(ws: Workspace, tasks: list[ArcTask], rounds: int | None = None,
          on_round: Callable[[GeneratorRound], None] | None = None,
          report: Callable[[str, ArcTrial], None] = lambda key, trial: None) -> list[GeneratorRound]:
    """ReST-EM on `tasks`; resumes an interrupted run, and a larger `rounds` extends a finished one."""
    settings = ws.config.dream.seal.arc
    run_dir = _run_dir(ws, "train", [t.model_dump() for t in tasks])
    store = ArtifactStore(run_dir / "artifacts", run_dir / "staging")
    with ws.cycle_lock():
        _, done = train_arc_generator(_loop_factory(ws), tasks, settings, rounds or settings.rounds,
                                      run_dir / "rest-em", store, on_round=on_round, report=report)
    latest = {"run": run_dir.name, "round": done[-1].round, "checkpoint": done[-1].checkpoint}
    ws.write_text_atomic(ws.state / SEAL_STATE / LATEST, json.dumps(latest) + "\n")
    return done


def trained_generator(ws: Workspace) -> Path:
    """The newest `seal arc train` generator's weights."""
    pointer = ws.state / SEAL_STATE / LATEST
    if not pointer.is_file():
        raise ReverieError("no ARC generator has been trained in this workspace: run `reverie seal arc train` "
                           "(or leave seal out of --conditions)")
    latest = json.loads(pointer.read_text())
    run_dir = ws.state / SEAL_STATE / latest["run"]
    return ArtifactStore(run_dir / "artifacts", run_dir / "staging").path(latest["checkpoint"])


def bench(ws: Workspace, evaluation: list[ArcTask], use_trained: bool,
          report: Callable[[str, ArcTrial], None] = lambda key, trial: None) -> ArcBench:
    """The paper's ARC table on `evaluation`, from the current release; with `use_trained`, the seal condition
    uses the newest trained generator."""
    generator_dir = trained_generator(ws) if use_trained else None
    run_dir = _run_dir(ws, "eval", [t.model_dump() for t in evaluation], str(generator_dir))
    return ArcBench(_loop_factory(ws), ws.config.dream.seal.arc, evaluation, [], run_dir,
                    generator_dir=generator_dir, report=report)

