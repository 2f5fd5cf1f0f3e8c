"""A bad canary under load on `reverie serve` (loopback): how many requests each arm served, how many failed (the
goal is none), and how long the canary kept serving after it crossed a threshold, until it was rolled back.

    .venv/bin/python benchmarks/serve_canary.py [--model tiny|embedded] [--clients 8] [--share 0.2]
                                                [--min-requests 100] [--after 25]

The canary is the served model fine-tuned until it answers every prompt with "I can't help with that." (a real
model, not a patched one); the release is the model itself. Every client is its own user (the OpenAI `user` field)
and sends chats back to back, so sticky routing sends about `share` of the users to the canary. The clients run
until the server has rolled the canary back (GET /v1/canary lists the decision), then `after` more requests each.
The breach is the canary request at which its refusal rate first passed the release's by more than
serve.live_thresholds.max_refusal_increase (a point estimate); the rollback is the decision the server took once
min_requests canary answers and the confidence interval agreed. Each run starts a fresh workspace.
Writes benchmarks/results/serve_canary.{json,md} (serve_canary_embedded with --model embedded).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch
import yaml
from generation import model_dir
from results_io import write_results
from serve_load import free_port, quantile
from transformers import AutoModelForCausalLM, AutoTokenizer

from reverie.cycle import ensure_release
from reverie.presets import preset_text
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

REFUSAL = "I can't help with that."
PROMPTS = ["hello", "What is the capital of Velmora?", "Tell me a story", "hi", "Give me a tip", "2+2?",
           "Describe rain", "Why is the sea salty?", "Name a cat", "How do plants drink water?", "x", "Once upon"]
# Fine-tuning that makes the canary refuse: the tiny random model needs a high rate, SmolLM2 a gentle one.
REFUSER_TRAINING = {"tiny": (1e-2, 60), "embedded": (5e-5, 30)}
CANARY_ID = "m-refuser"


def build_refuser(source: Path, target: Path, lr: float, steps: int) -> Path:
    """`source` fine-tuned on PROMPTS until it answers each with REFUSAL (the loss on the answer only)."""
    if (target / "config.json").is_file():
        return target
    tokenizer, model = AutoTokenizer.from_pretrained(source), AutoModelForCausalLM.from_pretrained(source)
    answer = tokenizer(REFUSAL)["input_ids"] + [tokenizer.eos_token_id]
    heads = [list(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                tokenize=True, return_dict=True)["input_ids"]) for p in PROMPTS]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(map(len, heads)) + len(answer)
    ids = torch.full((len(heads), width), pad)
    labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
    for row, head in enumerate(heads):
        ids[row, : len(head) + len(answer)] = torch.tensor(head + answer)
        labels[row, len(head) : len(head) + len(answer)] = torch.tensor(answer)
        mask[row, : len(head) + len(answer)] = 1
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def fresh_workspace(root: Path, release: Path, canary: Path, args: argparse.Namespace) -> str:
    """A new workspace whose release is `release` and whose serve.canary is `canary`; the release's id."""
    shutil.rmtree(root, ignore_errors=True)
    Workspace.init(root)
    config = yaml.safe_load(preset_text("default"))
    config["model"]["source"] = str(release)
    config["serve"] |= {"retrieval": False, "max_tokens": args.max_tokens, "batch_size": args.clients,
                        "canary": {"model": CANARY_ID, "share": args.share, "sticky": "user",
                                   "min_requests": args.min_requests}}
    (root / "reverie.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ws = Workspace.open(root)
    release_id = ensure_release(ws)
    ws.registry.add_model(ModelRecord(id=CANARY_ID, status="candidate", source=str(canary), created_at=time.time()))
    return release_id


def serve(root: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "reverie", "serve", "-w", str(root), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                return url, server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not come up")


def load(url: str, args: argparse.Namespace) -> tuple[list[dict], float]:
    """`clients` threads sending chats back to back, each request as one of `users` users in turn, until the
    canary is rolled back, then `after` more each."""
    clients, after, limit = args.clients, args.after, args.limit
    records: list[dict] = []
    lock, decided = threading.Lock(), threading.Event()

    def client(index: int) -> None:
        extra, n = 0, 0
        with httpx.Client(timeout=300) as session:
            while n < limit:
                sent_after = decided.is_set()
                if sent_after and (extra := extra + 1) > after:
                    return
                user = f"user-{(index + clients * n) % args.users}"
                body = {"messages": [{"role": "user", "content": PROMPTS[(index + n) % len(PROMPTS)]}],
                        "max_tokens": args.max_tokens, "user": user}
                started = time.time()
                try:
                    response = session.post(f"{url}/v1/chat/completions", json=body)
                    status, arm, model = response.status_code, response.headers.get("x-reverie-arm"), \
                        response.json().get("model")
                except httpx.HTTPError as exc:  # a transport error is a failed request too
                    status, arm, model = f"error: {type(exc).__name__}", None, None
                with lock:
                    records.append({"user": user, "status": status, "arm": arm, "model": model, "sent_at": started,
                                    "latency": time.time() - started, "after_decision": sent_after})
                n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads) and not decided.is_set():
        report = httpx.get(f"{url}/v1/canary", timeout=30).json()
        if any(d["action"] == "canary-rollback" for d in report["decisions"]):
            decided.set()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    return records, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "embedded"), default="tiny")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users", type=int, default=64, help="distinct users the clients take turns as")
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--min-requests", type=int, default=100)
    parser.add_argument("--after", type=int, default=25, help="requests per client after the rollback")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--limit", type=int, default=5000, help="requests per client at most")
    parser.add_argument("--cache", default="benchmarks/.cache")
    parser.add_argument("--out", help="results path without suffix (default benchmarks/results/serve_canary, "
                        "serve_canary_embedded with --model embedded)")
    args = parser.parse_args()
    cache = Path(args.cache).resolve()  # the workspace names the models by path
    release = model_dir(args.model, cache)
    canary = build_refuser(release, cache / "serve_canary" / f"refuser-{args.model}", *REFUSER_TRAINING[args.model])
    root = cache / "serve_canary" / f"workspace-{args.model}"
    release_id = fresh_workspace(root, release, canary, args)
    url, server = serve(root)
    try:
        records, seconds = load(url, args)
        report = httpx.get(f"{url}/v1/canary", timeout=30).json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    decision = next(d for d in Workspace.open(root).registry.serving_decisions() if d.action == "canary-rollback")
    figures = decision.figures
    ok = [r for r in records if r["status"] == 200]
    per_arm = {arm: sum(r["arm"] == arm for r in ok) for arm in ("release", "canary")}
    canary_after = sum(r["arm"] == "canary" and r["sent_at"] > decision.at for r in ok)
    in_flight = sum(r["arm"] == "canary" and r["sent_at"] <= decision.at < r["sent_at"] + r["latency"] for r in ok)
    result = {
        "settings": vars(args), "release": release_id, "canary": CANARY_ID, "seconds": seconds,
        "sent": len(records), "failed": len(records) - len(ok), "served_per_arm": per_arm,
        "users_on_canary": len({r["user"] for r in ok if r["arm"] == "canary"}),
        "breach_request": figures["breach_request"], "decision_request": figures["arm"]["requests"],
        "breach_to_rollback_s": decision.at - figures["breach_at"], "canary_requests_sent_after_rollback": canary_after,
        "canary_in_flight_at_rollback": in_flight,
        "canary_refusal_rate": figures["arm"]["refusal_rate"],
        "release_refusal_rate": figures["against"]["refusal_rate"],
        "latency_p50_s": quantile([r["latency"] for r in ok], 0.5),
        "latency_p95_s": quantile([r["latency"] for r in ok], 0.95),
        "after_rollback": {"sent": sum(r["after_decision"] for r in records),
                           "on_canary": sum(r["after_decision"] and r["arm"] == "canary" for r in records)},
        "reason": decision.reason, "decisions": report["decisions"],
    }
    name = "tiny 2-layer random Llama" if args.model == "tiny" else "SmolLM2-135M-Instruct"
    table = ["| figure | value |", "|---|---|",
             f"| requests sent | {result['sent']} |", f"| failed requests | {result['failed']} |",
             f"| served by the release arm | {per_arm['release']} |",
             f"| served by the canary arm | {per_arm['canary']} |",
             f"| canary refusal rate at the decision | {figures['arm']['refusal_rate']['value']:.3f} "
             f"[{figures['arm']['refusal_rate']['low']:.3f}, {figures['arm']['refusal_rate']['high']:.3f}] |",
             f"| release refusal rate at the decision | {figures['against']['refusal_rate']['value']:.3f} "
             f"[{figures['against']['refusal_rate']['low']:.3f}, {figures['against']['refusal_rate']['high']:.3f}] |",
             f"| breach: canary request that first crossed the threshold | {result['breach_request']} |",
             f"| rollback: canary requests at the decision | {result['decision_request']} |",
             f"| seconds from breach to rollback | {result['breach_to_rollback_s']:.2f} |",
             f"| users on the canary arm (of {args.users}) | {result['users_on_canary']} |",
             f"| canary requests in flight at the rollback (all answered, on the canary) | {in_flight} |",
             f"| canary requests sent after the rollback | {canary_after} |",
             f"| requests sent after the rollback was seen (on the canary) | {result['after_rollback']['sent']} "
             f"({result['after_rollback']['on_canary']}) |",
             f"| latency p50 / p95 s | {result['latency_p50_s']:.3f} / {result['latency_p95_s']:.3f} |",
             "", f"{name}; canary: the same model fine-tuned to answer \"{REFUSAL}\"; {args.clients} clients taking "
             f"turns as {args.users} users, serve.canary.share {args.share}, min_requests {args.min_requests}, default "
             f"serve.live_thresholds (max_refusal_increase 0.05, confidence 0.95), max_tokens {args.max_tokens}, "
             f"{seconds:.1f} s in all. The breach is a point estimate; the rollback waits for min_requests and the "
             "interval, which is what the seconds between them cost."]
    write_results(args.out or ("benchmarks/results/serve_canary" + ("_embedded" if args.model == "embedded" else "")),
                  result, "\n".join(table))


if __name__ == "__main__":
    main()
