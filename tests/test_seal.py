"""SEAL beyond one round: ReST-EM rounds with checkpoints, the paper-table experiment, the judge grader, the
multi-passage variant and the self-edit quality gate."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from safetensors.torch import load_file

from reverie.artifacts import ArtifactStore
from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.knowledge import load_knowledge
from reverie.data.passages import knowledge_passages
from reverie.data.quality import check_text
from reverie.data.self_edits import gate_items, self_edit_prompt, teacher_self_edits
from reverie.engines.evaluation import closed_book_qa
from reverie.engines.inner_loop import InnerLoop, multi_passage_trial
from reverie.engines.judge import JudgeGrader
from reverie.data.knowledge import Example
from reverie.engines.models import LoadedModel, attach_lora, load_pretrained
from reverie.engines.scoring import perplexities, plausible_items, probe_answer_loss
from reverie.engines.training import train_sft
from reverie.engines.rest_em import GeneratorRound, RoundSettings, finished_rounds, read_journal, train_generator
from reverie.engines.seal_bench import SealBench
from reverie.errors import ReverieError

from conftest import tiny_passages

SETTINGS = RoundSettings(samples=2, max_new_tokens=12, generator_train=TrainSettings(epochs=1, block_size=256))
INNER = TrainSettings(epochs=1, learning_rate=1e-2, block_size=128)


def loop_factory(tiny_model_dir: Path, calls: list) -> Callable[[Path | None], InnerLoop]:
    def load_loop(directory: Path | None) -> InnerLoop:
        calls.append(directory)
        loaded = load_pretrained(directory or tiny_model_dir, ModelConfig())
        return InnerLoop(loaded.model, loaded.tokenizer, LoraSettings(rank=4, alpha=8), INNER, max_new_tokens=6)

    return load_loop


def test_killed_generator_training_restarts_from_the_last_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path / "staging")
    calls: list = []

    def killed_in_round_two(finished: GeneratorRound) -> None:
        if finished.round == 2:
            raise KeyboardInterrupt  # killed after round 2's trials and checkpoint, before it counted as done

    with pytest.raises(KeyboardInterrupt):
        train_generator(loop_factory(tiny_model_dir, calls), tiny_passages(), SETTINGS, 2, tmp_path / "state", store,
                        on_round=killed_in_round_two)
    first = finished_rounds(tmp_path / "state")
    assert [r.round for r in first] == [1] and first[0].result.trials_run == 2 * (1 + 2) and calls == [None]
    checkpoint = store.path(first[0].checkpoint)
    weights = load_file(checkpoint / "model.safetensors")
    assert weights and not any("lora_" in name for name in weights)  # the generator, without a trial adapter

    loop, done = train_generator(loop_factory(tiny_model_dir, calls), tiny_passages(), SETTINGS, 2,
                                 tmp_path / "state", store)
    assert calls[1] == checkpoint  # resumed on round 1's generator, not the starting model
    assert [r.round for r in done] == [1, 2]
    assert done[1].result.trials_run == 0  # round 2's trials all came from its journal
    _, again = train_generator(loop_factory(tiny_model_dir, calls), tiny_passages(), SETTINGS, 2,
                               tmp_path / "state", store)
    assert again == done and calls[2] == store.path(done[1].checkpoint)

    with pytest.raises(ReverieError, match="written for another round"):
        train_generator(loop_factory(tiny_model_dir, calls), tiny_passages()[:1], SETTINGS, 2, tmp_path / "state",
                        store)


def test_seal_bench_journals_every_trial_and_reports_paired_intervals(tiny_model_dir: Path, tmp_path: Path) -> None:
    evaluation = [p.model_copy(update={"completions": [f"1. {p.context}\n2. {p.title} is a real place."]})
                  for p in tiny_passages()]
    reported: list[str] = []

    def bench() -> SealBench:
        return SealBench(loop_factory(tiny_model_dir, []), SETTINGS, evaluation, tiny_passages()[:1], 1,
                         tmp_path / "bench", ["inner settings"])

    first = bench()
    for condition in ("base", "passage", "teacher"):
        first.run(condition, lambda key, record: reported.append(key))
    assert reported == [f"{c}/{i}" for c in ("base", "passage", "teacher") for i in range(2)]
    summary = first.summary()
    assert set(summary["conditions"]) == {"base", "passage", "teacher"}
    row = summary["conditions"]["teacher"]
    assert row["ci95"][0] <= row["accuracy"] <= row["ci95"][1] and len(row["per_passage"]) == 2
    assert set(summary["differences"]) == {"teacher - passage"}

    reported.clear()
    bench().run("passage", lambda key, record: reported.append(key))
    assert reported == []  # a rerun repeats nothing
    with pytest.raises(ReverieError, match="unknown condition"):
        bench().run("oracle")


def test_warm_start_teaches_the_generator_once_and_rest_em_goes_on_from_it(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    pairs = teacher_self_edits([("Velmora", "Velmora is governed from Quistrand.",
                                 "1. Velmora has a capital.\n2. **Quistrand** governs Velmora."),
                                ("Thrannock", "Thrannock champions win the Gildermoor Cup.", "Implications:\n")])
    assert [(p.prompt, p.completion) for p in pairs] == [
        (self_edit_prompt("implications", "Velmora", "Velmora is governed from Quistrand."),
         "Velmora has a capital.\nQuistrand governs Velmora.")]  # a teacher text with no items teaches nothing
    warm = (pairs, TrainSettings(epochs=2, learning_rate=1e-2, block_size=256, rows_per_step=1, pack=False))
    calls: list = []

    def bench(state: str, rounds: int, teacher: tuple = warm) -> SealBench:
        return SealBench(loop_factory(tiny_model_dir, calls), SETTINGS, tiny_passages()[:1], tiny_passages()[:1],
                         rounds, tmp_path / state, ["inner settings"], warm_start=teacher)

    bench("warm", 0).run("seal")
    checkpoint = ArtifactStore(tmp_path / "warm" / "artifacts", tmp_path / "warm" / "staging").path(
        read_journal(tmp_path / "warm" / "warm-start.jsonl")["checkpoint"])
    weights, start = load_file(checkpoint / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert not any("lora_" in name for name in weights)  # folded into the weights, no trial adapter behind
    assert any(not weights[name].equal(start[name]) for name in start)  # the warm start changed the generator
    assert calls == [None]
    bench("warm", 0).run("seal")
    assert calls == [None, checkpoint]  # a rerun loads the stored warm start instead of training it again
    with pytest.raises(ReverieError, match="written for another round"):
        bench("warm", 0, (pairs, TrainSettings(epochs=3, block_size=256)))  # other warm-start settings

    calls.clear()
    bench("warm-then-rest-em", 1).run("seal")
    assert calls == [None]  # ReST-EM's round 1 ran on the warm-started generator in memory, not a fresh model
    assert [r.round for r in finished_rounds(tmp_path / "warm-then-rest-em" / "rest-em")] == [1]


def test_temperature_is_picked_on_training_passages_and_never_reads_evaluation_ones(tiny_model_dir: Path,
                                                                                     tmp_path: Path) -> None:
    training, evaluation = tiny_passages()[:1], tiny_passages()[1:]
    graded: list[str] = []

    def bench() -> SealBench:
        make = loop_factory(tiny_model_dir, [])

        def recording(directory: Path | None) -> InnerLoop:
            loop = make(directory)
            trial = loop.trial

            def graded_trial(examples: list[Example], questions: list[tuple[str, str]], seed: int = 0):
                graded.extend(question for question, _ in questions)
                return trial(examples, questions, seed)

            loop.trial = graded_trial
            return loop

        return SealBench(recording, SETTINGS, evaluation, training, 1, tmp_path / "bench", ["inner"],
                         temperatures=[0.5, 1.5])

    first = bench()
    assert first.pick_temperature("own") in (0.5, 1.5)
    asked = {q.question for p in training for q in p.questions}
    assert graded and set(graded) == asked  # passage-only and one self-edit per temperature, training questions only
    assert len(graded) == 3
    picked = first.summary()["temperature_picks"]["own"]
    means = picked["train_accuracy"]
    assert set(means) == {"passage", "0.5", "1.5"}
    assert means[str(picked["temperature"])] == max(means["0.5"], means["1.5"])

    graded.clear()
    again = bench()
    again.run("own")
    assert set(graded) == {q.question for p in evaluation for q in p.questions}  # the pick came from the journal
    assert again.summary()["temperature_picks"] == first.summary()["temperature_picks"]


def test_judge_follows_the_models_yes_or_no(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    judge = JudgeGrader(loaded.model, loaded.tokenizer, batch_size=2)
    items = [("Capital of Velmora?", "Quistrand", "Quistrand"), ("Who wins?", "Thrannock", "nobody"),
             ("A much longer question so the batch is left padded?", "x", "y")]

    def favour(verdict: bool):
        tokens = sorted({t for spelling in judge.spellings[verdict] for t in spelling})

        def hook(module, inputs, output):
            output[..., tokens] += 1000.0
            return output
        return loaded.model.lm_head.register_forward_hook(hook)

    assert len(judge.spellings[True][0]) > 1  # this tokenizer splits "yes": whole-word scoring is exercised
    for verdict in (True, False):
        handle = favour(verdict)
        assert judge(items) == [verdict] * len(items)
        handle.remove()


def test_closed_book_qa_takes_its_verdicts_from_the_grader(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    seen: list = []

    def grader(items):
        seen.extend(items)
        return [question.startswith("A") for question, _, _ in items]

    scores, results = closed_book_qa(loaded.model, loaded.tokenizer, [("A?", "x"), ("B?", "y")], 4, 2, grader)
    assert [r.correct for r in results] == [True, False] and scores["accuracy"] == 0.5
    assert [(q, g) for q, g, _ in seen] == [("A?", "x"), ("B?", "y")]
    assert [p for _, _, p in seen] == [r.prediction for r in results]


def test_multi_passage_trial_trains_one_adapter_on_all_passages(tiny_model_dir: Path) -> None:
    loop = loop_factory(tiny_model_dir, [])(None)
    passages = tiny_passages()
    result = multi_passage_trial(loop, passages, [["Quistrand is the seat of government."], []], seed=0)
    assert len(result.answers) == sum(len(p.questions) for p in passages)
    assert [a.question for a in result.answers] == [q.question for p in passages for q in p.questions]
    with pytest.raises(ValueError, match="one self-edit per passage"):
        multi_passage_trial(loop, passages, [[]], seed=0)


def test_self_edit_items_must_pass_the_rules_and_stay_on_topic() -> None:
    kept, dropped = gate_items(
        ["Quistrand governs the island of Velmora.", "Bananas are yellow fruit.", "It is so.",
         "Velmora Velmora Velmora Velmora Velmora Velmora Velmora", "This was their first thing, which they have."],
        "Velmora", "Velmora, which was governed from Quistrand, is the first island that their ships reach.",
    )
    assert kept == ["Quistrand governs the island of Velmora."]
    reasons = dict(dropped)
    assert reasons["Bananas are yellow fruit."].startswith("off topic")
    assert reasons["It is so."].startswith("off topic")  # three words pass the length rule, but name nothing
    assert reasons["Velmora Velmora Velmora Velmora Velmora Velmora Velmora"].startswith("repetitive")
    assert reasons["This was their first thing, which they have."].startswith("off topic")  # function words only


def test_quality_rules_name_what_failed() -> None:
    assert check_text("Too short") == "too short: 2 words (at least 3)"
    assert check_text("x " * 250).startswith("too long: 250 words")
    assert check_text("Velmora adopted its flag in 1874 after the long war.") is None
    german = "Flagge Velmoras wurde nach langem Krieg eingeführt und seitdem behalten"
    assert check_text(german).startswith("not English")
    assert check_text('{"answer": "Quistrand", "year": 1874}', expects_json=True) is None
    assert check_text("answer: Quistrand year 1874", expects_json=True).startswith("not valid JSON")


def test_knowledge_documents_become_passages_per_split() -> None:
    knowledge = load_knowledge("demo", Path("."))
    train = knowledge_passages(knowledge, "train")
    evaluation = knowledge_passages(knowledge, "eval")
    assert len(train) == len(knowledge.documents)
    assert train[0].questions == knowledge.documents[0].train_qa
    assert evaluation[0].questions == knowledge.documents[0].eval_qa
    assert [(p.title, p.context) for p in train] == [(d.title, d.text) for d in knowledge.documents]


def test_perplexity_ranks_what_the_model_was_trained_on_above_noise(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    model = attach_lora(loaded.model, LoraSettings(rank=8, alpha=16), 0)
    seen = "Velmora is governed from Quistrand."
    train_sft(model, loaded.tokenizer, [Example(completion=seen)], TrainSettings(epochs=30, learning_rate=1e-2))
    model.eval()
    noise = "Gildermoor Thrannock from is Quistrand governed."
    low, high = perplexities(model, loaded.tokenizer, [seen, noise], batch_size=2)
    assert low < high
    alone = perplexities(model, loaded.tokenizer, [noise], batch_size=1)[0]
    assert abs(alone - high) < 1e-3 * high  # padding in a batch does not change a score
    kept, dropped = plausible_items([seen, noise], LoadedModel(model, loaded.tokenizer), (low + high) / 2, 2)
    assert kept == [seen] and dropped[0][0] == noise and "above dream.seal.max_perplexity" in dropped[0][1]


def test_answer_loss_falls_on_the_answers_a_model_is_taught(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    model = loaded.model  # fully trainable: a LoRA on a random hidden-32 model barely moves its outputs
    taught, other = ("What is the capital of Velmora?", "Quistrand"), ("Who founded Quistrand?", "Halvard Oske")
    probe = LoadedModel(model, loaded.tokenizer)
    before = probe_answer_loss(probe, [taught], 1)
    assert probe_answer_loss(probe, [taught, other], 2) == pytest.approx(
        probe_answer_loss(probe, [other, taught], 1), rel=1e-4)  # neither order nor padding changes it
    train_sft(model, loaded.tokenizer, [Example(prompt=taught[0], completion=taught[1])],
              TrainSettings(epochs=30, learning_rate=1e-2))
    after = [probe_answer_loss(probe, [pair], 1) for pair in (taught, other)]
    assert after[0] < before / 4 and after[0] < after[1] / 4  # the taught answer, not answers in general
