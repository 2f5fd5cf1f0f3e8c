"""Dream by chain-of-thought self-consistency: the candidate reasons step by step several times about each training
question (its document in view, as self-consistency asks) and each item of the configured reasoning set, ending
each path in "Answer: X" (a path that never gives one is continued after "Answer:", greedily, to ask for it).
Paths without a usable final answer or that break the quality rules are quarantined;
the final answers are voted on, and an answer that enough paths agree on (and that its document contains) is
kept with one of its paths, which the candidate learns to write for the question asked closed-book. A kept
majority path over each minority answer's path is kept as a preference dataset, which later cycles' dpo may draw
from. Agreement and how often the vote is the known answer (the training answer, the reasoning set's label) are
reported; with dream.cot.require_known only known answers are kept."""

from __future__ import annotations

from pathlib import Path

from reverie.data.chain_of_thought import ReasoningItem, choice_item, extraction_prompt, knowledge_items, \
    needs_extraction, short_answer_item, vote, vote_metrics, with_extracted
from reverie.data.pool import contamination_index
from reverie.data.records import Rejected
from reverie.data.splits import knowledge_train
from reverie.engines.front import _choice_item, _json_row, _lines, _read
from reverie.engines.generation import generate
from reverie.engines.models import LoadedModel
from reverie.engines.prompts import user_prompt_ids
from reverie.errors import ReverieError
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import DREAM, DreamData, SupervisedDream, register
from reverie.workspace import Workspace

KEY = "dream.cot.reasoning"
EVAL_FILES = ("general_suite", "advbench", "xstest", "preference_prompts")  # eval.* keys naming files the Gate reads


def reasoning_set(ws: Workspace) -> list[ReasoningItem]:
    """The items dream.cot.reasoning names (none when unset): multiple choice in PIQA or ARC format, or short
    answers {question, answer}, one per line. A file the Gate reads (an eval.* file) is refused."""
    cot, evaluation = ws.config.dream.cot, ws.config.eval
    if cot.reasoning is None:
        return []
    path, text = _read(cot.reasoning, ws.root, KEY, "a PIQA, ARC or {question, answer} JSONL file from a "
                       "training split")
    for field in EVAL_FILES:
        spec = getattr(evaluation, field)
        if spec != "builtin" and (ws.root / Path(spec).expanduser()).resolve() == path.resolve():
            raise ReverieError(f"{KEY}: {path} is eval.{field}, which the Gate holds out; name a training split")
    items: list[ReasoningItem] = []
    for number, line in _lines(text):
        row = _json_row(line, path, number, KEY)
        if isinstance(row, dict) and "answer" in row and "choices" not in row:
            question, answer = row.get("question"), row["answer"]
            if not isinstance(question, str) or not question.strip() or not str(answer).strip():
                raise ReverieError(f"{KEY}: {path}, line {number}: expected {{question, answer}} with a non-empty "
                                   "question and answer")
            items.append(short_answer_item(len(items), question, str(answer)))
        else:
            items.append(choice_item(len(items), _choice_item(row, path, number, KEY)))
        if len(items) >= cot.reasoning_limit:
            break
    if not items:
        raise ReverieError(f"{KEY}: {path} holds no items")
    return items


def uncontaminated(ws: Workspace, items: list[ReasoningItem]) -> tuple[list[ReasoningItem], list[Rejected]]:
    """The reasoning items that overlap nothing the Gate scores, and the others with their reasons (never sampled)."""
    if not items:
        return [], []
    contamination = contamination_index(ws)
    kept, rejected = [], []
    for item in items:
        if (leaked := contamination.leak(f"{item.prompt}\n{item.known}")) is None:
            kept.append(item)
        else:
            rejected.append(Rejected(origin=item.id, step="contamination", reason=f"overlaps evaluation item {leaked}",
                                     row={"prompt": item.prompt}))
    return kept, rejected


@register(DREAM, "cot-consistency")
class CotConsistency(SupervisedDream):
    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData:
        ws = ctx.workspace
        cot = ws.config.dream.cot
        reasoning, quarantined = uncontaminated(ws, reasoning_set(ws))
        items = knowledge_items(knowledge_train(ctx.inputs.knowledge)) + reasoning
        prompts = [user_prompt_ids(loaded.tokenizer, item.sample_prompt) for item in items]
        paths = generate(loaded.model, loaded.tokenizer, prompts, cot.max_new_tokens, ws.config.eval.batch_size,
                         temperature=cot.temperature, samples=cot.samples, seed=ws.config.dream.train.seed,
                         description="dream: reasoning paths")
        paths, extracted = self._extract(ctx, loaded, prompts, paths)
        outcomes = [vote(item, sampled, cot.min_agreement, cot.require_known) for item, sampled in zip(items, paths)]
        quarantined += [row for outcome in outcomes for row in outcome.quarantined]
        examples = [outcome.example for outcome in outcomes if outcome.example is not None]
        metrics = vote_metrics(outcomes, cot.samples) | {"dream_paths_extracted": float(extracted),
                                                         "dream_quarantined": float(len(quarantined))}
        return DreamData(f"cot-consistency votes of {len(items)} questions", examples, metrics, quarantined,
                         found_pairs=[pair for outcome in outcomes for pair in outcome.pairs])

    def _extract(self, ctx: PhaseContext, loaded: LoadedModel, prompts: list[list[int]],
                 paths: list[list[str]]) -> tuple[list[list[str]], int]:
        """Each path that gave no final answer, continued greedily after "Answer:" (dream.cot.extract_tokens
        tokens, its first line kept); and how many were. With extract_tokens 0, paths are voted on as written."""
        ws = ctx.workspace
        tokens = ws.config.dream.cot.extract_tokens
        wanted = [(i, j) for i, sampled in enumerate(paths) for j, path in enumerate(sampled)
                  if tokens and needs_extraction(path)]
        if not wanted:
            return paths, 0
        tokenizer = loaded.tokenizer
        asked = [prompts[i] + tokenizer(extraction_prompt(paths[i][j]), add_special_tokens=False)["input_ids"]
                 for i, j in wanted]
        answers = generate(loaded.model, tokenizer, asked, tokens, ws.config.eval.batch_size,
                           description="dream: asking for final answers")
        completed = [list(sampled) for sampled in paths]
        for (i, j), [answer] in zip(wanted, answers):
            completed[i][j] = with_extracted(paths[i][j], answer)
        return completed, len(wanted)
