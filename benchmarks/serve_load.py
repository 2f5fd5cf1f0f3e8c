"""Load on `reverie serve` (SmolLM2-135M-Instruct, loopback) while the release switches and rolls back, against
the same load on a plain transformers generate loop without batching, in one run; or, with --compare-scheduling,
serve.scheduling continuous against batches on llama.cpp under the same load.

    .venv/bin/python benchmarks/serve_load.py [--clients 8] [--seconds 60] [--max-tokens 32]
    .venv/bin/python benchmarks/serve_load.py --compare-scheduling [--clients 8] [--seconds 60]

A quick cycle (1 epoch, no Dream) first makes a second model. During the served run, a third of the way in the
release pointer rolls back to the base model (`reverie rollback`), and two thirds of the way in it moves to the
candidate again (as a cycle's close moves it). Every client sends chat requests back to back; each request's
status, latency and completion tokens are recorded. The baseline runs the same clients in this process against
one lock around `model.generate` for a single prompt: what serving without a batcher amounts to.
Writes benchmarks/results/serve_load.{json,md}.

--compare-scheduling serves the base model (model.runtime llama.cpp, no cycle) four times in turn: two loads,
each under serve.scheduling continuous and then batches, serve.batch_size = clients. Both loads mix max_tokens
(16, 64, 256 in turn; greedy answers may end sooner); in `plain` every request is answered whole, in `mixed` every
other one is streamed. Time to first token is the first streamed content, or the whole answer for a plain request.
Writes benchmarks/results/serve_scheduling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch
import yaml
from results_io import write_results

from reverie.cycle import rollback
from reverie.engines.models import load_version
from reverie.presets import preset_text
from reverie.workspace import Workspace

MIXED_MAX_TOKENS = (16, 64, 256)
PROMPTS = ["Give me a tip for learning a language.", "What is a good name for a cat?", "Describe rain in a sentence.",
           "How do plants drink water?", "Suggest a weekend hobby.", "Why is the sea salty?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(state: Path) -> Workspace:
    """A workspace on the embedded model with a released candidate (cycle run once, resumed if killed)."""
    if not (state / "reverie.yaml").exists():
        Workspace.init(state)
        config = yaml.safe_load(preset_text("default"))
        config["learn"]["train"]["epochs"] = 1
        config["dream"]["enabled"] = False
        config["eval"] |= {"suites": ["knowledge", "general", "xstest"], "safety_limit": 10, "general_limit": 20}
        config["gate"] |= {"capability": {"general.accuracy": 0.3}, "max_regression": {}}
        (state / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ws = Workspace.open(state)
    if not any(e.action == "release" for e in ws.registry.release_events()):
        subprocess.run([sys.executable, "-m", "reverie", "cycle", "-w", str(state),
                        *(["--resume"] if ws.registry.unfinished_cycle() else [])], check=True)
    return Workspace.open(state)


def start_server(root: Path, *settings: str) -> tuple[str, subprocess.Popen]:
    """`reverie serve` on a free loopback port with `--set` overrides, once /health says the model is loaded."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "reverie", "serve", "-w", str(root), "--port", str(port),
                               *(arg for setting in settings for arg in ("--set", setting))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    return url, server


def run_clients(clients: int, seconds: float, request, events: list[tuple[float, callable]] = ()) -> list[dict]:
    """`clients` threads calling request(client, n) for their n-th request back to back for `seconds`; it returns
    (status, completion tokens, model, seconds to the first token or None). Events fire at their offsets."""
    records: list[dict] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(index: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                status, tokens, model, first = request(index, n)
            except Exception as exc:  # a transport error is a failed request too
                status, tokens, model, first = f"error: {type(exc).__name__}", 0, "", None
            n += 1
            latency = time.perf_counter() - started
            with lock:
                records.append({"status": status, "latency": latency, "tokens": tokens, "model": model,
                                "at": started, "first_token": latency if first is None else first})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for offset, action in sorted(events, key=lambda e: e[0]):
        time.sleep(max(0.0, start + offset - time.perf_counter()))
        action()
    for thread in threads:
        thread.join()
    return records


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(records: list[dict], seconds: float) -> dict:
    ok = [r for r in records if r["status"] == 200]
    latencies, firsts = [r["latency"] for r in ok], [r["first_token"] for r in ok]
    return {"sent": len(records), "succeeded": len(ok), "failed": len(records) - len(ok),
            "requests_per_s": len(ok) / seconds, "p50_s": quantile(latencies, 0.5), "p95_s": quantile(latencies, 0.95),
            "ttft_p50_s": quantile(firsts, 0.5), "ttft_p95_s": quantile(firsts, 0.95),
            "tokens_per_s": sum(r["tokens"] for r in ok) / seconds,
            "mean_latency_s": statistics.fmean(latencies) if latencies else float("nan")}


def chat_request(session: httpx.Client, url: str, prompt: str, max_tokens: int, stream: bool):
    """One chat request: (status, completion tokens, model, seconds to the first streamed content or None)."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "retrieval": False}
    if not stream:
        response = session.post(f"{url}/v1/chat/completions", json=body)
        answer = response.json()
        return response.status_code, answer.get("usage", {}).get("completion_tokens", 0), answer.get("model", ""), None
    started, first, tokens, model = time.perf_counter(), None, 0, ""
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    with session.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                return "error event", 0, model, first
            model = event["model"]
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
    return response.status_code, tokens, model, first


def scheduling_workspace(state: Path) -> Workspace:
    """A workspace on the embedded model served by llama.cpp, without memory (nothing to retrieve)."""
    if not (state / "reverie.yaml").exists():
        Workspace.init(state)
        config = yaml.safe_load(preset_text("default"))
        config["model"]["runtime"] = "llama.cpp"
        config["serve"]["retrieval"] = False
        (state / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Workspace.open(state)


def compare_scheduling(args: argparse.Namespace) -> None:
    """Each load on continuous, then on batches, one server at a time; the ratios continuous / batches."""
    ws = scheduling_workspace(Path(args.state + "_scheduling"))
    results: dict[str, dict] = {}
    for load in ("plain", "mixed"):
        for scheduling in ("continuous", "batches"):
            url, server = start_server(ws.root, f"serve.scheduling={scheduling}", f"serve.batch_size={args.clients}")
            try:
                session = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=args.clients * 2))
                chat_request(session, url, PROMPTS[0], 8, False)  # warm: the first request sets up the context

                def request(index: int, n: int):
                    k = index + n
                    return chat_request(session, url, PROMPTS[k % len(PROMPTS)], MIXED_MAX_TOKENS[k % 3],
                                        stream=load == "mixed" and k % 2 == 0)

                results[f"{load}/{scheduling}"] = summary(run_clients(args.clients, args.seconds, request),
                                                          args.seconds)
            finally:
                server.terminate()
                server.wait(timeout=60)
    ratios = {load: {figure: results[f"{load}/continuous"][figure] / results[f"{load}/batches"][figure]
                     for figure in ("requests_per_s", "tokens_per_s", "p50_s", "p95_s", "ttft_p50_s", "ttft_p95_s")}
              for load in ("plain", "mixed")}
    table = ["| load | scheduling | sent | failed | requests/s | output tokens/s | p50 s | p95 s | TTFT p50 s | "
             "TTFT p95 s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        table.append(f"| {key.replace('/', ' | ')} | {r['sent']} | {r['failed']} | {r['requests_per_s']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['ttft_p50_s']:.2f} | "
                     f"{r['ttft_p95_s']:.2f} |")
    for load, ratio in ratios.items():
        table.append(f"| {load} | continuous / batches | | | {ratio['requests_per_s']:.2f}x | "
                     f"{ratio['tokens_per_s']:.2f}x | {ratio['p50_s']:.2f}x | {ratio['p95_s']:.2f}x | "
                     f"{ratio['ttft_p50_s']:.2f}x | {ratio['ttft_p95_s']:.2f}x |")
    table += ["", f"SmolLM2-135M-Instruct, model.runtime llama.cpp (f16 GGUF), {args.clients} clients sending back "
              f"to back for {args.seconds:.0f} s per row, serve.batch_size {args.clients}; max_tokens {MIXED_MAX_TOKENS} in "
              "turn; mixed: every other request streamed. TTFT: first streamed content, or the whole answer when not "
              "streamed. Ratios below 1 on the time columns mean continuous is faster."]
    write_results(args.out or "benchmarks/results/serve_scheduling",
                  {"settings": vars(args), "max_tokens_mix": MIXED_MAX_TOKENS, **results, "ratios": ratios},
                  "\n".join(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--state", default="benchmarks/.cache/serve_load")
    parser.add_argument("--out", help="results path without suffix (default benchmarks/results/serve_load, or "
                        "serve_scheduling with --compare-scheduling)")
    parser.add_argument("--compare-scheduling", action="store_true",
                        help="serve.scheduling continuous against batches instead (serve_scheduling.{json,md})")
    args = parser.parse_args()
    if args.compare_scheduling:
        compare_scheduling(args)
        return
    args.out = args.out or "benchmarks/results/serve_load"
    ws = prepare(Path(args.state))
    candidate = ws.registry.get_alias()
    url, server = start_server(ws.root, "serve.poll_seconds=0.5", f"serve.batch_size={args.clients}")
    try:
        session = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=args.clients * 2))

        def served(index: int, n: int):
            return chat_request(session, url, PROMPTS[(index + n) % len(PROMPTS)], args.max_tokens, False)

        switches: list[str] = []
        events = [(args.seconds / 3, lambda: switches.append("rollback to " + rollback(Workspace.open(ws.root))[1])),
                  (2 * args.seconds / 3, lambda: (Workspace.open(ws.root).registry.set_alias(candidate, "release"),
                                                  switches.append(f"release of {candidate}")))]
        served_records = run_clients(args.clients, args.seconds, served, events)
    finally:
        server.terminate()
        server.wait(timeout=60)

    loaded = load_version(ws, ws.registry.get_model(candidate))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    generate_lock = threading.Lock()

    def plain(index: int, n: int):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[(index + n) % len(PROMPTS)]}],
                                            add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        with generate_lock, torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=args.max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return 200, out.shape[1] - ids.shape[1], candidate, None

    plain_records = run_clients(args.clients, args.seconds, plain)
    results = {"served": summary(served_records, args.seconds), "plain": summary(plain_records, args.seconds)}
    models_seen = sorted({r["model"] for r in served_records if r["model"]})
    ratio = results["served"]["tokens_per_s"] / results["plain"]["tokens_per_s"]
    table = ["| setup | sent | succeeded | failed | p50 s | p95 s | tokens/s |", "|---|---|---|---|---|---|---|"]
    for name, label in (("served", "reverie serve (batched, hot switch + rollback)"),
                        ("plain", "plain generate loop, no batching")):
        r = results[name]
        table.append(f"| {label} | {r['sent']} | {r['succeeded']} | {r['failed']} | {r['p50_s']:.2f} | "
                     f"{r['p95_s']:.2f} | {r['tokens_per_s']:.1f} |")
    table += ["", f"{args.clients} clients, {args.seconds:.0f} s each, max_tokens {args.max_tokens}; during the served "
              f"run: {', '.join(switches)}; models that answered: {', '.join(models_seen)}. Throughput ratio "
              f"served / plain: {ratio:.2f}x."]
    write_results(args.out, {"settings": vars(args), "switches": switches, "models_seen": models_seen,
                             "ratio_tokens_per_s": ratio, **results}, "\n".join(table))


if __name__ == "__main__":
    main()
