"""Near-duplicate detection: reverie's index against a plain datasketch MinHashLSH, in one run, on the same
stream of documents.

    .venv/bin/python benchmarks/dedup.py [--documents 100000] [--threshold 0.7]

Corpus: short texts from ../shared/data (SQuAD passage sentences and questions, GPT-4.1 implications, PIQA
goals and solutions, XSTest and AdvBench prompts), exact repeats removed, then near-duplicates planted until
there are --documents in all: each planted copy of an original has one to three words replaced, dropped or
inserted, and its case or punctuation changed. Documents arrive in a shuffled stream. A document is a true
near duplicate when an earlier copy of the same original has an exact Jaccard similarity of word 3-grams at
or above --threshold (an edit in a short text can push a planted copy below it: then it is not a near
duplicate at this threshold, and flagging it counts against precision). Both indexes see the same stream.

- plain: datasketch's `MinHash(num_perm)` updated word 3-gram by 3-gram, `MinHashLSH(threshold)`; a duplicate
  is any LSH candidate (the usual recipe).
- reverie: `NearDuplicateIndex` (rensa's R-MinHash signatures made in one call for the whole stream, rensa's
  LSH banded below the threshold, candidates verified by their estimated Jaccard similarity).

Both are timed end to end, from the raw text to the flag: shingles, signatures, queries, verification and
inserts; each run also reports how those seconds split between signatures and index. Precision and recall of
both are scored by the same function against the same ground truth.

Writes benchmarks/results/dedup.{json,md}: documents per second, precision and recall of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import time
from importlib.metadata import version
from pathlib import Path

from datasketch import MinHash, MinHashLSH

from results_io import write_results

from reverie.data.dedup import NearDuplicateIndex, shingles
from reverie.data.text import normalize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def corpus_texts() -> list[str]:
    texts: list[str] = []
    for passage in json.loads((DATA / "squad" / "squad_val_passages.json").read_text()):
        texts += re.split(r"(?<=[.!?])\s+", passage["context"])
        texts += [q["question"] for q in passage["questions"]]
    for passage in json.loads((DATA / "squad" / "gpt41_implications.json").read_text()):
        for completion in passage["completions"]:
            texts += completion.splitlines()
    for line in (DATA / "piqa" / "piqa_valid.jsonl").read_text().splitlines():
        item = json.loads(line)
        texts += [item["goal"], item["sol1"], item["sol2"]]
    with (DATA / "safety" / "xstest_prompts.csv").open() as handle:
        texts += [row["prompt"] for row in csv.DictReader(handle)]
    with (DATA / "safety" / "advbench_harmful_behaviors.csv").open() as handle:
        texts += [row["goal"] for row in csv.DictReader(handle)]
    unique: dict[str, str] = {}
    for text in texts:
        if len(text.split()) >= 8:  # shorter texts are near-duplicates of each other by chance
            unique.setdefault(normalize(text), text.strip())
    return list(unique.values())


def perturb(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        action = rng.choice(("replace", "drop", "insert"))
        i = rng.randrange(len(words))
        if action == "replace":
            words[i] = rng.choice(vocabulary)
        elif action == "drop" and len(words) > 8:
            del words[i]
        else:
            words.insert(i, rng.choice(vocabulary))
    out = " ".join(words)
    return out.upper() if rng.random() < 0.2 else out.rstrip(".?!") + rng.choice(("", ".", "!", " ..."))


def build_stream(total: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    originals = corpus_texts()
    vocabulary = [w for text in originals[:2000] for w in text.split()]
    documents = list(originals)
    clusters = list(range(len(originals)))
    while len(documents) < total:
        source = rng.randrange(len(originals))
        documents.append(perturb(originals[source], rng, vocabulary))
        clusters.append(source)
    order = list(range(len(documents)))
    rng.shuffle(order)
    return [documents[i] for i in order], [clusters[i] for i in order]


def near_duplicate_truth(documents: list[str], clusters: list[int], threshold: float) -> list[bool]:
    """Whether each document has an earlier copy of its original at exact 3-gram Jaccard >= threshold."""
    earlier: dict[int, list[set[bytes]]] = {}
    truth = []
    for text, cluster in zip(documents, clusters):
        grams = set(shingles(text))
        truth.append(any(len(grams & other) / len(grams | other) >= threshold for other in earlier.get(cluster, [])))
        earlier.setdefault(cluster, []).append(grams)
    return truth


def score(flags: list[bool], truth: list[bool]) -> dict[str, float]:
    true_positive = sum(f and t for f, t in zip(flags, truth))
    return {"precision": true_positive / max(1, sum(flags)), "recall": true_positive / max(1, sum(truth)),
            "true_duplicates": sum(truth), "flagged": sum(flags)}


def run_plain(documents: list[str], threshold: float, num_perm: int) -> tuple[list[bool], dict[str, float]]:
    start = time.perf_counter()
    signing = 0.0
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    flags = []
    for i, text in enumerate(documents):
        begin = time.perf_counter()
        signature = MinHash(num_perm=num_perm)
        for shingle in shingles(text):
            signature.update(shingle.encode())
        signing += time.perf_counter() - begin
        duplicate = bool(lsh.query(signature))
        flags.append(duplicate)
        if not duplicate:
            lsh.insert(str(i), signature)
    return flags, timings(time.perf_counter() - start, signing)


def run_reverie(documents: list[str], threshold: float, num_perm: int) -> tuple[list[bool], dict[str, float]]:
    start = time.perf_counter()
    index = NearDuplicateIndex(threshold, num_perm)
    signatures = index.signatures(documents)
    signing = time.perf_counter() - start
    flags = []
    for i, signature in enumerate(signatures):
        duplicate = index.match(signature) is not None
        flags.append(duplicate)
        if not duplicate:
            index.add(str(i), signature)
    return flags, timings(time.perf_counter() - start, signing)


def timings(seconds: float, signing: float) -> dict[str, float]:
    """End-to-end seconds, split into signatures (shingles included) and index (queries, checks, inserts)."""
    return {"seconds": seconds, "signature_seconds": signing, "index_seconds": seconds - signing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/dedup")
    args = parser.parse_args()

    documents, clusters = build_stream(args.documents, args.seed)
    originals = len(set(clusters))
    truth = near_duplicate_truth(documents, clusters, args.threshold)
    result = {"settings": vars(args), "versions": {p: version(p) for p in ("datasketch", "rensa")},
              "documents": len(documents), "originals": originals}
    for name, run in (("plain", run_plain), ("reverie", run_reverie)):
        flags, timing = run(documents, args.threshold, args.num_perm)
        result[name] = score(flags, truth) | timing | {"documents_per_s": len(documents) / timing["seconds"]}
        print(name, json.dumps(result[name]), flush=True)
    plain, ours = result["plain"], result["reverie"]
    table = ["| index | documents/s | signatures s | index s | precision | recall |", "|---|---|---|---|---|---|"]
    for name, label in (("plain", "datasketch MinHashLSH, plain recipe"),
                        ("reverie", "reverie NearDuplicateIndex (rensa)")):
        r = result[name]
        table.append(f"| {label} | {r['documents_per_s']:.0f} | {r['signature_seconds']:.2f} | "
                     f"{r['index_seconds']:.2f} | {r['precision']:.4f} | {r['recall']:.4f} |")
    table += ["", f"{len(documents)} documents ({originals} originals from ../shared/data, the rest planted "
              f"copies, {sum(truth)} of them near duplicates at exact word-3-gram Jaccard >= {args.threshold}), "
              f"{args.num_perm} permutations, one run (datasketch {result['versions']['datasketch']}, rensa "
              f"{result['versions']['rensa']}). Throughput ratio reverie/plain: "
              f"{ours['documents_per_s'] / plain['documents_per_s']:.2f}x."]
    write_results(args.out, result, "\n".join(table))


if __name__ == "__main__":
    main()
