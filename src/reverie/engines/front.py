"""The quality-versus-cost front of Compress: every variant measured by the same code on the same probe.

A variant is a transformers model or a runtime with the same `generate(...)` and `__call__(input_ids=,
attention_mask=) -> .logits` (engines/llama_cpp_runtime.py); only those two entry points are used, through the
shared helpers (generation, evaluation, scoring), so that a quantized GGUF and a pruned safetensors model are
measured alike. The probe is made of training material only: the Gate's suites stay held out.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from reverie.config import FrontSettings
from reverie.data.multiple_choice import ChoiceItem, load_choice_items
from reverie.engines.evaluation import closed_book_qa
from reverie.engines.generation import generate
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.scoring import continuation_logprobs, perplexities
from reverie.errors import ReverieError

RAPL = Path("/sys/class/powercap/intel-rapl:0")  # package 0: the whole CPU package, not this process alone
PROC_STATUS = Path("/proc/self/status")
WARMUP_TOKENS = 4
TIMING_REPEATS = 3  # batch 1 is timed this many times and the fastest kept: other load only ever slows a run
RSS_SAMPLE_S = 0.005
MB = 1e6  # memory and disk are shown in SI megabytes


@dataclass(frozen=True)
class FrontProbe:
    """What every variant is measured on: the training questions, text for perplexity, reasoning items."""

    questions: list[tuple[str, str]]  # (question, answer): the knowledge drop's training questions
    texts: list[str]  # for perplexity
    reasoning: list[ChoiceItem] = field(default_factory=list)  # may be empty: then no reasoning axis

    def __post_init__(self) -> None:
        if not self.questions or not self.texts:
            raise ValueError("a front probe needs at least one question (decode speed is timed on them) and one text")


@dataclass(frozen=True)
class Measurement:
    """One variant's place on the front. quality: accuracy, perplexity, distinct_2 [, reasoning_accuracy];
    cost: tokens_per_s_b{n} per batch size, seconds_per_token, memory_mb, disk_bytes, joules_per_token."""

    quality: dict[str, float]
    cost: dict[str, float]
    energy: Literal["rapl", "estimate"]  # how joules_per_token was obtained


def measure(model: Any, tokenizer: PreTrainedTokenizerBase, probe: FrontProbe, settings: FrontSettings,
            max_new_tokens: int, batch_size: int, disk_bytes: int) -> Measurement:
    """Quality and cost of one variant. `max_new_tokens` and `batch_size` are for the answers and the scoring
    batches; decode speed uses settings.decode_tokens and settings.batch_sizes (batch 1 is always timed: it is
    the front's cost axis). `disk_bytes` is the variant's stored size, which only the caller knows."""
    per_text = perplexities(model, tokenizer, probe.texts, batch_size)
    sampled = _sampled_answers(model, tokenizer, probe.questions, settings, max_new_tokens, batch_size)
    quality = {
        "accuracy": closed_book_qa(model, tokenizer, probe.questions, max_new_tokens, batch_size)[0]["accuracy"],
        "perplexity": sum(per_text) / len(per_text),  # the mean over texts: each weighs the same, however long
        "distinct_2": distinct_2(sampled),
    }
    if probe.reasoning:
        quality["reasoning_accuracy"] = choice_accuracy(model, tokenizer, probe.reasoning, batch_size)
    return Measurement(quality, *_decode_cost(model, tokenizer, probe, settings, disk_bytes))


def distinct_2(texts: list[str]) -> float:
    """Distinct word bigrams over all word bigrams, pooled across texts (Li et al., 2016); 0 when no text has two
    words. Bigrams never span two texts."""
    split = [text.lower().split() for text in texts]
    bigrams = [pair for words in split for pair in zip(words, words[1:])]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def _sampled_answers(model: Any, tokenizer: PreTrainedTokenizerBase, questions: list[tuple[str, str]],
                     settings: FrontSettings, max_new_tokens: int, batch_size: int) -> list[str]:
    prompts = [user_prompt_ids(tokenizer, question) for question, _ in questions]
    sampled = generate(model, tokenizer, prompts, max_new_tokens, batch_size, temperature=1.0,
                       samples=settings.diversity_samples, seed=0, description="front: sampled answers")
    return [answer for answers in sampled for answer in answers]


def choice_accuracy(model: Any, tokenizer: PreTrainedTokenizerBase, items: list[ChoiceItem],
                    batch_size: int) -> float:
    """Multiple choice scored as the general suite scores it (engines/suites/general.py): the choice with the
    highest log-likelihood after the goal wins. Any number of choices, so that ARC's three to five fit."""
    rows = [(tokenizer(item.goal)["input_ids"], tokenizer(" " + choice.strip(), add_special_tokens=False)["input_ids"])
            for item in items for choice in item.choices]
    scores = iter(continuation_logprobs(model, tokenizer, rows, batch_size))
    correct = 0
    for item in items:
        options = [next(scores) for _ in item.choices]
        correct += options.index(max(options)) == item.label
    return correct / len(items)


def _decode_cost(model: Any, tokenizer: PreTrainedTokenizerBase, probe: FrontProbe, settings: FrontSettings,
                 disk_bytes: int) -> tuple[dict[str, float], Literal["rapl", "estimate"]]:
    """Tokens per second at each batch size, n prompts decoding exactly decode_tokens each (prefill included),
    after one untimed warm-up: the largest batch first, while memory is sampled, then batch 1, TIMING_REPEATS
    times between two reads of the energy counter (batch 1 always: it is the front's cost axis; the fastest run
    counts, since a shared machine's noise only adds time), then the others."""
    questions = [user_prompt_ids(tokenizer, question) for question, _ in probe.questions]

    def decode(n: int) -> float:
        prompts = [questions[i % len(questions)] for i in range(n)]
        start = time.perf_counter()
        generate(model, tokenizer, prompts, settings.decode_tokens, n, exact=True, description=f"front: decode b{n}")
        return time.perf_counter() - start

    generate(model, tokenizer, questions[:1], WARMUP_TOKENS, 1, exact=True, description="front: warm-up")
    largest = max(settings.batch_sizes)
    with PeakRss() as rss:
        seconds = {largest: decode(largest)}
    before = _rapl_uj()
    seconds[1] = min(decode(1) for _ in range(TIMING_REPEATS))
    joules = _rapl_joules(before)  # over every repeat
    for n in settings.batch_sizes:
        if n not in seconds:
            seconds[n] = decode(n)
    cost = {f"tokens_per_s_b{n}": n * settings.decode_tokens / seconds[n] for n in sorted(seconds)}
    cost |= {"seconds_per_token": seconds[1] / settings.decode_tokens,
             "memory_mb": (weight_bytes(model) + rss.growth) / MB, "disk_bytes": float(disk_bytes)}
    if joules is not None:
        return cost | {"joules_per_token": joules / (TIMING_REPEATS * settings.decode_tokens)}, "rapl"
    return cost | {"joules_per_token": settings.power_watts * cost["seconds_per_token"]}, "estimate"


def weight_bytes(model: Any) -> int:
    """Bytes of the weights a variant holds in memory: a runtime's own count (`weight_bytes()`, e.g. llama.cpp's
    tensors), else a torch module's parameters and buffers."""
    if callable(getattr(model, "weight_bytes", None)):
        return int(model.weight_bytes())
    if callable(getattr(model, "parameters", None)):
        tensors = [*model.parameters(), *model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)
    raise TypeError(f"{type(model).__name__} has neither weight_bytes() nor parameters(): its memory is unknown")


def _rss_bytes() -> int | None:
    """This process's resident set size, from /proc (None where there is no /proc)."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakRss:
    """Samples the resident set size while a block runs; `growth` is its peak rise over the start: what decoding
    adds (KV cache, activations) on top of the weights, which were resident before."""

    def __init__(self) -> None:
        self.growth = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._start = _rss_bytes()
        self._peak = self._start
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self._see(_rss_bytes())

    def _see(self, rss: int | None) -> None:
        if rss is not None and self._peak is not None:
            self._peak = max(self._peak, rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        self._see(_rss_bytes())
        self.growth = (self._peak - self._start) if self._start is not None else 0


def _rapl_uj() -> int | None:
    """The package energy counter in microjoules, or None where RAPL cannot be read (no Intel RAPL, or not
    permitted: the counter is root-only on most kernels)."""
    try:
        return int((RAPL / "energy_uj").read_text())
    except (OSError, ValueError):
        return None


def _rapl_joules(before: int | None) -> float | None:
    """Joules since `before`, across one wrap of the counter."""
    after = _rapl_uj()
    if before is None or after is None:
        return None
    if after < before:
        try:
            after += int((RAPL / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            return None
    return (after - before) / 1e6


def probe_texts(spec: str, documents_text: list[str], root: Path) -> list[str]:
    """The perplexity texts compress.front.perplexity_text names: 'knowledge' (the knowledge drop's documents), a
    JSONL file of {text} rows, or a text file (its blank-line separated paragraphs), relative to the workspace."""
    key = "compress.front.perplexity_text"
    if spec == "knowledge":
        return list(documents_text)
    path, text = _read(spec, root, key, "'knowledge', a text file or a JSONL file of {\"text\": ...} rows")
    if path.suffix == ".jsonl":
        texts = []
        for number, line in _lines(text):
            row = _json_row(line, path, number, key)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
                raise ReverieError(f"{key}: {path}, line {number}: expected {{\"text\": \"...\"}} with non-empty text")
            texts.append(row["text"])
    else:
        texts = [paragraph.strip() for paragraph in text.replace("\r\n", "\n").split("\n\n") if paragraph.strip()]
    if not texts:
        raise ReverieError(f"{key}: {path} holds no text")
    return texts


def reasoning_items(spec: str | None, root: Path, limit: int, general_suite: str) -> list[ChoiceItem]:
    """The reasoning items compress.front.reasoning names (none when unset): a multiple-choice JSONL in PIQA
    ({goal, sol1, sol2, label}) or ARC format, from a training split. The Gate's general suite (`general_suite`,
    eval.general_suite) is refused, and so is a file sharing items with it: what the Gate holds out stays out."""
    key = "compress.front.reasoning"
    if spec is None:
        return []
    path, text = _read(spec, root, key, "a PIQA or ARC multiple-choice JSONL file from a training split")
    if general_suite != "builtin" and (root / Path(general_suite).expanduser()).resolve() == path.resolve():
        raise ReverieError(f"{key}: {path} is eval.general_suite, the Gate's held-out general check; name a "
                           "training split instead")
    items = []
    for number, line in _lines(text):
        items.append(_choice_item(_json_row(line, path, number, key), path, number, key))
        if len(items) >= limit:
            break
    if not items:
        raise ReverieError(f"{key}: {path} holds no items")
    held_out = {item.goal for item in load_choice_items(general_suite, root, sys.maxsize)}
    if shared := [item.goal for item in items if item.goal in held_out]:
        raise ReverieError(f"{key}: {len(shared)} of its items are in eval.general_suite, the Gate's held-out general "
                           f"check (e.g. {shared[0]!r}); name a training split instead")
    return items


def _read(spec: str, root: Path, key: str, allowed: str) -> tuple[Path, str]:
    path = root / Path(spec).expanduser()
    if not path.is_file():
        raise ReverieError(f"{key}: {path} does not exist (use {allowed})")
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReverieError(f"{key}: {path} is not UTF-8 text") from None


def _lines(text: str) -> list[tuple[int, str]]:
    """Numbered non-blank lines; JSON Lines end at \\n only (see data/jsonl.py)."""
    return [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def _json_row(line: str, path: Path, number: int, key: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReverieError(f"{key}: {path}, line {number}: not JSON ({exc.msg})") from None


def _choice_item(row: Any, path: Path, number: int, key: str) -> ChoiceItem:
    """A PIQA row, or an ARC row as AI2 ships it ({question: {stem, choices: [{text, label}]}, answerKey}) or as
    the Hugging Face hub does ({question, choices: {text: [...], label: [...]}, answerKey})."""
    try:
        if "goal" in row:
            goal, choices, label = str(row["goal"]), [str(row["sol1"]), str(row["sol2"])], int(row["label"])
            if label not in (0, 1):
                raise ValueError(f"label must be 0 or 1, got {label}")
        else:
            question = row["question"]
            if isinstance(question, dict):
                goal, options = question["stem"], question["choices"]
                choices, labels = [str(o["text"]) for o in options], [str(o["label"]) for o in options]
            else:
                goal, choices, labels = question, list(map(str, row["choices"]["text"])), row["choices"]["label"]
            labels = [str(label) for label in labels]
            if len(labels) != len(choices) or str(row["answerKey"]) not in labels:
                raise ValueError(f"answerKey {row['answerKey']!r} is not one of the choice labels {labels}")
            goal, label = str(goal), labels.index(str(row["answerKey"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReverieError(f"{key}: {path}, line {number}: expected PIQA {{goal, sol1, sol2, label}} or ARC "
                           f"{{question, choices, answerKey}} ({exc})") from None
    if len(choices) < 2:
        raise ReverieError(f"{key}: {path}, line {number}: a multiple-choice item needs two choices or more")
    return ChoiceItem(goal, tuple(choices), label)
