"""Fixtures: a tiny random Llama and tokenizer built in-process, and workspaces that use them."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

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


TINY_SETTINGS = {
    "learn": {"lora": {"rank": 4, "alpha": 8}, "train": {"epochs": 2, "block_size": 128, "rows_per_step": 4}},
    "dream": {
        "samples": 2,
        "train": {"epochs": 1, "block_size": 128, "rows_per_step": 4},
        "seal": {
            "max_new_tokens": 24, "samples": 2, "rounds": 1, "max_passages": 3, "lora": {"rank": 4, "alpha": 8},
            "inner": {"epochs": 1, "block_size": 128, "rows_per_step": 4},
            "generator_train": {"epochs": 1, "block_size": 128},
        },
    },
    "eval": {"general_limit": 20, "max_new_tokens": 6, "batch_size": 32, "safety_limit": 6, "answer_tokens": 8},
    "gate": {
        "capability": {"knowledge.accuracy": 0.0, "general.accuracy": 0.05},
        "alignment": {"xstest.safe_compliance": 0.5},  # a random tiny model never refuses
        "max_regression": {"general.accuracy": 1.0, "knowledge.accuracy": 1.0},
    },
}


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
