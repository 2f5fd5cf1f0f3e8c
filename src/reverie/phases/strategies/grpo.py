"""Dream by reinforcement learning with a KL penalty: the candidate samples a group of answers per prompt, the
summed rewards score them (the registered reward model behind align.grpo.reward_alias, plus verifiable checks),
and GRPO (or RLOO) moves the policy towards the better ones while `beta` holds it near the reference, the
candidate as it arrived. The prompts pass the contamination check and are stored as the strategy's dataset;
the outcome names the reward model, so that the Gate can refuse to let the same model judge the result."""

from __future__ import annotations

import random
from pathlib import Path

from reverie.data.jsonl import scan_jsonl
from reverie.data.pool import contamination_index
from reverie.data.records import Rejected
from reverie.data.redteam import load_version_items
from reverie.data.splits import knowledge_train, safety_train
from reverie.engines.models import LoadedModel
from reverie.engines.preference_training import RLPrompt, train_grpo
from reverie.engines.rewards import VERIFIABLE, RewardFunction, reward_model
from reverie.errors import ReverieError
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import DREAM, DreamData, Trained, prepare_policy, register
from reverie.registry import ModelRecord
from reverie.workspace import Workspace


def configured_prompts(ctx: PhaseContext) -> tuple[list[RLPrompt], list[Rejected]]:
    """align.grpo.prompts as RL prompts, and the lines of a prompts file that are not one."""
    ws, spec = ctx.workspace, ctx.workspace.config.align.grpo.prompts
    if spec == "redteam":
        items = safety_train(load_version_items(ws, ctx.inputs.redteam))
        return [RLPrompt(prompt=i.prompt, must_refuse=i.must_refuse) for i in items], []
    if spec == "knowledge":
        train = knowledge_train(ctx.inputs.knowledge)
        return [RLPrompt(prompt=qa.question, answer=qa.answer) for _, qa in train], []
    path = ws.root / Path(spec).expanduser()
    if not path.is_file():
        raise ReverieError(f"align.grpo.prompts: {path} does not exist (use 'redteam', 'knowledge' or a JSONL file "
                           "of {prompt, answer?, must_refuse?})")
    rows, bad = scan_jsonl(path, RLPrompt.model_validate)
    rejected = [Rejected(origin=f"{line.path}:{line.number}", step="schema", reason=line.reason) for line in bad]
    return rows, rejected


def policy_reward_model(ws: Workspace, alias: str) -> ModelRecord:
    """The reward model behind `alias`, which the policy is optimised against; an error says how to train one."""
    model_id = ws.registry.get_alias(alias)
    record = ws.registry.find_model(model_id) if model_id else None
    if record is None or record.status != "reward":
        raise ReverieError(f"align.grpo.rewards lists reward_model but the alias {alias!r} names no reward model: "
                           f"train one with `reverie rm train --alias {alias}` (or drop reward_model)")
    return record


def reward_functions(ws: Workspace, names: list[str], alias: str) -> tuple[list[RewardFunction], ModelRecord | None]:
    """The configured rewards, and the reward model among them (loaded from the registry alias)."""
    from reverie.engines.reward_model import load_reward_scorer

    functions: list[RewardFunction] = []
    record = None
    for name in names:
        if name == "reward_model":
            record = policy_reward_model(ws, alias)
            functions.append(reward_model(load_reward_scorer(ws, record)))
        else:
            functions.append(VERIFIABLE[name])
    return functions, record


@register(DREAM, "grpo")
class GroupRelativePolicy:
    name: str

    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData:
        settings = ctx.workspace.config.align.grpo
        prompts, quarantined = configured_prompts(ctx)
        contamination = contamination_index(ctx.workspace)
        clean = []
        for prompt in prompts:
            if (item := contamination.leak(f"{prompt.prompt}\n{prompt.answer or ''}")) is not None:
                quarantined.append(Rejected(origin="align.grpo.prompts", step="contamination",
                                            reason=f"overlaps evaluation item {item}", row=prompt.model_dump()))
            else:
                clean.append(prompt)
        random.Random(ctx.inputs.draw_seed + settings.seed).shuffle(clean)
        chosen = clean[: settings.max_prompts]
        metrics = {"dream_prompts": float(len(chosen)), "dream_prompts_quarantined": float(len(quarantined))}
        return DreamData(f"grpo prompts from {settings.prompts}", [], metrics, quarantined, prompts=chosen)

    def train(self, ctx: PhaseContext, loaded: LoadedModel, candidate: ModelRecord, data: DreamData) -> Trained:
        settings = ctx.workspace.config.align.grpo
        rewards, record = reward_functions(ctx.workspace, settings.rewards, settings.reward_alias)
        folder = ctx.workspace.state / "dream-runs" / ctx.cycle.id / self.name
        prepare_policy(ctx, loaded, candidate, settings.full, settings.seed, folder / "policy")
        run = train_grpo(loaded.model, loaded.tokenizer, data.prompts, rewards, settings, folder / "trainer",
                         f"dream: {settings.algorithm.upper()}")
        return Trained(run.metrics, run.steps, record.id if record else None)
