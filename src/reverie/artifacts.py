"""Content-addressed artifact store: every dataset, adapter and model directory lives under its hash.

Artifacts are written into a staging folder and renamed into place only when complete, so a kill at any
moment leaves either a finished artifact or a staging folder, which `collect_garbage` removes on resume.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from reverie.errors import ReverieError


def hash_directory(path: Path) -> str:
    """SHA-256 over every file's relative path, size and bytes, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(f"{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _fsync_directory(path: Path) -> None:
    """Make a rename durable (the registry commits with synchronous=FULL, so should the files)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class StagedArtifact:
    """A folder being written; `hash` is set once it has been committed."""

    def __init__(self, path: Path):
        self.path = path
        self.hash: str | None = None


class ArtifactStore:
    def __init__(self, root: Path, staging_root: Path):
        self.root = root
        self.staging_root = staging_root
        root.mkdir(parents=True, exist_ok=True)
        staging_root.mkdir(parents=True, exist_ok=True)

    def path(self, artifact_hash: str) -> Path:
        if not artifact_hash or any(c not in "0123456789abcdef" for c in artifact_hash):
            raise ReverieError(f"not an artifact hash: {artifact_hash!r}")
        path = self.root / artifact_hash
        if not path.is_dir():
            raise ReverieError(f"artifact {artifact_hash[:12]} is missing from {self.root}")
        return path

    @contextmanager
    def stage(self) -> Iterator[StagedArtifact]:
        """Yield a staging folder; on a clean exit it is hashed and renamed into the store."""
        staged = StagedArtifact(self.staging_root / uuid.uuid4().hex)
        staged.path.mkdir(parents=True)
        try:
            yield staged
            for file in staged.path.rglob("*"):
                if file.is_file():
                    with file.open("rb") as handle:
                        os.fsync(handle.fileno())
            staged.hash = hash_directory(staged.path)
            final = self.root / staged.hash
            if final.exists():  # same content already stored
                shutil.rmtree(staged.path)
            else:
                os.replace(staged.path, final)
                _fsync_directory(self.root)
        finally:
            if staged.path.exists():
                shutil.rmtree(staged.path, ignore_errors=True)

    def all_hashes(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_dir()}

    def collect_garbage(self, keep: set[str]) -> list[str]:
        """Remove staging leftovers and artifacts nothing refers to; return the removed hashes."""
        for leftover in self.staging_root.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        removed = sorted(self.all_hashes() - keep)
        for artifact_hash in removed:
            self.discard(artifact_hash)
        return removed

    def discard(self, artifact_hash: str) -> None:
        """Delete one artifact: renamed into staging first (one atomic step), so a kill mid-delete leaves the
        artifact whole or gone, never half there; a leftover in staging goes with the next collection."""
        doomed = self.staging_root / f"removed-{artifact_hash}"
        shutil.rmtree(doomed, ignore_errors=True)  # what a killed earlier delete of the same hash left
        os.replace(self.root / artifact_hash, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
