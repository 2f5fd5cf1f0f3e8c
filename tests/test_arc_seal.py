"""SEAL's few-shot ARC experiment on tiny models: the inner loop's budgets and resets, self-edit decoding, a
killed ReST-EM run resumed, the oracle's summary, and `reverie seal arc` the way a user runs it.

Most tests use a tiny Llama fine-tuned to answer every ARC prompt with the grid `1`: a task whose answer is
[[1]] is solved unless something breaks, one whose answer is [[2]] is not, so success can be counted."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

from reverie.artifacts import ArtifactStore
from reverie.config import ArcSealSettings, LoraSettings, ModelConfig, TrainSettings
from reverie.data.arc import ArcTask, Grid, task_prompt
from reverie.data.arc_self_edit import ArcSelfEdit, DataGeneration, TrainingChoice, parse_arc_self_edit
from reverie.engines.arc_bench import ArcBench
from reverie.engines.arc_rest_em import train_arc_generator
from reverie.engines.arc_ttt import ArcInnerLoop, ArcTrial, ttt_examples
from reverie.engines.models import load_pretrained

from conftest import make_workspace, reverie

SETTINGS = ArcSealSettings(samples=2, max_steps=2, max_tokens=512, max_new_tokens=16, rounds=1,
                           lora=LoraSettings(rank=4, alpha=8),
                           generator_train=TrainSettings(epochs=1, block_size=512, rows_per_step=4))
GENTLE = ArcSelfEdit(data_generation=DataGeneration(),
                     training=TrainingChoice(strategy="train_using_output_tokens", learning_rate=1e-6,
                                             num_train_epochs=1))
HARSH = ArcSelfEdit(data_generation=DataGeneration(use_basic_augmentations=True),
                    training=TrainingChoice(strategy="train_using_all_tokens", learning_rate=1e-2, num_train_epochs=5))


def random_grid(rng: random.Random, side: int) -> Grid:
    return [[rng.randrange(10) for _ in range(side)] for _ in range(side)]


def constant_task(task_id: str, answer: Grid, side: int = 2, demonstrations: int = 3) -> ArcTask:
    """A task whose every output is `answer`, on random side x side inputs."""
    rng = random.Random(task_id)
    return ArcTask.model_validate({
        "id": task_id,
        "train": [{"input": random_grid(rng, side), "output": answer} for _ in range(demonstrations)],
        "test": [{"input": random_grid(rng, side), "output": answer}],
    })


ONE, TWO = constant_task("one", [[1]]), constant_task("two", [[2]], side=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models are fastest on one thread of a shared CPU (two threads contend with a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ones_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model fine-tuned (every weight, a few seconds) to answer any ARC prompt with `1`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reverie.engines.prompts import user_prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rng = random.Random(0)
    heads = []
    for side in (1, 2, 3) * 3:
        demos = [(random_grid(rng, side), random_grid(rng, side)) for _ in range(rng.choice((1, 2, 3)))]
        heads.append(user_prompt_ids(tokenizer, task_prompt(demos, random_grid(rng, side))))
    answer = tokenizer("1", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    width = max(map(len, heads)) + len(answer)
    ids = torch.full((len(heads), width), tokenizer.pad_token_id)
    labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
    for row, head in enumerate(heads):
        ids[row, : len(head) + len(answer)] = torch.tensor(head + answer)
        labels[row, len(head) : len(head) + len(answer)] = torch.tensor(answer)
        mask[row, : len(head) + len(answer)] = 1
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory = tmp_path_factory.mktemp("ones-llama")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def arc_loop(model_dir: Path, **settings: object) -> ArcInnerLoop:
    loaded = load_pretrained(model_dir, ModelConfig())
    return ArcInnerLoop(loaded.model, loaded.tokenizer, SETTINGS.model_copy(update=settings))


def test_the_step_budget_caps_training_whatever_epochs_the_self_edit_asks(ones_model_dir: Path) -> None:
    capped = arc_loop(ones_model_dir, max_steps=3).run(ONE, HARSH)
    assert capped.steps == 3 and capped.sequences == len(ttt_examples(ONE.demonstrations(), HARSH)) > 3

    uncapped = arc_loop(ones_model_dir, max_steps=1000).run(ONE, GENTLE)  # one epoch, no augmentation
    assert uncapped.steps == uncapped.sequences == 3  # one leave-one-out task per demonstration, once


def test_a_task_beyond_the_token_budget_scores_zero_with_the_reason(ones_model_dir: Path) -> None:
    assert arc_loop(ones_model_dir).run(ONE, GENTLE).solved  # within budget the task is solved
    trial = arc_loop(ones_model_dir, max_tokens=64).run(ONE, GENTLE)
    assert not trial.solved and "max_tokens=64" in trial.reason
    assert trial.steps == 0 and trial.sequences == 0  # nothing is trained for a task that cannot be tried
    in_context = arc_loop(ones_model_dir, max_tokens=64).in_context(ONE)
    assert not in_context.solved and "max_tokens=64" in in_context.reason


@pytest.mark.parametrize("text, reason", [
    ("Rotate the grids and train for three epochs.", "no JSON object"),
    ('{"data_generation": {"use_basic_augmentations": true}, "training": {', "not closed"),
    ('{"data_generation": {}, "training": {"strategy": "train_using_output_tokens", "learning_rate": 5, '
     '"num_train_epochs": 1}}', "learning_rate"),
])
def test_an_invalid_self_edit_scores_zero_and_never_raises(ones_model_dir: Path, text: str, reason: str) -> None:
    loop = arc_loop(ones_model_dir)
    assert loop.trial(ONE, GENTLE.text()).solved  # the same task with a valid self-edit is solved
    trial = loop.trial(ONE, text)
    assert not trial.valid and not trial.solved and reason in trial.reason and trial.steps == 0


def test_constrained_decoding_writes_only_valid_self_edits(ones_model_dir: Path) -> None:
    loop = arc_loop(ones_model_dir, decoding="constrained")
    written = loop.write_self_edits([ONE, TWO], SETTINGS.samples, seed=3)
    assert [len(per_task) for per_task in written] == [SETTINGS.samples] * 2
    for text in (text for per_task in written for text in per_task):
        assert parse_arc_self_edit(text).text() == text

    free = arc_loop(ones_model_dir, decoding="free").write_self_edits([ONE, TWO], SETTINGS.samples, seed=3)
    assert [len(per_task) for per_task in free] == [SETTINGS.samples] * 2
    assert all(isinstance(text, str) for per_task in free for text in per_task)


def test_the_adapter_is_reset_before_every_trial(tiny_model_dir: Path) -> None:
    loop = arc_loop(tiny_model_dir, max_steps=4)  # the random model: its answers move when it is trained
    outputs_fast = ArcSelfEdit(data_generation=DataGeneration(), training=TrainingChoice(
        strategy="train_using_output_tokens", learning_rate=1e-2, num_train_epochs=5))
    before = loop.in_context(TWO).predictions
    first = loop.run(TWO, outputs_fast, seed=0)
    assert first.predictions != before  # the trial's training changed the answer
    loop.run(TWO, HARSH, seed=1)
    assert loop.run(TWO, outputs_fast, seed=0).predictions == first.predictions
    assert loop.in_context(TWO).predictions == before


def loop_factory(model_dir: Path, settings: ArcSealSettings) -> Callable[[Path | None], ArcInnerLoop]:
    def load_loop(directory: Path | None) -> ArcInnerLoop:
        loaded = load_pretrained(directory or model_dir, ModelConfig())
        return ArcInnerLoop(loaded.model, loaded.tokenizer, settings)

    return load_loop


def test_a_killed_rest_em_run_resumes_without_repeating_a_trial(ones_model_dir: Path, tmp_path: Path) -> None:
    tasks, state = [ONE, TWO], tmp_path / "rest-em"
    store = ArtifactStore(tmp_path / "artifacts", tmp_path / "staging")
    total = len(tasks) * SETTINGS.samples
    ran: list[str] = []

    def killed_after_two(key: str, trial: ArcTrial) -> None:
        ran.append(key)
        if len(ran) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_arc_generator(loop_factory(ones_model_dir, SETTINGS), tasks, SETTINGS, 1, state, store,
                            report=killed_after_two)
    resumed: list[str] = []
    _, done = train_arc_generator(loop_factory(ones_model_dir, SETTINGS), tasks, SETTINGS, 1, state, store,
                                  report=lambda key, trial: resumed.append(key))
    assert len(resumed) == total - 2 and not set(resumed) & set(ran[:2])
    result = done[0].result
    assert result.trials_run == total - 2 and result.self_edits == total and result.valid == total
    assert result.tasks_solved == 1 and result.kept == result.solved >= 1  # task one's self-edits taught it

    keys = [json.loads(line)["key"] for line in (state / "round-1.jsonl").read_text().splitlines()]
    trials = Counter(key for key in keys if key.startswith("trial/"))
    assert set(trials) == {f"trial/{t.id}/{j}" for t in tasks for j in range(SETTINGS.samples)}
    assert set(trials.values()) == {1}

    again: list[str] = []
    _, finished = train_arc_generator(loop_factory(ones_model_dir, SETTINGS), tasks, SETTINGS, 1, state, store,
                                      report=lambda key, trial: again.append(key))
    assert again == [] and finished == done


def test_arc_bench_summary_reports_rates_and_the_oracle_subset(ones_model_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    from reverie.cli_seal_arc import print_arc_summary

    evaluation = [ONE, TWO]
    bench = ArcBench(loop_factory(ones_model_dir, SETTINGS), SETTINGS, evaluation, [], tmp_path / "bench",
                     oracle=[GENTLE, HARSH])
    assert bench.summary()["conditions"] == {} and bench.best_oracle() is None  # nothing run yet
    for condition in ("icl", "oracle"):
        bench.run(condition)
    summary = bench.summary()

    oracle = summary["oracle"]
    per_config = oracle["tasks_solved_per_configuration"]
    assert len(per_config) == 2 and oracle["best"] == per_config.index(max(per_config))
    assert oracle["configuration"] == [GENTLE, HARSH][oracle["best"]].model_dump()
    best_solved = [t.id for t in evaluation if bench.journal.get(f"oracle/{oracle['best']}/{t.id}")["solved"]]
    assert summary["subset"] == best_solved and "one" in best_solved and "two" not in best_solved

    assert set(summary["conditions"]) == {"icl", "oracle"}
    icl = summary["conditions"]["icl"]["all"]
    assert icl["per_task"] == 0.5 and icl["per_self_edit"] == 0.5 and icl["tasks"] == 2
    for rates in (icl, summary["conditions"]["icl"]["subset"], summary["conditions"]["oracle"]["all"]):
        for interval in (rates["per_self_edit_ci95"], rates["per_task_ci95"]):
            assert len(interval) == 2 and all(isinstance(bound, float) for bound in interval)
            assert 0.0 <= interval[0] <= interval[1] <= 1.0
    assert summary["conditions"]["icl"]["subset"]["per_task"] == 1.0  # icl solves the subset's task too

    print_arc_summary(summary)
    printed = capsys.readouterr().out
    assert "exact-match success on 2 ARC tasks" in printed and "tasks it solves: one" in printed
    assert f"oracle configuration: {oracle['configuration']}" in printed.replace("\n", "")


def write_tasks(folder: Path, name: str, tasks: list[ArcTask]) -> tuple[str, str]:
    challenges = {t.id: {"train": [p.model_dump() for p in t.train], "test": [{"input": p.input} for p in t.test]}
                  for t in tasks}
    (folder / f"{name}-challenges.json").write_text(json.dumps(challenges))
    (folder / f"{name}-solutions.json").write_text(json.dumps({t.id: [p.output for p in t.test] for t in tasks}))
    return f"{name}-challenges.json", f"{name}-solutions.json"


def test_seal_arc_cli_trains_evaluates_and_resumes(tmp_path: Path, ones_model_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the commands' torch, as this process's (one_thread)
    arc = {"samples": 2, "max_steps": 2, "max_tokens": 512, "max_new_tokens": 16, "rounds": 1,
           "lora": {"rank": 4, "alpha": 8}, "generator_train": {"epochs": 1, "block_size": 512}}
    ws = make_workspace(tmp_path / "ws", ones_model_dir, dream={"seal": {"arc": arc}})
    train_files = write_tasks(ws, "train", [constant_task("t-one", [[1]]), constant_task("t-two", [[2]])])
    eval_files = write_tasks(ws, "eval", [ONE, TWO])

    trained = reverie("seal", "arc", "train", "--tasks", train_files[0], "--solutions", train_files[1],
                      "-w", str(ws), "--rounds", "1")
    assert "ReST-EM rounds on 2 ARC tasks" in trained.stdout and "round 1:" in trained.stderr
    state = ws / ".reverie" / "seal"
    assert len(list(state.glob("arc-train-*"))) == 1
    assert json.loads((state / "latest-arc.json").read_text())["round"] == 1

    evaluate = ("seal", "arc", "eval", "--tasks", eval_files[0], "--solutions", eval_files[1], "-w", str(ws),
                "--conditions", "icl,ttt,seal")  # the oracle's 16 configurations: ArcBench's test, on two
    first = reverie(*evaluate)
    assert "exact-match success on 2 ARC tasks" in first.stdout
    rows = {line.split()[1]: line for line in first.stdout.splitlines()
            if line.split()[1:2] in (["icl"], ["ttt"], ["seal"])}
    assert set(rows) == {"icl", "ttt", "seal"} and "1/2" in rows["icl"] and "4/4" in rows["ttt"]
    assert len(list(state.glob("arc-eval-*"))) == 1
    trial_line = re.compile(r"^(icl|ttt|seal)/\S+: ", re.MULTILINE)
    assert len(trial_line.findall(first.stderr)) == 2 + 2 * 2 + 2 * 2  # icl once per task, k self-edits each

    again = reverie(*evaluate)
    assert again.stdout == first.stdout and not trial_line.findall(again.stderr)  # all from the journal

    (ws / "bad.json").write_text("{not json")
    bad = reverie("seal", "arc", "eval", "--tasks", "bad.json", "--solutions", eval_files[1], "-w", str(ws),
                  check=False)
    error = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(error) == 1 and "bad.json: not a JSON file" in error[0]
    assert bad.stderr.rstrip().splitlines()[-1] == error[0]  # the message is the whole of it
    assert "Traceback" not in bad.stderr

    bogus = reverie(*evaluate[:-1], "bogus", check=False)
    assert bogus.returncode == 2 and "choose from icl, ttt, seal, oracle" in bogus.stderr
