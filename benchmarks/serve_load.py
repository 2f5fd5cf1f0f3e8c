"""Load on `reverie serve` (SmolLM2-135M-Instruct, loopback) while the release switches and rolls back, against
the same load on a plain transformers generate loop without batching, in one run.

    .venv/bin/python benchmarks/serve_load.py [--clients 8] [--seconds 60] [--max-tokens 32]

A quick cycle (1 epoch, no Dream) first makes a second model. During the served run, a third of the way in the
release pointer rolls back to the base model (`reverie rollback`), and two thirds of the way in it moves to the
candidate again (as a cycle's close moves it). Every client sends chat requests back to back; each request's
status, latency and completion tokens are recorded. The baseline runs the same clients in this process against
one lock around `model.generate` for a single prompt: what serving without a batcher amounts to.
Writes benchmarks/results/serve_load.{json,md}.
"""

from __future__ import annotations

import argparse
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


def run_clients(clients: int, seconds: float, request, events: list[tuple[float, callable]] = ()) -> list[dict]:
    """`clients` threads calling request(prompt) back to back for `seconds`; events fire at their offsets."""
    records: list[dict] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(index: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            prompt = PROMPTS[(index + n) % len(PROMPTS)]
            n += 1
            started = time.perf_counter()
            try:
                status, tokens, model = request(prompt)
            except Exception as exc:  # a transport error is a failed request too
                status, tokens, model = f"error: {type(exc).__name__}", 0, ""
            with lock:
                records.append({"status": status, "latency": time.perf_counter() - started, "tokens": tokens,
                                "model": model, "at": started})

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


def summary(records: list[dict], seconds: float) -> dict:
    ok = [r for r in records if r["status"] == 200]
    latencies = sorted(r["latency"] for r in ok)
    quantile = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")  # noqa: E731
    return {"sent": len(records), "succeeded": len(ok), "failed": len(records) - len(ok),
            "p50_s": quantile(0.5), "p95_s": quantile(0.95), "tokens_per_s": sum(r["tokens"] for r in ok) / seconds,
            "mean_latency_s": statistics.fmean(latencies) if latencies else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--state", default="benchmarks/.cache/serve_load")
    parser.add_argument("--out", default="benchmarks/results/serve_load")
    args = parser.parse_args()
    ws = prepare(Path(args.state))
    candidate = ws.registry.get_alias()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "reverie", "serve", "-w", str(ws.root), "--port", str(port),
                               "--set", "serve.poll_seconds=0.5", "--set", f"serve.batch_size={args.clients}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        session = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=args.clients * 2))

        def served(prompt: str):
            response = session.post(f"{url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": prompt}], "max_tokens": args.max_tokens, "retrieval": False})
            body = response.json()
            return response.status_code, body.get("usage", {}).get("completion_tokens", 0), body.get("model", "")

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

    def plain(prompt: str):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with generate_lock, torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=args.max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return 200, out.shape[1] - ids.shape[1], candidate

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
