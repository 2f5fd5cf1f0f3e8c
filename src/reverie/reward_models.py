"""The workspace's reward models: trained by `reverie rm train` on a split of the preference pairs, recorded in
the registry as `reward` versions behind the `reward` alias (the model Dream's grpo optimises against) or the
`judge` alias (the Gate's preference judge, trained on a disjoint split), and measured by `reverie rm eval` on
the held-out pairs beside what a length-only rule scores there.

State lives under .reverie/rm/: one folder per run, keyed by what it was asked (the release, the datasets, the
split, the settings), so rerunning the same command resumes it from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel

from reverie.data.preference import PreferencePair, load_pairs, preference_datasets
from reverie.data.pool import contamination_index
from reverie.data.preference_ingest import uncontaminated
from reverie.data.splits import PREFERENCE_SPLIT_RULE, PreferenceSplit, preference_pairs
from reverie.engines.models import store_weights
from reverie.engines.reward_model import RewardTraining, base_directory, load_reward_scorer, train_reward
from reverie.errors import ReverieError
from reverie.progress import status_line
from reverie.registry import JUDGE_ALIAS, RELEASE_ALIAS, REWARD_ALIAS, DatasetRecord, ModelRecord
from reverie.stats import bootstrap_ci
from reverie.workspace import Workspace, code_version

RM_STATE = "rm"
BASE_SCRATCH = ".rm-base-"  # under .reverie/: the release with its adapter merged in, while a run trains on it
SPLIT_OF_ALIAS: dict[str, PreferenceSplit] = {REWARD_ALIAS: "policy", JUDGE_ALIAS: "judge"}
TRAINING_SPLITS = ("policy", "judge")


class DatasetRef(BaseModel):
    name: str
    hash: str
    rows: int


class TrainingSummary(BaseModel):
    """What a reward model was trained from and how training went."""

    base: str  # the release it was trained on
    alias: str
    split: PreferenceSplit
    pairs: int
    truncated: int  # pairs with a side cut to align.reward.max_length
    datasets: list[DatasetRef]
    settings: dict
    steps: int
    resumed_from: int
    loss_start: float  # mean over the first tenth of the steps
    loss_end: float  # and over the last tenth
    accuracy_start: float
    accuracy_end: float
    seconds: float


class GroupAccuracy(BaseModel):
    n: int
    accuracy: float | None  # the reward model's; None for a group with no pairs
    length_accuracy: float | None  # the length-only rule's on the same pairs


class RewardEval(BaseModel):
    """Pairwise accuracy on the held-out pairs (a tie counts half), with what answer length alone explains."""

    model_id: str
    n: int
    accuracy: float
    ci95: tuple[float, float]
    length_accuracy: float  # the rule "the longer answer is preferred"
    length_ci95: tuple[float, float]
    agreement: float | None  # of the pairs whose lengths differ, the share where the model prefers the longer
    chosen_longer: GroupAccuracy  # the pairs where the preferred answer is the longer one
    chosen_shorter: GroupAccuracy  # and where it is the shorter one: accuracy here is what length cannot explain
    by_source: dict[str, GroupAccuracy]
    by_bucket: dict[str, GroupAccuracy]

    def metrics(self) -> dict[str, float]:
        """The registry's view: flat numbers, groups with no pairs left out."""
        values = {"accuracy": self.accuracy, "accuracy_low": self.ci95[0], "accuracy_high": self.ci95[1],
                  "length_accuracy": self.length_accuracy, "n": float(self.n)}
        if self.agreement is not None:
            values["length_agreement"] = self.agreement
        for name, group in (("chosen_longer", self.chosen_longer), ("chosen_shorter", self.chosen_shorter)):
            values[f"{name}_n"] = float(group.n)
            if group.accuracy is not None:
                values[f"{name}_accuracy"] = group.accuracy
        return values


class RewardModelReport(BaseModel):
    """What the card shows, kept as JSON beside it."""

    model_id: str
    training: TrainingSummary | None = None  # None for a model registered by other means
    evaluation: RewardEval | None = None


def _win(better: float, worse: float) -> float:
    return 1.0 if better > worse else 0.5 if better == worse else 0.0


def _group(pairs: Sequence[PreferencePair], rm: list[float], length: list[float], keep: list[bool]) -> GroupAccuracy:
    chosen = [i for i, k in enumerate(keep) if k]
    if not chosen:
        return GroupAccuracy(n=0, accuracy=None, length_accuracy=None)
    return GroupAccuracy(n=len(chosen), accuracy=sum(rm[i] for i in chosen) / len(chosen),
                         length_accuracy=sum(length[i] for i in chosen) / len(chosen))


def pairwise_eval(model_id: str, pairs: Sequence[PreferencePair], chosen_scores: list[float],
                  rejected_scores: list[float]) -> RewardEval:
    """Score the pairs' outcomes: the model's (chosen outscored rejected) and the length rule's (chosen is the
    longer, in characters), each a tie counting half."""
    rm = [_win(c, r) for c, r in zip(chosen_scores, rejected_scores, strict=True)]
    length = [_win(len(p.chosen), len(p.rejected)) for p in pairs]
    differ = [i for i, p in enumerate(pairs) if len(p.chosen) != len(p.rejected)]
    longer_first = [(chosen_scores[i], rejected_scores[i]) if len(pairs[i].chosen) > len(pairs[i].rejected)
                    else (rejected_scores[i], chosen_scores[i]) for i in differ]
    accuracy, by_length = bootstrap_ci(rm), bootstrap_ci(length)
    by_source: dict[str, list[bool]] = defaultdict(lambda: [False] * len(pairs))
    by_bucket: dict[str, list[bool]] = defaultdict(lambda: [False] * len(pairs))
    for i, pair in enumerate(pairs):
        by_source[pair.source][i] = True
        by_bucket[pair.bucket][i] = True
    return RewardEval(
        model_id=model_id, n=len(pairs), accuracy=accuracy.mean, ci95=(accuracy.low, accuracy.high),
        length_accuracy=by_length.mean, length_ci95=(by_length.low, by_length.high),
        agreement=sum(_win(a, b) for a, b in longer_first) / len(differ) if differ else None,
        chosen_longer=_group(pairs, rm, length, [len(p.chosen) > len(p.rejected) for p in pairs]),
        chosen_shorter=_group(pairs, rm, length, [len(p.chosen) < len(p.rejected) for p in pairs]),
        by_source={k: _group(pairs, rm, length, v) for k, v in sorted(by_source.items())},
        by_bucket={k: _group(pairs, rm, length, v) for k, v in sorted(by_bucket.items())},
    )


def select_datasets(ws: Workspace, names: list[str] | None) -> list[DatasetRecord]:
    """Every registered preference dataset, or those named (by name or a prefix of their hash)."""
    known = preference_datasets(ws)
    if not names:
        if not known:
            raise ReverieError("no preference dataset is registered in this workspace yet: ingest preference pairs "
                               "first (see `reverie data --help`)")
        return known
    listing = ", ".join(f"{d.name} ({d.hash[:12]}, {d.rows} pairs)" for d in known) or "none registered yet"
    chosen: list[DatasetRecord] = []
    for name in names:
        matches = [d for d in known if d.name == name] or [d for d in known if d.hash.startswith(name.lower())]
        if len(matches) != 1:
            problem = "matches several" if matches else "is not a registered preference dataset"
            raise ReverieError(f"--dataset {name!r} {problem}; known: {listing}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def dataset_pairs(ws: Workspace, datasets: list[DatasetRecord]) -> list[PreferencePair]:
    """The pairs of the datasets, a pair found in two of them once."""
    seen: dict[str, PreferencePair] = {}
    for dataset in datasets:
        for pair in load_pairs(ws, dataset):
            seen.setdefault(pair.id, pair)
    return list(seen.values())


def training_pairs(ws: Workspace, datasets: list[DatasetRecord], split: PreferenceSplit,
                   max_pairs: int) -> list[PreferencePair]:
    """The split's pairs that overlap no evaluation item as the items are now, at most `max_pairs` (0: all)
    taken in content-hash order: a sample no source or file order biases, the same on every run."""
    pairs, leaked = uncontaminated(preference_pairs(dataset_pairs(ws, datasets), split), contamination_index(ws))
    if leaked:
        status_line(f"{len(leaked)} pair(s) left out: they overlap evaluation items ({leaked[0].reason})")
    pairs = sorted(pairs, key=lambda p: p.id)
    pairs = pairs[:max_pairs] if max_pairs else pairs
    if not pairs:
        names = ", ".join(d.name for d in datasets)
        raise ReverieError(f"no pair of {names} falls in the {split} split (it holds "
                           f"{'half' if split == 'policy' else 'three tenths'} of the prompts, by content hash): "
                           "add more pairs")
    return pairs


def report_path(ws: Workspace, model_id: str) -> Path:
    return ws.cards_dir / f"{model_id}.json"


def read_report(ws: Workspace, model_id: str) -> RewardModelReport | None:
    path = report_path(ws, model_id)
    return RewardModelReport.model_validate_json(path.read_text()) if path.is_file() else None


def _check_split(ws: Workspace, alias: str, split: str) -> None:
    """The judge and the policy's reward model must learn from disjoint pairs, or the Gate would reward the
    policy for pleasing its own reward model's quirks."""
    if alias not in SPLIT_OF_ALIAS:
        raise ReverieError(f"--alias {alias!r}: choose {REWARD_ALIAS} (the policy's reward model) or {JUDGE_ALIAS} "
                           "(the Gate's preference judge)")
    if split not in TRAINING_SPLITS:
        raise ReverieError(f"--split {split!r}: choose policy or judge (held_out is only for `reverie rm eval`)")
    other = JUDGE_ALIAS if alias == REWARD_ALIAS else REWARD_ALIAS
    other_id = ws.registry.get_alias(other)
    report = read_report(ws, other_id) if other_id else None
    if report is not None and report.training is not None and report.training.split == split:
        raise ReverieError(f"the {other} model {other_id} was trained on the {split} split; the {alias} model "
                           f"must learn from the other one (--split {'judge' if split == 'policy' else 'policy'})")


def _release(ws: Workspace) -> ModelRecord:
    model_id = ws.registry.get_alias(RELEASE_ALIAS)
    if model_id is None:
        raise ReverieError(f"{ws.root} has no release yet: run `reverie cycle` first")
    return ws.registry.get_model(model_id)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _summary(release: ModelRecord, alias: str, split: PreferenceSplit, pairs: list[PreferencePair],
             datasets: list[DatasetRecord], settings: dict, trained: RewardTraining) -> TrainingSummary:
    tenth = max(1, len(trained.log) // 10)
    head, tail = trained.log[:tenth], trained.log[-tenth:]
    return TrainingSummary(
        base=release.id, alias=alias, split=split, pairs=len(pairs), truncated=trained.truncated,
        datasets=[DatasetRef(name=d.name, hash=d.hash, rows=d.rows) for d in datasets], settings=settings,
        steps=trained.steps, resumed_from=trained.resumed_from, loss_start=_mean([s.loss for s in head]),
        loss_end=_mean([s.loss for s in tail]), accuracy_start=_mean([s.accuracy for s in head]),
        accuracy_end=_mean([s.accuracy for s in tail]), seconds=trained.seconds,
    )


def train_reward_model(ws: Workspace, alias: str, split: PreferenceSplit | None = None,
                       datasets: list[str] | None = None) -> ModelRecord:
    """Train a reward model on the release from the preference pairs of `split` (by default the alias's:
    reward -> policy, judge -> judge), register it behind `alias` and write its card.

    Rerunning the same command resumes an interrupted run; one that finished returns the registered model.
    """
    split = split or SPLIT_OF_ALIAS.get(alias, "policy")
    _check_split(ws, alias, split)
    settings = ws.config.align.reward
    chosen = select_datasets(ws, datasets)
    pairs = training_pairs(ws, chosen, split, settings.max_pairs)
    release = _release(ws)
    key = hashlib.sha256(json.dumps(
        [release.id, sorted(d.hash for d in chosen), split, PREFERENCE_SPLIT_RULE, settings.model_dump(),
         ws.config.model.model_dump()],
        sort_keys=True).encode()).hexdigest()
    run_dir, model_id = ws.state / RM_STATE / f"{alias}-{key[:16]}", f"rm-{key[:12]}"
    with ws.cycle_lock():  # a cycle's garbage collection must not see the weights before they are registered
        if (existing := ws.registry.find_model(model_id)) is not None:
            status_line(f"this reward model was trained already: {model_id}")
            return existing
        status_line(f"reward model on {len(pairs)} {split} pairs of {', '.join(d.name for d in chosen)}, "
                    f"from release {release.id}")
        for leftover in ws.state.glob(f"{BASE_SCRATCH}*"):  # a merged base a killed run left behind
            shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=ws.state, prefix=BASE_SCRATCH) as scratch:
            base = base_directory(ws, release, Path(scratch))
            trained = train_reward(base, ws.config.model, pairs, settings, run_dir / "checkpoints")
        record = ModelRecord(id=model_id, status="reward", weights=store_weights(ws, trained.model, trained.tokenizer),
                             parent_id=release.id, phase="rm", config_hash=ws.config.fingerprint(),
                             code_version=code_version(), created_at=time.time(), datasets=[d.hash for d in chosen])
        summary = _summary(release, alias, split, pairs, chosen, settings.model_dump(), trained)
        write_card(ws, RewardModelReport(model_id=model_id, training=summary))
        ws.registry.add_reward_model(record, alias)
        ws.registry.log_metrics(model_id, "rm-train", {
            "pairs": float(summary.pairs), "steps": float(summary.steps), "loss_start": summary.loss_start,
            "loss_end": summary.loss_end, "accuracy_start": summary.accuracy_start,
            "accuracy_end": summary.accuracy_end, "seconds": summary.seconds})
    shutil.rmtree(run_dir, ignore_errors=True)  # its checkpoints are only for a resume
    return record


def resolve_reward_model(ws: Workspace, name: str) -> ModelRecord:
    """A reward model by alias (reward, judge) or id."""
    model_id = ws.registry.get_alias(name) if name in SPLIT_OF_ALIAS else name
    if model_id is None:
        raise ReverieError(f"no reward model is behind the alias {name!r} yet: run `reverie rm train --alias {name}`")
    record = ws.registry.get_model(model_id)
    if record.status != "reward":
        raise ReverieError(f"model {record.id} is not a reward model (status {record.status})")
    return record


def evaluate_reward_model(ws: Workspace, record: ModelRecord, limit: int = 0) -> RewardEval:
    """Pairwise accuracy on the held-out pairs of the datasets the model was trained on (at most `limit`, taken
    in content-hash order; 0: all), beside the length rule; stored in the registry (suite rm-eval), as JSON
    beside the card, and in the card."""
    datasets = [ws.registry.get_dataset(h) for h in record.datasets]
    held_out = sorted(preference_pairs(dataset_pairs(ws, datasets), "held_out"), key=lambda p: p.id)
    held_out = held_out[:limit] if limit else held_out
    if not held_out:
        raise ReverieError(f"no pair of {', '.join(d.name for d in datasets) or 'its datasets'} is in the held-out "
                           "split (a fifth of the pairs, by content hash): nothing to evaluate on")
    scorer = load_reward_scorer(ws, record)
    conversations = [p.messages() for p in held_out]
    result = pairwise_eval(record.id, held_out, scorer.score(conversations, [p.chosen for p in held_out]),
                           scorer.score(conversations, [p.rejected for p in held_out]))
    report = read_report(ws, record.id) or RewardModelReport(model_id=record.id)
    write_card(ws, report.model_copy(update={"evaluation": result}))
    ws.registry.log_metrics(record.id, "rm-eval", result.metrics())
    return result


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _groups_table(title: str, groups: dict[str, GroupAccuracy]) -> list[str]:
    lines = [f"| {title} | pairs | accuracy | length rule |", "|---|---|---|---|"]
    return lines + [f"| {name} | {g.n} | {share(g.accuracy)} | {share(g.length_accuracy)} |"
                    for name, g in groups.items()]


def length_explanation(result: RewardEval) -> str:
    """How much of the accuracy answer length explains, in words."""
    longer, shorter = result.chosen_longer, result.chosen_shorter
    text = (f"A length-only rule (the longer answer wins) scores {result.length_accuracy:.3f} on the same pairs. "
            f"Where the preferred answer is the longer one ({longer.n} pairs) the reward model scores "
            f"{share(longer.accuracy)}; where it is the shorter one ({shorter.n} pairs), {share(shorter.accuracy)}.")
    if result.agreement is not None:
        text += (f" Of the pairs whose lengths differ, it prefers the longer answer in {result.agreement:.0%}: "
                 "near 100% with a low accuracy on the shorter-preferred pairs means length explains most of "
                 "its accuracy; an accuracy on those pairs near its overall one means little of it.")
    return text


def card_text(report: RewardModelReport) -> str:
    lines = [f"# Reward model {report.model_id}", ""]
    if (t := report.training) is not None:
        lines += [
            f"A sequence-classification head on release {t.base}, behind the alias `{t.alias}`, trained by TRL's "
            f"RewardTrainer on the {t.split} split of the preference pairs.", "",
            f"- pairs: {t.pairs} ({t.truncated} cut to {t.settings.get('max_length')} tokens)",
            *[f"- dataset: {d.name} ({d.hash[:12]}, {d.rows} pairs)" for d in t.datasets],
            f"- steps: {t.steps}" + (f" (resumed at step {t.resumed_from})" if t.resumed_from else ""),
            f"- training loss {t.loss_start:.3f} -> {t.loss_end:.3f}, accuracy {t.accuracy_start:.3f} -> "
            f"{t.accuracy_end:.3f} (first and last tenth of the steps)", "",
            "Settings (align.reward):", "", "```yaml", yaml.safe_dump(t.settings, sort_keys=True).rstrip(), "```", "",
        ]
    if (e := report.evaluation) is not None:
        lines += [
            "## Held-out pairs", "",
            f"Pairwise accuracy {e.accuracy:.3f} (95% CI {e.ci95[0]:.3f}-{e.ci95[1]:.3f}) on {e.n} held-out pairs; "
            f"the length-only rule {e.length_accuracy:.3f} (95% CI {e.length_ci95[0]:.3f}-{e.length_ci95[1]:.3f}).",
            "", length_explanation(e), "",
            *_groups_table("source", e.by_source), "", *_groups_table("bucket", e.by_bucket), "",
        ]
    else:
        lines += ["Not evaluated yet: `reverie rm eval` scores the held-out pairs.", ""]
    return "\n".join(lines)


def write_card(ws: Workspace, report: RewardModelReport) -> None:
    ws.write_text_atomic(report_path(ws, report.model_id), report.model_dump_json(indent=2) + "\n")
    ws.write_text_atomic(ws.cards_dir / f"{report.model_id}.md", card_text(report))


def reward_models(ws: Workspace) -> list[tuple[ModelRecord, RewardModelReport | None]]:
    """The registered reward models, oldest first, with their reports."""
    return [(m, read_report(ws, m.id)) for m in ws.registry.list_models() if m.status == "reward"]
