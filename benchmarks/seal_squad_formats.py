"""One table of SEAL knowledge-incorporation rows measured in separate `seal_squad.py` runs (one per self-edit
format or condition), each paired with passage-only training over the same evaluation passages.

    .venv/bin/python benchmarks/seal_squad_formats.py [RESULTS.json ...]

Every run uses the same inner loop and the same 50 evaluation passages, and the passage-only row is
deterministic, so a row from one run can be paired with the passage row of another; the script checks that
every file's passage row (where it has one) matches, passage by passage, before pairing. Writes
benchmarks/results/seal_squad_formats.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from reverie.stats import bootstrap_ci

RESULTS = Path("benchmarks/results")
DEFAULT_FILES = ["seal_squad_nopack.json", "seal_squad_nopack_own.json", "seal_squad_nopack_self-qa.json",
                 "seal_squad_nopack_rewrite.json", "seal_squad_nopack_implications-long.json",
                 "seal_squad_nopack_teacher.json", "seal_squad_nopack_warm20.json",
                 "seal_squad_nopack_warm20_pick.json", "seal_squad_nopack_warm20_rest1.json"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="results JSON files (default: the one-sequence-per-step runs)")
    args = parser.parse_args()
    paths = [Path(f) for f in args.files] or [RESULTS / f for f in DEFAULT_FILES if (RESULTS / f).is_file()]
    runs = {path: json.loads(path.read_text()) for path in paths}
    with_passage = [(path, r) for path, r in runs.items() if "passage" in r["conditions"]]
    if not with_passage:
        raise SystemExit("no file has a passage-only row to pair with")
    first, run = with_passage[0]
    baseline = run["conditions"]["passage"]
    passage = baseline["per_passage"]
    rows = [{"condition": "passage", "style": "-", "rounds": 0, "accuracy": baseline["accuracy"],
             "ci95": baseline["ci95"], "minus_passage": 0.0, "minus_passage_ci95": [0.0, 0.0], "file": first.name}]
    for path, run in runs.items():
        own_passage = run["conditions"].get("passage", {}).get("per_passage")
        if own_passage is not None and own_passage != passage:
            raise SystemExit(f"{path}: its passage-only row differs from the others: not the same inner loop")
        style = run["settings"]["style"]
        for condition, row in run["conditions"].items():
            if condition == "passage":
                continue
            diff = [a - b for a, b in zip(row["per_passage"], passage)]
            interval = bootstrap_ci(diff)
            rows.append({"condition": condition, "style": style if condition in ("own", "seal") else "-",
                         "rounds": run["settings"]["rounds"] if condition == "seal" else 0,
                         "warm_start": run["settings"].get("warm_start", 0) if condition == "seal" else 0,
                         "temperature": run.get("temperature_picks", {}).get(condition, {}).get(
                             "temperature", run["settings"]["temperature"]),
                         "picked": condition in run.get("temperature_picks", {}),
                         "m_step_per_pair": condition == "seal" and run["settings"].get("m_step_per_pair", False),
                         "accuracy": row["accuracy"], "ci95": row["ci95"], "minus_passage": statistics.fmean(diff),
                         "minus_passage_ci95": [interval.low, interval.high], "file": path.name})
    table = ["| condition | self-edit format | accuracy (95% CI) | minus passage-only (95% CI, paired) | from |",
             "|---|---|---|---|---|"]
    for r in rows:
        rounds = f"{r['rounds']} ReST-EM round{'' if r['rounds'] == 1 else 's'}"
        name = r["condition"] + (f" ({rounds})" if r["condition"] == "seal" else "")
        if r.get("warm_start"):
            name += f", writer warm-started on GPT-4.1 implications of {r['warm_start']} other passages"
        if r.get("picked"):
            name += f", self-edits at temperature {r['temperature']} (picked on the training passages)"
        elif r["condition"] in ("own", "seal") and r["temperature"] != 1.0:
            name += f", sampled at temperature {r['temperature']}"
        if r.get("m_step_per_pair"):
            name += ", M-step a step per kept pair"
        low, high = r["minus_passage_ci95"]
        table.append(f"| {name} | {r['style']} | {100 * r['accuracy']:.1f}% ({100 * r['ci95'][0]:.1f}–"
                     f"{100 * r['ci95'][1]:.1f}) | {100 * r['minus_passage']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"
                     f" | {r['file']} |")
    text = "\n".join(table) + "\n"
    (RESULTS / "seal_squad_formats.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "seal_squad_formats.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
