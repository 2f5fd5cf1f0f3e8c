"""`reverie export`: a model version as a Hugging Face directory that transformers loads, or as a GGUF file that
llama.cpp-compatible readers load, with its model card beside it. Written into a temporary folder and renamed,
so an interrupted export leaves nothing that looks finished."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Literal

from reverie.config import QuantFormat
from reverie.engines.gguf_export import quantize_gguf, write_gguf
from reverie.engines.models import gguf_weights, merged_weights_dir, weights_dir
from reverie.errors import ReverieError
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

ExportFormat = Literal["hf", "gguf"]


def export_model(ws: Workspace, record: ModelRecord, fmt: ExportFormat, out: Path,
                 quant: QuantFormat | None = None) -> Path:
    """Write `record` to the new folder `out` and return the path of the exported model (folder or GGUF file)."""
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise ReverieError(f"{out} already exists and is not an empty folder: export writes a new one")
    if fmt == "hf" and quant:
        raise ReverieError("--quant applies to --format gguf only (a Hugging Face directory holds float weights)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        stored = gguf_weights(ws, record)
        if fmt == "hf":
            _write_hf(ws, record, staging)
        elif stored is not None and quant is None:  # already a GGUF: exported as it is served
            shutil.copyfile(stored, staging / "model.gguf")
        else:
            _write_hf(ws, record, staging / "hf")
            full = write_gguf(staging / "hf", staging / ("model.gguf" if quant is None else "f32.gguf"), dtype="f32")
            if quant is not None:
                quantize_gguf(full, staging / "model.gguf", quant)
                full.unlink()
            shutil.rmtree(staging / "hf")
        card = ws.cards_dir / f"{record.id}.md"
        if card.is_file():
            shutil.copyfile(card, staging / "README.md")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "model.gguf" if fmt == "gguf" else out


def _write_hf(ws: Workspace, record: ModelRecord, directory: Path) -> None:
    """Safetensors weights (an adapter merged in, a GGUF dequantized) and the tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    if not record.adapter:
        source = weights_dir(ws, record)
        for item in source.iterdir():
            if item.is_file() and item.name != "reverie_config.json":
                shutil.copyfile(item, directory / item.name)
        return
    merged_weights_dir(ws, record, directory)
