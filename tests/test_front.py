"""The Compress front: every variant measured by the same code, the keep policy, and the front drawn."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reverie.config import FrontSettings, KeepPolicy
from reverie.data.files import read_builtin
from reverie.data.multiple_choice import ChoiceItem
from reverie.engines.front import RAPL, FrontProbe, Measurement, distinct_2, measure, probe_texts, reasoning_items
from reverie.engines.keep_policy import Decision, choose
from reverie.errors import ReverieError
from reverie.phases.outputs import CompressOutput, StrategyOutcome, Variant
from reverie.registry import Cycle, PhaseRun
from reverie.reporting.charts import pareto_png
from reverie.reporting.overview import overview
from reverie.reporting.page import static_report
from reverie.workspace import Workspace

PNG = b"\x89PNG\r\n\x1a\n"


def rapl_readable() -> bool:
    try:
        int((RAPL / "energy_uj").read_text())
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_measure_gives_every_axis_as_a_finite_positive_number_on_the_tiny_model(tiny) -> None:
    model, tokenizer = tiny
    probe = FrontProbe(
        questions=[("What is the capital of Velmora?", "Quistrand"), ("What do Thrannock champions win?", "Cup")],
        texts=["Velmora is governed from Quistrand.", "Thrannock champions win the Gildermoor Cup every spring."],
        reasoning=[ChoiceItem("To open a jar,", ("twist the lid", "paint it"), 0),
                   ChoiceItem("Which is a planet?", ("Mars", "Sirius", "the Moon"), 0)],  # ARC: three choices
    )
    settings = FrontSettings(decode_tokens=4, batch_sizes=[1, 3], diversity_samples=2, power_watts=20.0)
    measured = measure(model, tokenizer, probe, settings, max_new_tokens=6, batch_size=4, disk_bytes=12345)

    assert set(measured.quality) == {"accuracy", "perplexity", "distinct_2", "reasoning_accuracy"}
    assert 0 <= measured.quality["accuracy"] <= 1 and 0 <= measured.quality["reasoning_accuracy"] <= 1
    assert 0 <= measured.quality["distinct_2"] <= 1
    assert 1 < measured.quality["perplexity"] < math.inf  # a random model is far from certain
    assert {k for k in measured.cost if k.startswith("tokens_per_s_b")} == {"tokens_per_s_b1", "tokens_per_s_b3"}
    assert all(math.isfinite(v) and v > 0 for v in measured.cost.values()), measured.cost
    assert measured.cost["seconds_per_token"] == pytest.approx(1 / measured.cost["tokens_per_s_b1"])
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert measured.cost["memory_mb"] * 1e6 >= weights
    assert measured.cost["disk_bytes"] == 12345
    assert measured.energy == ("rapl" if rapl_readable() else "estimate")
    if measured.energy == "estimate":
        assert measured.cost["joules_per_token"] == pytest.approx(20.0 * measured.cost["seconds_per_token"])

    without = measure(model, tokenizer, FrontProbe(probe.questions, probe.texts), settings, 6, 4, 0)
    assert "reasoning_accuracy" not in without.quality  # no items, no axis
    assert without.quality["accuracy"] == measured.quality["accuracy"]  # greedy answers: the same code, the same
    assert without.quality["distinct_2"] == measured.quality["distinct_2"]  # sampled with a fixed seed


def test_distinct_2_is_one_for_all_different_text_and_lower_for_repeated_text() -> None:
    assert distinct_2(["the cat sat down", "a dog ran off"]) == 1.0
    assert distinct_2(["the cat sat", "the cat sat"]) == 0.5  # two samples alike: half the bigrams repeat
    assert distinct_2(["go on go on go on"]) == 2 / 5
    assert distinct_2(["one", "two"]) == 0.0  # no bigram at all, and none spans two texts


def m(accuracy: float, tokens_per_s: float, perplexity: float = 10.0, distinct: float = 0.5,
      reasoning: float | None = None, disk: float = 1e8) -> Measurement:
    quality = {"accuracy": accuracy, "perplexity": perplexity, "distinct_2": distinct}
    if reasoning is not None:
        quality["reasoning_accuracy"] = reasoning
    return Measurement(quality, {"tokens_per_s_b1": tokens_per_s, "seconds_per_token": 1 / tokens_per_s,
                                 "disk_bytes": disk}, "estimate")


def decide(reference: Measurement, policy: KeepPolicy = KeepPolicy(), **variants: Measurement) -> Decision:
    decision = choose(("reference", reference), list(variants.items()), policy)
    assert set(decision.reasons) == {"reference", *variants} and all(decision.reasons.values())
    return decision


def test_a_variant_across_a_red_line_is_never_kept_even_when_it_is_the_fastest() -> None:
    lenient = KeepPolicy(accuracy_tolerance=0.5, perplexity_tolerance=10)  # only the red lines stand in the way
    decision = decide(m(0.80, 100, reasoning=0.6, distinct=0.5), lenient,
                      q4=m(0.70, 900, reasoning=0.6), wanda=m(0.80, 800, reasoning=0.4),
                      layers=m(0.80, 700, reasoning=0.6, distinct=0.3), q8=m(0.79, 300, reasoning=0.6))
    assert decision.kept == "q8"
    assert decision.reasons["q4"] == "across the knowledge red line: 0.800 -> 0.700 (max drop 0.05)"
    assert decision.reasons["wanda"].startswith("across the reasoning red line: 0.600 -> 0.400")
    assert decision.reasons["layers"].startswith("across the diversity red line: 0.500 -> 0.300")


def test_the_cheapest_variant_within_tolerance_of_the_best_quality_is_kept() -> None:
    policy = KeepPolicy(accuracy_tolerance=0.01, perplexity_tolerance=0.03, red_lines={"knowledge": 0.5})
    decision = decide(m(0.80, 100), policy, merged=m(0.80, 150), q8=m(0.795, 200),
                      q4=m(0.70, 400), pruned=m(0.80, 300, perplexity=11.0))
    assert decision.kept == "q8"
    assert decision.reasons["q8"].startswith("kept: the cheapest within tolerance of the best quality: 2.00x")
    assert decision.reasons["q4"].startswith("not within tolerance of the best quality: accuracy 0.700 vs best 0.800")
    assert "perplexity 11.000 vs best 10.000, +10.0%" in decision.reasons["pruned"]
    assert decision.reasons["merged"] == "within tolerance, but q8 is faster: 2.00x vs 1.50x tokens/s of the reference"
    assert decision.reasons["reference"].startswith("the reference: q8 is within tolerance")


def test_a_variant_not_faster_by_min_speedup_is_not_kept_for_speed() -> None:
    decision = decide(m(0.80, 100), KeepPolicy(min_speedup=1.05), q8=m(0.80, 103))
    assert decision.kept == "reference"
    assert decision.reasons["q8"].startswith(
        "not faster here: 1.03x tokens/s (compress.keep.min_speedup 1.05); not counted as a saving")
    slower = decide(m(0.80, 100), KeepPolicy(), adapter=m(0.80, 40))
    assert (slower.kept, slower.reasons["adapter"]) == ("reference", "slower here: 0.40x tokens/s of the reference")


def test_a_variant_as_fast_as_the_reference_is_kept_only_for_better_quality() -> None:
    decision = decide(m(0.800, 100), KeepPolicy(), distilled=m(0.805, 99), noisy=m(0.800, 104, perplexity=10.1))
    assert decision.kept == "distilled"  # the same speed, within noise; more accurate
    assert decision.reasons["distilled"].startswith("kept: as fast as the reference (0.99x tokens/s) and it is more")
    assert "distilled is more accurate" in decision.reasons["noisy"]


def test_the_reference_is_kept_when_no_variant_qualifies() -> None:
    decision = decide(m(0.80, 100), KeepPolicy(), q4=m(0.60, 900), layers=m(0.80, 500, distinct=0.1))
    assert decision.kept == "reference" and decision.reasons["reference"].startswith("kept: no variant qualified")
    apart = decide(m(0.70, 100, perplexity=20.0), KeepPolicy(red_lines={}), a=m(0.90, 200, perplexity=30.0),
                   b=m(0.60, 300, perplexity=10.0))  # best accuracy and best perplexity far apart: none has both
    assert apart.kept == "reference" and "at once" in apart.reasons["reference"]


def test_the_keep_policy_needs_no_torch() -> None:
    code = "import sys, reverie.engines.keep_policy; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_probe_texts_read_knowledge_jsonl_and_text_and_name_the_key_when_wrong(tmp_path: Path) -> None:
    assert probe_texts("knowledge", ["doc one", "doc two"], tmp_path) == ["doc one", "doc two"]
    (tmp_path / "texts.jsonl").write_text('{"text": "first"}\n\n{"text": "second"}\n')
    assert probe_texts("texts.jsonl", [], tmp_path) == ["first", "second"]
    (tmp_path / "essay.txt").write_text("One paragraph.\n\nAnother\nparagraph.\n\n\n")
    assert probe_texts("essay.txt", [], tmp_path) == ["One paragraph.", "Another\nparagraph."]
    with pytest.raises(ReverieError, match=r"compress.front.perplexity_text: .*missing.txt does not exist"):
        probe_texts("missing.txt", [], tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"body": "no text key"}\n')
    with pytest.raises(ReverieError, match=r"compress.front.perplexity_text: .*bad.jsonl, line 2"):
        probe_texts("bad.jsonl", [], tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ReverieError, match="holds no text"):
        probe_texts("empty.txt", [], tmp_path)


def test_reasoning_items_read_piqa_and_arc_and_refuse_the_gates_general_suite(tmp_path: Path) -> None:
    assert reasoning_items(None, tmp_path, 10, "builtin") == []
    rows = [{"goal": "To dry a towel,", "sol1": "hang it up", "sol2": "fold it wet", "label": 0},
            {"question": {"stem": "Which melts ice?", "choices": [{"text": "heat", "label": "A"},
                          {"text": "cold", "label": "B"}, {"text": "dark", "label": "C"}]}, "answerKey": "A"},
            {"question": "Which is a metal?", "choices": {"text": ["wood", "iron"], "label": ["1", "2"]},
             "answerKey": "2"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert reasoning_items("train.jsonl", tmp_path, 10, "builtin") == [
        ChoiceItem("To dry a towel,", ("hang it up", "fold it wet"), 0),
        ChoiceItem("Which melts ice?", ("heat", "cold", "dark"), 0),
        ChoiceItem("Which is a metal?", ("wood", "iron"), 1)]
    assert len(reasoning_items("train.jsonl", tmp_path, 2, "builtin")) == 2

    (tmp_path / "general.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ReverieError, match=r"compress.front.reasoning: .*general.jsonl is eval.general_suite"):
        reasoning_items("general.jsonl", tmp_path, 10, "general.jsonl")
    (tmp_path / "copy.jsonl").write_text(read_builtin("demo/general_mc.jsonl"))  # the built-in suite, renamed
    with pytest.raises(ReverieError, match=r"compress.front.reasoning: \d+ of its items are in eval.general_suite"):
        reasoning_items("copy.jsonl", tmp_path, 10, "builtin")
    (tmp_path / "broken.jsonl").write_text(json.dumps(rows[0]) + '\n{"question": "no choices", "answerKey": "A"}\n')
    with pytest.raises(ReverieError, match=r"compress.front.reasoning: .*broken.jsonl, line 2: expected PIQA"):
        reasoning_items("broken.jsonl", tmp_path, 10, "builtin")
    with pytest.raises(ReverieError, match=r"compress.front.reasoning: .*absent.jsonl does not exist"):
        reasoning_items("absent.jsonl", tmp_path, 10, "builtin")


def measured_variant(name: str, accuracy: float, seconds: float, kept: bool, reason: str) -> Variant:
    return Variant(name=name, strategy="quantize", format=f"gguf-{name}", accuracy=accuracy, seconds=seconds,
                   kept=kept, reason=reason, energy="estimate",
                   quality={"accuracy": accuracy, "perplexity": 12.5, "distinct_2": 0.4},
                   cost={"tokens_per_s_b1": 1 / seconds, "tokens_per_s_b8": 6 / seconds, "seconds_per_token": seconds,
                         "memory_mb": 300.0, "disk_bytes": 1.4e8, "joules_per_token": 15 * seconds})


def test_the_overview_and_the_chart_show_every_strategys_variants_new_and_old(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    registry = ws.registry
    registry.start_cycle(Cycle(id="c-1", status="running", base_model_id="m-0", config_hash="x",
                               started_at=time.time()))
    run = PhaseRun(id="r-1", cycle_id="c-1", phase="compress", status="running", inputs={}, started_at=time.time())
    registry.start_phase(run)
    old = [Variant(name="adapter", accuracy=0.5, seconds=2.0, kept=False),  # the shape before the front was measured
           Variant(name="merged", accuracy=0.5, seconds=1.0, kept=True)]
    new = [measured_variant("reference", 0.5, 0.02, False, "the reference: q8_0 is within tolerance"),
           measured_variant("q8_0", 0.5, 0.01, True, "kept: the cheapest within tolerance"),
           measured_variant("q4_0", 0.3, 0.005, False, "across the knowledge red line: 0.500 -> 0.300")]
    output = CompressOutput(model="m-2", strategies=[
        StrategyOutcome(strategy="merge", kept=True, reason="merged: the A/B check passed", variants=old),
        StrategyOutcome(strategy="quantize", kept=True, reason="kept: the cheapest", variants=new)])
    registry.finish_phase(run, output.model_dump(), [], {}, [])

    data = overview(ws)
    variants = {v["name"]: v for v in data["compress"]["variants"]}
    assert list(variants) == ["adapter", "merged", "reference", "q8_0", "q4_0"]  # every strategy's, in order
    assert (variants["adapter"]["strategy"], variants["adapter"]["reason"]) == ("merge", "")
    assert variants["merged"]["reason"] == "merged: the A/B check passed"  # an old record: its strategy's reason
    assert variants["q4_0"]["reason"].startswith("across the knowledge red line")
    assert variants["q8_0"]["cost"]["tokens_per_s_b8"] == 600 and variants["q8_0"]["format"] == "gguf-q8_0"
    assert [s["strategy"] for s in data["compress"]["strategies"]] == ["merge", "quantize"]
    assert pareto_png(data)[:8] == PNG
    only_old = data | {"compress": data["compress"] | {"variants": data["compress"]["variants"][:2]}}
    assert pareto_png(only_old)[:8] == PNG
    assert "gguf-q8_0" in static_report(ws)


def test_a_variant_whose_format_saves_nothing_is_not_kept_for_a_noisy_timing() -> None:
    # a dense-stored sparse variant timed 4x faster (the reference was measured while the machine was busy)
    decision = choose(("reference", m(0.80, 100)), [("wanda", m(0.80, 400)), ("q8", m(0.80, 300))], KeepPolicy(),
                      saves_nothing=frozenset({"wanda"}))
    assert decision.kept == "q8"
    assert decision.reasons["wanda"].startswith("stored densely, it saves no bytes or time here")
    alone = choose(("reference", m(0.80, 100)), [("wanda", m(0.80, 400))], KeepPolicy(),
                   saves_nothing=frozenset({"wanda"}))
    assert alone.kept == "reference"
