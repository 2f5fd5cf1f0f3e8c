"""A workspace: reverie.yaml plus the .reverie/ state folder (registry, artifacts, caches, model cards)."""

from __future__ import annotations

import fcntl
import os
import subprocess
from contextlib import contextmanager
from functools import cache, cached_property
from pathlib import Path
from typing import Iterator

from reverie import __version__
from reverie.artifacts import ArtifactStore
from reverie.config import CONFIG_FILE, ReverieConfig, load_config
from reverie.errors import ReverieError
from reverie.presets import DEFAULT_PRESET, preset_text
from reverie.registry import SQLiteRegistry

STATE_DIR = ".reverie"


@cache
def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


class Workspace:
    def __init__(self, root: Path, overrides: list[str] = ()):
        self.root = root
        self.overrides = list(overrides)
        self.state = root / STATE_DIR

    @classmethod
    def init(cls, root: Path, preset: str = DEFAULT_PRESET) -> Workspace:
        """Create the folder, reverie.yaml from a commented preset (kept if present) and the state folder."""
        text = preset_text(preset)  # an unknown preset fails before anything is created
        root.mkdir(parents=True, exist_ok=True)
        config = root / CONFIG_FILE
        if not config.exists():
            config.write_text(text, encoding="utf-8")
        (root / STATE_DIR).mkdir(exist_ok=True)
        workspace = cls(root)
        workspace.registry  # creates the database
        return workspace

    @classmethod
    def open(cls, root: Path, overrides: list[str] = (), validate: bool = False) -> Workspace:
        """An existing workspace. With `validate`, reverie.yaml and the --set values are checked now (a
        ConfigError lists every problem), so a command reports a broken config before it does any work."""
        if not (root / CONFIG_FILE).is_file() or not (root / STATE_DIR).is_dir():
            raise ReverieError(f"{root} is not a reverie workspace (create one with `reverie init {root}`)")
        workspace = cls(root, overrides)
        if validate:
            workspace.config  # loads and checks it; cached for the rest of the command
        return workspace

    @cached_property
    def config(self) -> ReverieConfig:
        return load_config(self.root / CONFIG_FILE, self.overrides)

    @cached_property
    def registry(self) -> SQLiteRegistry:
        return SQLiteRegistry(self.state / "registry.sqlite")

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.state / "artifacts", self.state / "staging")

    @property
    def cache_dir(self) -> Path:
        return self.state / "cache"

    @property
    def cards_dir(self) -> Path:
        return self.state / "cards"

    def write_text_atomic(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def cycle_process_alive(self) -> bool:
        """Whether some process holds the cycle lock (a killed cycle leaves its rows but not the lock)."""
        with open(self.state / "cycle.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    @contextmanager
    def cycle_lock(self) -> Iterator[None]:
        """One cycle at a time per workspace; the OS drops the lock if the process dies."""
        handle = open(self.state / "cycle.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ReverieError(
                f"a cycle or `reverie seal train` is already running in {self.root} (see `reverie status`)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
