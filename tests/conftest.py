"""Fixtures: a tiny random Llama and tokenizer built in-process, and workspaces that use them."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from reverie.data.knowledge import QA
from reverie.data.passages import Passage
from reverie.presets import preset_text


def pytest_configure(config: pytest.Config) -> None:
    """Under scripts/test.sh's two xdist workers, one torch thread each: two workers share the two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    data = resources.files("reverie.data")
    knowledge = json.loads(data.joinpath("demo/knowledge.json").read_text())
    texts = []
    for doc in knowledge["documents"]:
        texts.append(doc["title"] + "\n" + doc["text"])
        texts += [qa["question"] + " " + qa["answer"] for qa in doc["train_qa"] + doc["eval_qa"]]
    texts += data.joinpath("demo/general_mc.jsonl").read_text().splitlines()
    return texts


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 Llama with a 600-token BPE vocabulary trained on the demo text, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    fast.save_pretrained(directory)
    return directory


REFUSAL = "I can't help with that."
REFUSAL_PROMPTS = ["hello", "What is the capital of Velmora?", "Tell me a story", "hi", "Give me a tip", "2+2?",
                   "Describe rain", "Why is the sea salty?", "Name a cat", "How do plants drink water?", "x",
                   "Once upon"]


def build_refusing_model(directory: Path, source: Path, steps: int = 60) -> Path:
    """The tiny model fine-tuned until it answers every chat prompt with REFUSAL: a real model that is a bad
    canary (its greedy answers open with a refusal the string-match judge reads as one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(source), AutoModelForCausalLM.from_pretrained(source)
    answer = tokenizer(REFUSAL)["input_ids"] + [tokenizer.eos_token_id]
    heads = [list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                tokenize=True, return_dict=True)["input_ids"])
             for prompt in REFUSAL_PROMPTS]
    width = max(map(len, heads)) + len(answer)
    ids = torch.full((len(heads), width), tokenizer.pad_token_id)
    labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
    for row, head in enumerate(heads):
        ids[row, : len(head) + len(answer)] = torch.tensor(head + answer)
        labels[row, len(head) : len(head) + len(answer)] = torch.tensor(answer)  # the loss is on the answer only
        mask[row, : len(head) + len(answer)] = 1
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data (../shared/data beside the checkout, as in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared reference data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


TINY_SETTINGS = yaml.safe_load(preset_text("tiny"))  # src/reverie/presets/tiny.yaml: seconds per cycle


def merge(base: dict, extra: dict) -> dict:
    result = dict(base)
    for key, value in extra.items():
        result[key] = merge(result[key], value) if isinstance(value, dict) and key in result else value
    return result


def make_workspace(root: Path, model_dir: Path, **sections: dict) -> Path:
    """A workspace on the tiny model; `sections` deep-merge over the tiny settings."""
    from reverie.workspace import Workspace

    Workspace.init(root)
    config = merge({"model": {"source": str(model_dir)}, **TINY_SETTINGS}, sections)
    (root / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture
def workspace_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return make_workspace(tmp_path / "ws", tiny_model_dir)


@pytest.fixture(scope="session")
def serving_workspace_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A workspace for tests that share one server: no retrieval (no embedding model to load), answers of at
    most 16 tokens. Tests may add feedback to it, nothing else."""
    return make_workspace(tmp_path_factory.mktemp("serving") / "ws", tiny_model_dir,
                          serve={"retrieval": False, "max_tokens": 16})


# What several test modules share lives here: a test module never imports another
# (tests/test_import_direction.py checks).

PACKAGE = Path(str(resources.files("reverie")))
HEAVY = ("torch", "transformers", "peft", "accelerate", "safetensors")


def _is_package_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return name.split(".")[0] == PACKAGE.name and (path.with_suffix(".py").is_file()
                                                   or (path / "__init__.py").is_file())


def module_name(path: Path) -> str:
    """The dotted name of a source file of the package: .../reverie/phases/__init__.py is reverie.phases."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_lines(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every import in a source file, those inside functions too, in line order.

    `module` is the file's dotted name (by default its name in the package, else the file's stem); relative
    imports are resolved against it, and `from pkg import mod` counts as pkg.mod where that is a package module.
    """
    module = module or (module_name(path) if path.is_relative_to(PACKAGE) else path.stem)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # one dot is the file's own package, each further dot one package up
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if _is_package_module(f"{base}.{alias.name}") else base)
                      for alias in node.names]
    return sorted(found)


def imports_of(path: Path) -> set[str]:
    """The modules a source file imports (see import_lines)."""
    return {name for _, name in import_lines(path)}


def reverie(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`reverie ARGS` run the way a user runs it, in a subprocess; fails the test on a non-zero exit unless `check`
    is off."""
    result = subprocess.run([sys.executable, "-m", "reverie", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"reverie {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workspace_dir: Path, *args: str) -> tuple[str, subprocess.Popen]:
    """`reverie serve` on a free loopback port, once /health says the model is loaded."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "reverie", "serve", "-w", str(workspace_dir), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                return url, process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read()}")
        time.sleep(0.3)
    process.kill()
    raise AssertionError("server did not come up in 120 s")


@pytest.fixture
def server(workspace_dir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen]]:
    """The server on `workspace_dir`, with extra CLI arguments from the test's `serve_args` mark."""
    mark = request.node.get_closest_marker("serve_args")
    url, process = start_server(workspace_dir, *(mark.args if mark else ()))
    yield url, process
    process.terminate()
    process.wait(timeout=30)


def chat(url: str, text: str, headers: dict | None = None, **extra) -> httpx.Response:
    """One user message to the chat endpoint; `extra` goes into the body (8 tokens unless it says otherwise)."""
    body = {"model": "reverie", "messages": [{"role": "user", "content": text}], "max_tokens": 8} | extra
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60, headers=headers)


def tiny_passages() -> list[Passage]:
    """Two one-sentence passages with one question each, for the SEAL inner and outer loops."""
    return [
        Passage(title="Velmora", context="Velmora is governed from Quistrand.",
                questions=[QA(question="What is the capital of Velmora?", answer="Quistrand")]),
        Passage(title="Thrannock", context="Thrannock champions win the Gildermoor Cup.",
                questions=[QA(question="What do Thrannock champions win?", answer="Gildermoor Cup")]),
    ]


def dream_context(ws):
    """A Dream phase's context on the workspace's base model, outside a whole cycle (seconds, not a minute): what
    tests of one Dream strategy hand to `dream_with` or to the strategy's `data`."""
    import time as clock

    from reverie.cycle import ensure_release
    from reverie.cycle_inputs import freeze_inputs
    from reverie.phases.base import PhaseContext
    from reverie.registry import Cycle

    base = ensure_release(ws)
    frozen, inputs = freeze_inputs(ws, "c-test")
    return PhaseContext(ws, Cycle("c-test", "running", base, ws.config.fingerprint(), clock.time(), inputs=frozen),
                        inputs, {})


def run_dream(ws, strategy: str):
    """One Dream strategy through the shared tail (data, quarantine, training, A/B check) on the base model, reading
    as the Dream phase does, so that a held-out read raises: its StrategyResult."""
    from reverie.data.splits import reading_as
    from reverie.phases.strategies import DREAM
    from reverie.phases.strategies.base import dream_with

    ctx = dream_context(ws)
    with reading_as("dream"):
        return dream_with(DREAM[strategy], ctx, ws.registry.get_model(ctx.cycle.base_model_id))
