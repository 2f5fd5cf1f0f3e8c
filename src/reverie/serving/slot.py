"""The served model and its hot switch: a new release is loaded beside the old one and swapped in with one
assignment, so a request in flight finishes on the model it started with and none fails."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from peft import PeftModel

from reverie.engines.models import LoadedModel, load_version
from reverie.progress import status_line
from reverie.registry import ModelRecord
from reverie.workspace import Workspace


@dataclass(frozen=True)
class Served:
    model_id: str
    loaded: LoadedModel
    created: int  # unix time the version was registered, as /v1/models reports it


def load_for_serving(workspace: Workspace, record: ModelRecord) -> Served:
    """Load a version for inference (registry records are read by the caller: SQLite stays on its thread)."""
    loaded = load_version(workspace, record, inference=True)
    if isinstance(loaded.model, PeftModel):  # one matmul per layer instead of two
        loaded.model = loaded.model.merge_and_unload()
    loaded.model.eval()
    if loaded.tokenizer.pad_token_id is None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    return Served(record.id, loaded, int(record.created_at))


class ModelSlot:
    """Holds the served model (and a canary served beside it, serving/canary.py); `watch` follows the registry's
    release pointer."""

    def __init__(self, workspace: Workspace, served: Served):
        self.workspace = workspace
        self.served = served
        self.canary: Served | None = None
        self.lock = threading.Lock()  # one generation at a time on the CPU: batches, not threads, share it
        self.switches: list[tuple[str, str]] = []

    async def watch(self, poll_seconds: float) -> None:
        """Poll the release pointer; load a new release in a worker thread, then swap it in."""
        loop = asyncio.get_running_loop()
        unloadable: set[str] = set()  # releases whose load failed: said once, the old release keeps serving
        while True:
            await asyncio.sleep(poll_seconds)
            wanted = self.workspace.registry.get_alias()
            if wanted and wanted != self.served.model_id and wanted not in unloadable:
                record = self.workspace.registry.get_model(wanted)  # read here: the registry is this thread's
                status_line(f"serve: release moved to {record.id}; loading it beside {self.served.model_id}")
                try:
                    fresh = await loop.run_in_executor(None, load_for_serving, self.workspace, record)
                except Exception as exc:  # a broken release must not stop the server from following the next one
                    unloadable.add(wanted)
                    status_line(f"serve: could not load {record.id} ({exc}); still serving {self.served.model_id}")
                    continue
                self.swap(fresh)

    def swap(self, fresh: Served) -> None:
        """Serve `fresh` from the next request on; requests already under way finish on the model they started."""
        previous, self.served = self.served, fresh
        self.switches.append((previous.model_id, fresh.model_id))
        status_line(f"serve: now serving {fresh.model_id} (was {previous.model_id})")
