"""Continued pretraining's corpus (learn.mode pretrain): the text records of the pool datasets, streamed in
order, each cut into pieces that fit a training row, up to a token budget. Records are read one line at a time,
so a pool larger than memory costs only the budget; the same pool and budget give the same pieces, which is
what lets a resumed Learn continue from its checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from reverie.data.knowledge import Example
from reverie.data.pool import contamination_index
from reverie.data.records import Record
from reverie.errors import ReverieError
from reverie.workspace import Workspace


@dataclass
class PretrainingCorpus:
    examples: list[Example]
    datasets: list[str] = field(default_factory=list)  # hashes of the pool datasets read (lineage)
    tokens: int = 0
    records: int = 0
    contaminated: int = 0  # records skipped: they overlap the current evaluation items


def text_records(ws: Workspace, datasets: list[str], buckets: list[str]) -> Iterator[tuple[str, Record]]:
    """(dataset hash, record) for every text record of the named pool datasets, in the buckets (all when empty),
    one line at a time."""
    for dataset_hash in datasets:
        with open(ws.artifacts.path(dataset_hash) / "records.jsonl", encoding="utf-8") as lines:
            for line in lines:
                record = Record.model_validate_json(line)
                if record.text is not None and (not buckets or record.bucket in buckets):
                    yield dataset_hash, record


def pieces(tokenizer: PreTrainedTokenizerBase, text: str, size: int, limit: int) -> Iterator[tuple[str, int]]:
    """The first `limit` tokens of `text` cut into consecutive pieces of at most `size`, each with its count."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        yield tokenizer.decode(chunk), len(chunk)


def pretraining_corpus(ws: Workspace, datasets: list[str], tokenizer: PreTrainedTokenizerBase,
                       block_size: int) -> PretrainingCorpus:
    """Plain-text examples from the pool's text records, learn.pretrain_tokens tokens of them (the last record
    cut short). A piece leaves room for the BOS and EOS tokens that training adds."""
    settings = ws.config.learn
    contamination = contamination_index(ws)
    corpus = PretrainingCorpus([])
    read: set[str] = set()
    for dataset_hash, record in text_records(ws, datasets, settings.pretrain_buckets):
        if corpus.tokens >= settings.pretrain_tokens:
            break
        assert record.text is not None  # text_records yields text records only
        if contamination.leak(record.text) is not None:
            corpus.contaminated += 1
            continue
        corpus.records += 1
        read.add(dataset_hash)
        for piece, count in pieces(tokenizer, record.text, block_size - 2, settings.pretrain_tokens - corpus.tokens):
            corpus.examples.append(Example(completion=piece))
            corpus.tokens += count
    if not corpus.examples:
        buckets = ", ".join(settings.pretrain_buckets) or "any bucket"
        raise ReverieError(f"learn.mode is pretrain but the data pool has no text record in {buckets} (see "
                           "`reverie data ingest` and `reverie data stats`)")
    corpus.datasets = sorted(read)
    return corpus
