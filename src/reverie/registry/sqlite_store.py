"""The embedded registry: one SQLite file in WAL mode inside the workspace."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

from reverie.errors import ReverieError
from reverie.registry.entities import (Cycle, DatasetKind, DatasetRecord, LiveCounts, ModelRecord, PhaseRun,
                                       ReleaseEvent, RhythmRun, ServingDecision)
from reverie.registry.store import GENERATOR_ALIAS, RELEASE_ALIAS, RegistryStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, source TEXT, weights TEXT, adapter TEXT, parent_id TEXT,
    cycle_id TEXT, phase TEXT, config_hash TEXT, code_version TEXT, created_at REAL NOT NULL,
    stack TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS datasets (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, rows INTEGER NOT NULL, source TEXT NOT NULL, created_at REAL NOT NULL,
    kind TEXT NOT NULL, cycle_id TEXT, strategy TEXT
);
CREATE TABLE IF NOT EXISTS model_datasets (
    model_id TEXT NOT NULL, dataset_hash TEXT NOT NULL, PRIMARY KEY (model_id, dataset_hash)
);
CREATE TABLE IF NOT EXISTS metrics (
    model_id TEXT NOT NULL, suite TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, logged_at REAL NOT NULL,
    PRIMARY KEY (model_id, suite, name)
);
CREATE TABLE IF NOT EXISTS cycles (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, base_model_id TEXT NOT NULL, config_hash TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, outcome TEXT, result_model_id TEXT, inputs TEXT
);
CREATE TABLE IF NOT EXISTS phase_runs (
    id TEXT PRIMARY KEY, cycle_id TEXT NOT NULL, phase TEXT NOT NULL, status TEXT NOT NULL, inputs TEXT NOT NULL,
    outputs TEXT NOT NULL, metrics TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, wall_s REAL,
    artifacts TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS aliases (name TEXT PRIMARY KEY, model_id TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS release_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model_id TEXT NOT NULL, action TEXT NOT NULL, at REAL NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS live_counts (
    model_id TEXT PRIMARY KEY, requests INTEGER NOT NULL, errors INTEGER NOT NULL, refusals INTEGER NOT NULL,
    thumbs_down INTEGER NOT NULL, latency_sum REAL NOT NULL, latency_p95 REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS serving_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL, model_id TEXT NOT NULL, against_id TEXT NOT NULL,
    at REAL NOT NULL, reason TEXT NOT NULL, figures TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rhythm_starts (
    rhythm TEXT NOT NULL, clock TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (rhythm, clock)
);
CREATE TABLE IF NOT EXISTS rhythm_runs (
    id TEXT PRIMARY KEY, rhythm TEXT NOT NULL, slot TEXT NOT NULL, scheduled_for REAL NOT NULL, status TEXT NOT NULL,
    started_at REAL NOT NULL, clock TEXT NOT NULL, finished_at REAL, detail TEXT NOT NULL, cycle_id TEXT
);
"""

_MODEL_COLUMNS = ("id, status, source, weights, adapter, parent_id, cycle_id, phase, config_hash, code_version, "
                  "created_at, stack")
_DATASET_COLUMNS = "hash, name, rows, source, created_at, kind, cycle_id, strategy"
# How datasets of a registry older than the kind column were named: kind, name prefix, source prefix.
_LEGACY_PREFIXES: tuple[tuple[DatasetKind, str, str], ...] = (
    ("pool", "pool/", "ingest "), ("redteam", "redteam/v", "red-team import"),
    ("replay", "replay/", "gate failures of"), ("feedback", "replay/", "serving feedback"),
)


def _legacy_kind(name: str, source: str, made_by: str | None) -> tuple[DatasetKind, str | None, str | None]:
    """Kind, cycle and Dream method of a dataset registered before they were fields, from its old name (the
    source settles names a knowledge file could imitate, such as 'pool/learn'); `made_by` is the cycle whose
    phase run output it. The migration's only helper: nothing else may read these conventions."""
    for kind, prefix, origin in _LEGACY_PREFIXES:
        if name.startswith(prefix) and source.startswith(origin):
            cycle = name.removeprefix(prefix).removesuffix("/feedback") if prefix == "replay/" else None
            return kind, cycle, None
    if "/dream-" in name:  # <knowledge>/dream-<method>[-quarantine]; 'votes' was self-consistency's first name
        method = name.rsplit("/dream-", 1)[1]
        kind: DatasetKind = "quarantine" if method.endswith("-quarantine") else "dream"
        method = method.removesuffix("-quarantine")
        return kind, made_by, "self-consistency" if method == "votes" else method
    if name.endswith("/learn"):
        return "learn", made_by, None
    raise ReverieError(f"dataset {name!r} (source {source!r}) was registered before datasets had a kind, under a "
                       "name no reverie version wrote, so its kind cannot be told; the registry is left as it was: "
                       "delete that row of its datasets table, or give it the name its kind had then "
                       "(e.g. <knowledge>/learn), and open it again")


class SQLiteRegistry(RegistryStore):
    def __init__(self, path: Path):
        self.path = path
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(release_events)")}
        if "reason" not in columns:  # a registry written before overrides existed
            self._conn.execute("ALTER TABLE release_events ADD COLUMN reason TEXT")
        if "stack" not in {row["name"] for row in self._conn.execute("PRAGMA table_info(models)")}:
            self._conn.execute("ALTER TABLE models ADD COLUMN stack TEXT NOT NULL DEFAULT '[]'")  # before stacks
        self._migrate_typed_outputs()
        self._migrate_dataset_kinds()

    def _migrate_typed_outputs(self) -> None:
        """A registry written before phase outputs were typed: each finished run's artifacts move from the
        'artifacts' key of its outputs to their own column, and cycles get a column for their frozen inputs."""
        def has(conn: sqlite3.Connection, table: str, column: str) -> bool:
            return column in {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}

        if has(self._conn, "cycles", "inputs") and has(self._conn, "phase_runs", "artifacts"):
            return
        with self._tx() as conn:  # checked again inside: another process may have migrated meanwhile
            if not has(conn, "cycles", "inputs"):
                conn.execute("ALTER TABLE cycles ADD COLUMN inputs TEXT")
            if has(conn, "phase_runs", "artifacts"):
                return
            conn.execute("ALTER TABLE phase_runs ADD COLUMN artifacts TEXT NOT NULL DEFAULT '[]'")
            rows = conn.execute("SELECT id, outputs FROM phase_runs").fetchall()
            conn.executemany("UPDATE phase_runs SET artifacts = ? WHERE id = ?", [
                (json.dumps(json.loads(row["outputs"]).get("artifacts", [])), row["id"]) for row in rows])

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # models and lineage -------------------------------------------------------------------------------
    def _insert_model(self, conn: sqlite3.Connection, model: ModelRecord) -> None:
        row = asdict(model)
        datasets = row.pop("datasets")
        row["stack"] = json.dumps(row["stack"])
        values = tuple(row[name.strip()] for name in _MODEL_COLUMNS.split(","))
        conn.execute(f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES ({', '.join('?' * len(values))})", values)
        conn.executemany(
            "INSERT OR IGNORE INTO model_datasets VALUES (?, ?)", [(model.id, d) for d in datasets]
        )

    def add_model(self, model: ModelRecord) -> None:
        with self._tx() as conn:
            self._insert_model(conn, model)

    def bootstrap(self, model: ModelRecord) -> None:
        with self._tx() as conn:
            self._insert_model(conn, model)
            self._move_alias(conn, model.id, "bootstrap", RELEASE_ALIAS, time.time())

    def add_generator(self, model: ModelRecord) -> None:
        with self._tx() as conn:
            self._insert_model(conn, model)
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (GENERATOR_ALIAS, model.id, time.time()))

    def add_reward_model(self, model: ModelRecord, alias: str) -> None:
        if alias == RELEASE_ALIAS:
            raise ReverieError(f"a reward model cannot take the alias {alias!r}")
        with self._tx() as conn:
            self._insert_model(conn, model)
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (alias, model.id, time.time()))

    def _model_from_row(self, row: sqlite3.Row) -> ModelRecord:
        datasets = [
            r[0] for r in self._conn.execute("SELECT dataset_hash FROM model_datasets WHERE model_id = ?", (row["id"],))
        ]
        values = dict(row)
        return ModelRecord(**values | {"stack": json.loads(values["stack"])}, datasets=sorted(datasets))

    def get_model(self, model_id: str) -> ModelRecord:
        row = self._conn.execute(f"SELECT {_MODEL_COLUMNS} FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            known = ", ".join(m.id for m in self.list_models()[-5:]) or "none yet"
            raise ReverieError(f"no model {model_id!r} in the registry (recent: {known})")
        return self._model_from_row(row)

    def list_models(self) -> list[ModelRecord]:
        rows = self._conn.execute(f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY created_at").fetchall()
        return [self._model_from_row(r) for r in rows]

    def _migrate_dataset_kinds(self) -> None:
        """A registry written before datasets carried kind, cycle and strategy: the columns are added and filled,
        once, from the old names (`_legacy_kind`); the cycle of a Learn or Dream dataset, which its name never
        held, from the phase run that output it."""
        def migrated() -> bool:
            return "kind" in {row["name"] for row in self._conn.execute("PRAGMA table_info(datasets)")}

        if migrated():
            return
        with self._tx() as conn:
            if migrated():  # another process opening the same registry got there first
                return
            # SQLite adds a NOT NULL column only with a default; every row gets its real kind below.
            for column in ("kind TEXT NOT NULL DEFAULT ''", "cycle_id TEXT", "strategy TEXT"):
                conn.execute(f"ALTER TABLE datasets ADD COLUMN {column}")
            made_by: dict[str, str] = {}
            for run in conn.execute("SELECT cycle_id, outputs FROM phase_runs WHERE status = 'finished' "
                                    "ORDER BY started_at").fetchall():
                outputs = json.loads(run["outputs"])
                for output in [*outputs.get("artifacts", []), outputs.get("dataset")]:
                    made_by.setdefault(output, run["cycle_id"])
            rows = conn.execute("SELECT hash, name, source FROM datasets").fetchall()
            conn.executemany("UPDATE datasets SET kind = ?, cycle_id = ?, strategy = ? WHERE hash = ?", [
                (*_legacy_kind(row["name"], row["source"], made_by.get(row["hash"])), row["hash"]) for row in rows])

    def _insert_datasets(self, conn: sqlite3.Connection, datasets: Iterable[DatasetRecord]) -> None:
        """Register datasets; a hash already registered keeps its first record (the cycle that first made it)."""
        conn.executemany(
            f"INSERT OR IGNORE INTO datasets ({_DATASET_COLUMNS}) VALUES ({', '.join('?' * 8)})",
            [(d.hash, d.name, d.rows, d.source, d.created_at, d.kind, d.cycle_id, d.strategy) for d in datasets],
        )

    def get_dataset(self, dataset_hash: str) -> DatasetRecord:
        row = self._conn.execute(f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE hash = ?", (dataset_hash,)).fetchone()
        if row is None:
            raise ReverieError(f"no dataset {dataset_hash!r} in the registry")
        return DatasetRecord(**dict(row))

    def add_dataset(self, dataset: DatasetRecord) -> None:
        with self._tx() as conn:
            self._insert_datasets(conn, [dataset])

    def list_datasets(self, kind: DatasetKind | None = None, cycle_id: str | None = None) -> list[DatasetRecord]:
        rows = self._conn.execute(
            f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE (:kind IS NULL OR kind = :kind) "
            "AND (:cycle IS NULL OR cycle_id = :cycle) ORDER BY created_at, rowid",
            {"kind": kind, "cycle": cycle_id},
        ).fetchall()
        return [DatasetRecord(**dict(r)) for r in rows]

    # metrics ------------------------------------------------------------------------------------------
    def log_metrics(self, model_id: str, suite: str, values: dict[str, float]) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                [(model_id, suite, name, float(v), now) for name, v in values.items()],
            )

    def get_metrics(self, model_id: str, suite: str) -> dict[str, float]:
        rows = self._conn.execute(
            "SELECT name, value FROM metrics WHERE model_id = ? AND suite = ?", (model_id, suite)
        ).fetchall()
        return {r["name"]: r["value"] for r in rows}

    def all_metrics(self, model_id: str) -> dict[str, dict[str, float]]:
        rows = self._conn.execute(
            "SELECT suite, name, value FROM metrics WHERE model_id = ? ORDER BY logged_at, suite", (model_id,)
        ).fetchall()
        found: dict[str, dict[str, float]] = {}
        for row in rows:
            found.setdefault(row["suite"], {})[row["name"]] = row["value"]
        return found

    # cycles and phase runs ----------------------------------------------------------------------------
    def start_cycle(self, cycle: Cycle) -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO cycles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(asdict(cycle).values()))

    def set_cycle_inputs(self, cycle_id: str, inputs: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE cycles SET inputs = ? WHERE id = ?", (inputs, cycle_id))

    def get_cycle(self, cycle_id: str) -> Cycle:
        row = self._conn.execute("SELECT * FROM cycles WHERE id = ?", (cycle_id,)).fetchone()
        if row is None:
            raise ReverieError(f"no cycle {cycle_id!r} in the registry")
        return Cycle(**dict(row))

    def unfinished_cycle(self) -> Cycle | None:
        row = self._conn.execute(
            "SELECT * FROM cycles WHERE status = 'running' ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        return Cycle(**dict(row)) if row else None

    def list_cycles(self) -> list[Cycle]:
        return [Cycle(**dict(r)) for r in self._conn.execute("SELECT * FROM cycles ORDER BY started_at")]

    def start_phase(self, run: PhaseRun) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO phase_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.id, run.cycle_id, run.phase, run.status, json.dumps(run.inputs), json.dumps(run.outputs),
                 json.dumps(run.metrics), run.started_at, run.finished_at, run.wall_s, json.dumps(run.artifacts)),
            )

    def finish_phase(
        self,
        run: PhaseRun,
        outputs: dict[str, Any],
        artifacts: list[str],
        metrics: dict[str, float],
        new_models: list[ModelRecord],
        new_datasets: list[DatasetRecord] = (),
    ) -> None:
        finished = time.time()
        with self._tx() as conn:
            self._insert_datasets(conn, new_datasets)
            for model in new_models:
                self._insert_model(conn, model)
            conn.execute(
                "UPDATE phase_runs SET status = 'finished', outputs = ?, artifacts = ?, metrics = ?, finished_at = ?, "
                "wall_s = ? WHERE id = ?",
                (json.dumps(outputs), json.dumps(sorted(artifacts)), json.dumps(metrics), finished,
                 finished - run.started_at, run.id),
            )

    def fail_phase(self, run_id: str, error: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE phase_runs SET status = 'failed', outputs = ?, finished_at = ? WHERE id = ?",
                (json.dumps({"error": error}), time.time(), run_id),
            )

    def interrupt_running_phases(self, cycle_id: str) -> int:
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE phase_runs SET status = 'interrupted' WHERE cycle_id = ? AND status = 'running'", (cycle_id,)
            )
            return cursor.rowcount

    def phase_runs(self, cycle_id: str) -> list[PhaseRun]:
        rows = self._conn.execute(
            "SELECT * FROM phase_runs WHERE cycle_id = ? ORDER BY started_at", (cycle_id,)
        ).fetchall()
        runs = []
        for r in rows:
            data = dict(r)
            for key in ("inputs", "outputs", "metrics", "artifacts"):
                data[key] = json.loads(data[key])
            runs.append(PhaseRun(**data))
        return runs

    def close_cycle(self, cycle_id: str, outcome: str, result_model_id: str, release: bool) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "UPDATE models SET status = ? WHERE id = ?", ("release" if release else "rejected", result_model_id)
            )
            if release:
                self._move_alias(conn, result_model_id, "release", RELEASE_ALIAS, now)
            conn.execute(
                "UPDATE cycles SET status = 'finished', finished_at = ?, outcome = ?, result_model_id = ? WHERE id = ?",
                (now, outcome, result_model_id, cycle_id),
            )

    def abandon_cycle(self, cycle_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE cycles SET status = 'failed', finished_at = ?, outcome = 'abandoned' WHERE id = ?",
                (time.time(), cycle_id),
            )

    # the release pointer ------------------------------------------------------------------------------
    def get_alias(self, name: str = RELEASE_ALIAS) -> str | None:
        row = self._conn.execute("SELECT model_id FROM aliases WHERE name = ?", (name,)).fetchone()
        return row["model_id"] if row else None

    def _move_alias(self, conn: sqlite3.Connection, model_id: str, action: str, name: str, now: float,
                    reason: str | None = None) -> None:
        conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, model_id, now))
        conn.execute("INSERT INTO release_events (model_id, action, at, reason) VALUES (?, ?, ?, ?)",
                     (model_id, action, now, reason))

    def set_alias(self, model_id: str, action: str, name: str = RELEASE_ALIAS, reason: str | None = None) -> None:
        with self._tx() as conn:
            self._move_alias(conn, model_id, action, name, time.time(), reason)

    def aliases(self) -> dict[str, str]:
        return {row["name"]: row["model_id"] for row in self._conn.execute("SELECT name, model_id FROM aliases")}

    def override_release(self, model_id: str, reason: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE models SET status = 'release' WHERE id = ?", (model_id,))
            self._move_alias(conn, model_id, "override", RELEASE_ALIAS, time.time(), reason)

    def release_events(self) -> list[ReleaseEvent]:
        return [ReleaseEvent(**dict(r)) for r in self._conn.execute("SELECT * FROM release_events ORDER BY id")]

    # live serving (tables created by SCHEMA, so an older registry gains them when it is opened) ---------------
    def save_live_counts(self, counts: LiveCounts) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO live_counts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         tuple(asdict(counts).values()))

    def live_counts(self, model_id: str) -> LiveCounts | None:
        row = self._conn.execute("SELECT * FROM live_counts WHERE model_id = ?", (model_id,)).fetchone()
        return LiveCounts(**dict(row)) if row else None

    def add_serving_decision(self, decision: ServingDecision) -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO serving_decisions (action, model_id, against_id, at, reason, figures) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (decision.action, decision.model_id, decision.against_id,
                                                       decision.at, decision.reason, json.dumps(decision.figures)))
            if decision.action == "canary-promote":
                conn.execute("UPDATE models SET status = 'release' WHERE id = ?", (decision.model_id,))
                self._move_alias(conn, decision.model_id, "canary-promote", RELEASE_ALIAS, decision.at, decision.reason)

    def serving_decisions(self) -> list[ServingDecision]:
        rows = self._conn.execute("SELECT * FROM serving_decisions ORDER BY id").fetchall()
        return [ServingDecision(**dict(row) | {"figures": json.loads(row["figures"])}) for row in rows]

    def remove_models(self, model_ids: list[str]) -> None:
        with self._tx() as conn:
            conn.executemany("UPDATE models SET status = 'removed' WHERE id = ?", [(m,) for m in model_ids])

    def referenced_artifacts(self, assume_removed: frozenset[str] = frozenset()) -> set[str]:
        in_use: set[str] = set()
        retired: set[str] = set()
        for row in self._conn.execute("SELECT id, status, weights, adapter, stack FROM models"):
            own = {v for v in (row["weights"], row["adapter"], *json.loads(row["stack"])) if v}
            (retired if row["status"] == "removed" or row["id"] in assume_removed else in_use).update(own)
        refs = set(in_use)
        refs.update(r[0] for r in self._conn.execute("SELECT hash FROM datasets"))
        for row in self._conn.execute("SELECT artifacts FROM phase_runs WHERE status = 'finished'"):
            refs.update(set(json.loads(row["artifacts"])) - (retired - in_use))
        refs.update(r[0] for r in self._conn.execute("SELECT inputs FROM cycles WHERE inputs IS NOT NULL"))
        return refs

    # rhythms (tables created by SCHEMA, so a registry older than rhythms gains them when it is opened) ----------
    def rhythm_since(self, rhythm: str, clock: str, now: float) -> float:
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO rhythm_starts VALUES (?, ?, ?)", (rhythm, clock, now))
            row = conn.execute("SELECT since FROM rhythm_starts WHERE rhythm = ? AND clock = ?", (rhythm, clock))
            return row.fetchone()["since"]

    def add_rhythm_run(self, run: RhythmRun) -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO rhythm_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(asdict(run).values()))

    def finish_rhythm_run(self, run_id: str, status: str, detail: str, cycle_id: str | None = None) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE rhythm_runs SET status = ?, detail = ?, cycle_id = ?, finished_at = ? WHERE id = ?",
                         (status, detail, cycle_id, time.time(), run_id))

    def interrupt_rhythm_runs(self, rhythm: str) -> int:
        with self._tx() as conn:
            return conn.execute("UPDATE rhythm_runs SET status = 'interrupted' WHERE rhythm = ? AND status = 'running'",
                                (rhythm,)).rowcount

    def rhythm_runs(self, rhythm: str | None = None) -> list[RhythmRun]:
        rows = self._conn.execute("SELECT * FROM rhythm_runs WHERE (:rhythm IS NULL OR rhythm = :rhythm) "
                                  "ORDER BY started_at, rowid", {"rhythm": rhythm}).fetchall()
        return [RhythmRun(**dict(row)) for row in rows]
