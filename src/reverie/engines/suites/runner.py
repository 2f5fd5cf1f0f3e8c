"""Runs suites on registered model versions, once per model and suite fingerprint: the per-item results go to
a JSONL file beside the registry, the summary metrics into the registry, so that a number can be traced to
its items and a second run of the same model is free (and gives the same decision).

The preference suite is pairwise: a model's result is against an opponent (the current release) by a judge,
so its key holds both; each model's answers are cached on their own, so the opponent answers once per prompt
set however many candidates meet it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, ClassVar

from rich.markup import escape

from reverie.data.jsonl import jsonl_text, scan_jsonl
from reverie.data.knowledge import Knowledge, load_knowledge
from reverie.data.multiple_choice import load_choice_items
from reverie.data.preference import load_preference_prompts
from reverie.data.redteam import load_safety_items, suite_items
from reverie.data.splits import general_held_out
from reverie.engines.models import LoadedModel, load_version
from reverie.engines.preference_judge import PairJudge, judge_identity, load_judge
from reverie.engines.refusal import RefusalJudge, load_refusal_judge
from reverie.engines.suites.base import ItemResult, Suite, SuiteReport, fingerprint
from reverie.engines.suites.citation import CitationSuite
from reverie.engines.suites.cross_paragraph import CrossParagraphSuite
from reverie.engines.suites.false_premise import FalsePremiseSuite
from reverie.engines.suites.general import GeneralSuite
from reverie.engines.suites.grounded import GroundedSuite
from reverie.engines.suites.knowledge import KnowledgeSuite
from reverie.engines.suites.lm_eval import HarnessSuite
from reverie.engines.suites.long_context import LongContextSuite
from reverie.engines.suites.politeness import PolitenessSuite
from reverie.engines.suites.preference import PreferenceSuite
from reverie.engines.suites.robustness import RobustnessSuite
from reverie.engines.suites.safety import AdvBenchSuite, RedTeamSuite, XSTestSuite
from reverie.engines.suites.structured import StructuredSuite
from reverie.errors import ReverieError
from reverie.memory.store import current_knowledge
from reverie.metrics import LM_EVAL_PREFIX, SAFETY_SUITES, SUITES, is_harness_suite
from reverie.progress import status_line
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

SECONDS = "seconds"  # stored beside the metrics: the suite's wall time when it ran


def _answer_row(row: object) -> tuple[str, str]:
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("answer"), str):
        raise ValueError("expected {prompt, answer} as text")
    return row["prompt"], row["answer"]


class SuiteRunner:
    def __init__(self, workspace: Workspace, knowledge: Knowledge | None = None, opponent: ModelRecord | None = None,
                 preference_judge: PairJudge | None = None):
        """`knowledge`: whose held-out questions the knowledge suite asks and whose documents the long-context
        suite hides facts in: a cycle's frozen inputs; None, the workspace's knowledge as it is now.
        `opponent`: whom the preference suite compares a model with; None, the current release.
        `preference_judge`: a judge already in hand; None, eval.preference_judge is loaded when first needed."""
        self.workspace = workspace
        self.knowledge = knowledge
        self._opponent_record = opponent
        self._suites: dict[str, Suite | PreferenceSuite] = {}
        self._judge: RefusalJudge | None = None
        self._pair_judge = preference_judge
        self._loaded: tuple[str, LoadedModel] | None = None

    def suite(self, name: str) -> Suite | PreferenceSuite:
        if name not in SUITES and not is_harness_suite(name):
            raise ReverieError(f"unknown suite {name!r}: choose from {', '.join(SUITES)}")
        if name not in self._suites:
            self._suites[name] = self._build(name)
        return self._suites[name]

    def _build(self, name: str) -> Suite | PreferenceSuite:
        return self._harness(name) if is_harness_suite(name) else self.BUILDERS[name](self)

    def _harness(self, name: str) -> Suite:
        """lm-eval/<task>: the task from eval.harness_include (relative to the workspace) or lm-eval's registry."""
        ws, config = self.workspace, self.workspace.config.eval
        include = ws.root / Path(config.harness_include).expanduser() if config.harness_include else None
        return HarnessSuite(name.removeprefix(LM_EVAL_PREFIX), include, config.harness_limit, config.batch_size)

    def _knowledge(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        return KnowledgeSuite(self.knowledge or current_knowledge(ws), config.max_new_tokens, config.batch_size)

    def _general(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        items = load_choice_items(config.general_suite, ws.root, config.general_limit)
        return GeneralSuite(general_held_out(items), config.batch_size)

    def _advbench(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        return AdvBenchSuite(load_safety_items(config.advbench, ws.root, "eval.advbench"), config.jailbreaks,
                             config.safety_limit, config.answer_tokens, config.batch_size, self._refusal_judge())

    def _xstest(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        return XSTestSuite(load_safety_items(config.xstest, ws.root, "eval.xstest"), config.safety_limit,
                           config.answer_tokens, config.batch_size, self._refusal_judge())

    def _structured(self) -> Suite:
        config = self.workspace.config.eval
        return StructuredSuite(config.answer_tokens, config.batch_size)

    def _long_context(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        documents = (self.knowledge or load_knowledge(ws.config.data.knowledge, ws.root)).documents
        return LongContextSuite([d.text for d in documents], config.long_context_tokens, config.answer_tokens,
                                config.batch_size)

    def _robustness(self) -> Suite:
        config = self.workspace.config.eval
        return RobustnessSuite(config.answer_tokens, config.batch_size)

    def _preference(self) -> PreferenceSuite:
        ws, config = self.workspace, self.workspace.config.eval
        prompts = load_preference_prompts(config.preference_prompts, ws.root, config.preference_limit)
        return PreferenceSuite(prompts, config.preference_tokens, config.batch_size)

    def _false_premise(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        return FalsePremiseSuite(self.knowledge or current_knowledge(ws), config.answer_tokens, config.batch_size)

    def _redteam(self) -> Suite:
        config = self.workspace.config.eval
        items = suite_items(self.workspace)
        if items.left_out:
            status_line(f"redteam: {len(items.left_out)} held-out item(s) of {items.source} left out: a training set "
                        "contains them")
        return RedTeamSuite(items, config.jailbreaks, config.safety_limit, config.answer_tokens, config.batch_size,
                            self._refusal_judge())

    def _cross_paragraph(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        documents = (self.knowledge or load_knowledge(ws.config.data.knowledge, ws.root)).documents
        return CrossParagraphSuite([d.text for d in documents], config.long_context_tokens, config.answer_tokens,
                                   config.batch_size)

    def _grounded(self) -> Suite:
        ws, config = self.workspace, self.workspace.config.eval
        return GroundedSuite(self.knowledge or current_knowledge(ws), config.answer_tokens, config.batch_size)

    def _politeness(self) -> Suite:
        config = self.workspace.config.eval
        return PolitenessSuite(config.answer_tokens, config.batch_size)

    def _citation(self) -> Suite:
        ws, config = self.workspace, self.workspace.config
        from reverie.memory.retrieval import MIN_SCORE, Embedder  # faiss and the embedder load only for this suite

        return CitationSuite(self.knowledge or current_knowledge(ws), lambda: Embedder(ws).encode, "all-MiniLM-L6-v2",
                             config.serve.retrieval_k, MIN_SCORE, config.eval.answer_tokens, config.eval.batch_size)

    # Every suite in metrics.SUITES by name; tests/test_suites_table.py checks that the two list the same suites.
    BUILDERS: ClassVar[dict[str, Callable[[SuiteRunner], Suite | PreferenceSuite]]] = {
        "knowledge": _knowledge, "general": _general, "advbench": _advbench, "xstest": _xstest,
        "structured": _structured, "long_context": _long_context, "robustness": _robustness,
        "preference": _preference,
        "false_premise": _false_premise,
        "redteam": _redteam,
        "cross_paragraph": _cross_paragraph, "grounded": _grounded, "politeness": _politeness, "citation": _citation,
    }

    def _refusal_judge(self) -> RefusalJudge | None:
        if self._judge is None:
            self._judge = load_refusal_judge(self.workspace)
        return self._judge

    def key(self, name: str, record: ModelRecord) -> str:
        """Where the suite's results for `record` are stored: its name and a fingerprint of its items and settings
        (for preference also the opponent and the judge; none judges a model against itself)."""
        parts: list = [self.suite(name).fingerprint(), self.workspace.config.model.dtype]
        if name in SAFETY_SUITES:
            parts.append(self.workspace.config.eval.refusal_judge)
        if name == PreferenceSuite.name:
            opponent = self._opponent()
            parts += [opponent.id, None if opponent.id == record.id else self.preference_judge_identity(),
                      PreferenceSuite.SCORING]
        return f"{name}@{fingerprint(*parts)}"

    def items_path(self, record: ModelRecord, name: str) -> Path:
        return self._items_path(record, self.key(name, record))

    def _items_path(self, record: ModelRecord, key: str) -> Path:
        return self.workspace.state / "evals" / record.id / f"{key}.jsonl"

    def report(self, record: ModelRecord, name: str) -> SuiteReport:
        """The suite's results for this model: stored ones when they exist, else it is run now."""
        key = self.key(name, record)
        path = self._items_path(record, key)
        stored = self.workspace.registry.get_metrics(record.id, key)
        if stored and path.is_file():
            items, bad = scan_jsonl(path, lambda row: ItemResult(**row))
            if not bad:
                return SuiteReport(name, key, items, stored.get(SECONDS, 0.0))
            status_line(escape(f"{name}: stored results unreadable ({bad[0]}); evaluating again"))
        suite = self.suite(name)
        start = time.perf_counter()
        if isinstance(suite, PreferenceSuite):
            items = self._preference_items(record, suite)
        else:
            loaded = self.load(record)
            status_line(f"{name}: evaluating {record.id}")
            items = suite.run(loaded.model, loaded.tokenizer)
        report = SuiteReport(name, key, items, time.perf_counter() - start)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.write_text_atomic(path, jsonl_text(items))
        self.workspace.registry.log_metrics(record.id, key, report.means() | {SECONDS: report.seconds})
        return report

    def reports(self, record: ModelRecord, names: list[str]) -> dict[str, SuiteReport]:
        return {name: self.report(record, name) for name in names}

    def load(self, record: ModelRecord) -> LoadedModel:
        """One model in memory at a time: the Gate evaluates the release, then the candidate."""
        if self._loaded is None or self._loaded[0] != record.id:
            self._loaded = None
            self._loaded = (record.id, load_version(self.workspace, record, inference=True))
        return self._loaded[1]

    def _opponent(self) -> ModelRecord:
        if self._opponent_record is None:
            release = self.workspace.registry.get_alias()
            if release is None:
                raise ReverieError("the preference suite compares a model with the current release, and there is "
                                   "no release yet (run `reverie cycle`)")
            self._opponent_record = self.workspace.registry.get_model(release)
        return self._opponent_record

    def preference_judge_identity(self) -> str:
        """Who judges the preference suite, in words (the card names it), without loading it."""
        if self._pair_judge is not None:
            return self._pair_judge.identity
        return judge_identity(self.workspace, self.workspace.config.eval.preference_judge)

    def _preference_items(self, record: ModelRecord, suite: PreferenceSuite) -> list[ItemResult]:
        """Opponent's answers, then the model's (one model in memory at a time), then the judge on the pairs."""
        opponent = self._opponent()
        theirs = self.answers(opponent, suite)
        ours = theirs if record.id == opponent.id else self.answers(record, suite)
        judge = None
        if ours != theirs:
            if self._pair_judge is None:
                self._loaded = None  # the policy model leaves memory before the judge comes in
                self._pair_judge = load_judge(self.workspace, self.workspace.config.eval.preference_judge)
            judge = self._pair_judge
        status_line(f"preference: judging {record.id} against {opponent.id}")
        return suite.compare(ours, theirs, judge, opponent.id)

    def answers(self, record: ModelRecord, suite: PreferenceSuite) -> list[str]:
        """The model's answers to the preference prompts: stored once per model and prompt set, generated when
        missing (or unreadable)."""
        path = self._items_path(record, f"{suite.name}-answers@"
                                        f"{fingerprint(suite.fingerprint(), self.workspace.config.model.dtype)}")
        if path.is_file():
            rows, bad = scan_jsonl(path, _answer_row)
            if not bad and [prompt for prompt, _ in rows] == suite.prompts:
                return [answer for _, answer in rows]
            status_line(escape(f"preference: stored answers of {record.id} unreadable; answering again"))
        loaded = self.load(record)
        status_line(f"preference: answering with {record.id}")
        answers = suite.answer(loaded.model, loaded.tokenizer)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.write_text_atomic(path, jsonl_text({"prompt": p, "answer": a}
                                                          for p, a in zip(suite.prompts, answers)))
        return answers
