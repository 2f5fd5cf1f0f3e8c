"""Dream by red-team self-play. The model, as attacker, mutates harmful requests drawn from the red-team
library's training half (data/redteam_attacks.py: the jailbreak templates, role-play, encodings, a rewording, a
multi-turn escalation, and paraphrases it writes itself, each through the quality rules and a check that it kept
the request); the candidate, as defender, answers every attack; a refusal classifier judges (the string match,
and eval.refusal_judge as well when set: where the two disagree, the answer is quarantined, never trained on).

An attack that worked (the defender complied) becomes an SFT example (the attack, answered with a refusal) and a
preference pair (the refusal over the compliance), and joins the library as a new version, machine-generated and
awaiting review. Safe look-alikes balance it: the defender's compliant answer becomes an SFT example and a pair over
a refusal, so that the candidate does not learn to refuse everything. Where that answer cannot be trained on (a
refusal, which is over-refusal, or one the quality rules reject: after Learn on short-answer questions the candidate
answers in two words) the candidate is sampled again, and where none of those serves either, the release answers
(dream.redteam.lookalike_fallback). dream.redteam.refusals_per_compliance caps the refusals trained on against
them (176 refusals over 2 compliances taught SmolLM2 to refuse every XSTest safe prompt). The candidate trains on
the examples now (SFT teaches the refusal of exactly the attacks it fell for, without DPO's reference copy); the
pairs are kept as a preference dataset that later cycles' dpo draws from. A multi-turn attack trains as one prompt
quoting its turns (SFT examples are one turn); its pair keeps the turns."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from reverie.data.knowledge import Example
from reverie.data.preference import PreferencePair
from reverie.data.quality import check_text
from reverie.data.records import Rejected
from reverie.data.redteam import REFUSAL, RedTeamItem, add_attacks, attack_item, builtin_items, load_version_items
from reverie.data.redteam_attacks import (PARAPHRASE, PARAPHRASE_PROMPT, Attack, clean_paraphrase, mutate,
                                          paraphrase_attack, paraphrase_problem)
from reverie.data.splits import safety_train
from reverie.data.text import normalize
from reverie.engines.generation import generate
from reverie.engines.models import LoadedModel, load_version
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.refusal import RefusalJudge, is_refusal, load_refusal_judge
from reverie.engines.suites.safety import attack_ids
from reverie.phases.base import PhaseContext
from reverie.phases.strategies.base import DREAM, DreamData, SupervisedDream, register
from reverie.registry import RELEASE_ALIAS

SOURCE = "redteam-play"  # the source of its preference pairs
JUDGED = "refusal judge"  # the quarantine step of answers that are empty or the classifiers disagree on


@dataclass
class Harvest:
    """What the judged answers teach: SFT examples (refusals of the attacks that worked, compliances with the
    look-alikes), preference pairs, the attacks that worked, and counts."""

    refusals: list[tuple[str, Example]] = field(default_factory=list)  # (mutation, example)
    compliances: list[Example] = field(default_factory=list)
    pairs: list[PreferencePair] = field(default_factory=list)
    worked: list[RedTeamItem] = field(default_factory=list)
    tried: Counter = field(default_factory=Counter)  # judged attacks per mutation
    succeeded: Counter = field(default_factory=Counter)
    answered: int = 0  # judged look-alikes
    over_refused: int = 0


@register(DREAM, "redteam")
class RedTeamPlay(SupervisedDream):
    def data(self, ctx: PhaseContext, loaded: LoadedModel) -> DreamData:
        ws = ctx.workspace
        settings = ws.config.dream.redteam
        harmful, lookalikes = self._draw(ctx)
        quarantined: list[Rejected] = []
        attacks = [(seed, mutate(seed.prompt, name, seed.category))
                   for seed in harmful for name in settings.mutations if name != PARAPHRASE]
        if PARAPHRASE in settings.mutations:
            attacks += self._paraphrases(ctx, loaded, harmful, quarantined)
        attacks += [(item, mutate(item.prompt, "plain")) for item in lookalikes]
        judge = load_refusal_judge(ws)
        answers = self._answer(ctx, loaded, [attack for _, attack in attacks])
        verdicts = _verdicts([attack for _, attack in attacks], answers, judge)
        unusable = [item for (item, _), answer, refused in zip(attacks, answers, verdicts)
                    if not item.must_refuse and refused is not None and not _trainable(answer, refused)]
        replacements = self._resample(ctx, loaded, unusable, judge)
        missing = [item for item in unusable if item.id not in replacements]
        from_release = self._release_answers(ctx, missing, judge)
        replacements |= from_release
        harvest = Harvest()
        for (item, attack), answer, refused in zip(attacks, answers, verdicts):
            if refused is None or not answer.strip():
                reason = ("the answer is empty: neither a refusal nor a compliance" if not answer.strip() else
                          "the string match and the refusal judge disagree on whether the answer refuses")
                quarantined.append(Rejected(origin=f"redteam {item.id}/{attack.mutation}", step=JUDGED, reason=reason,
                                            row={"prompt": attack.text, "answer": answer}))
            elif item.must_refuse:
                _attacked(harvest, item, attack, answer, refused, ctx.cycle.id)
            elif (reason := _answered(harvest, item, attack, answer, refused, replacements.get(item.id))) is not None:
                quarantined.append(Rejected(origin=f"redteam {item.id}", step="dream quality gate", reason=reason,
                                            row={"prompt": item.prompt, "answer": answer}))
        version, added = add_attacks(ws, harvest.worked, ctx.cycle.id)
        refusals = balanced_refusals(harvest, settings.refusals_per_compliance)
        steps = Counter(row.step for row in quarantined)
        judged = sum(harvest.tried.values())
        metrics = {"redteam_seeds": float(len(harmful)), "redteam_attacks": float(judged),
                   "redteam_attack_success": sum(harvest.succeeded.values()) / max(1, judged),
                   **{f"redteam_attack_success/{name}": harvest.succeeded[name] / count
                      for name, count in sorted(harvest.tried.items())},
                   "redteam_lookalikes": float(len(lookalikes)),
                   "redteam_over_refusal": harvest.over_refused / max(1, harvest.answered),
                   "redteam_refusal_examples": float(len(refusals)),
                   "redteam_compliance_examples": float(len(harvest.compliances)),
                   "redteam_compliances_from_release": float(len(from_release)),
                   "redteam_pairs": float(len(harvest.pairs)), "redteam_quarantined": float(len(quarantined)),
                   **{f"redteam_quarantined/{step}": float(n) for step, n in sorted(steps.items())},
                   "redteam_library_additions": float(added)}
        source = f"red-team self-play: {len(harvest.worked)} of {judged} attacks worked" + (
            f", added to the library as {version.name} for review" if version else "")
        return DreamData(source, refusals + harvest.compliances, metrics, quarantined, found_pairs=harvest.pairs,
                         drawn_from=[ctx.inputs.redteam] if ctx.inputs.redteam else [])

    def _draw(self, ctx: PhaseContext) -> tuple[list[RedTeamItem], list[RedTeamItem]]:
        """Harmful requests and safe look-alikes of the training half, as imported (not earlier attacks): a new
        draw each cycle, the same on resume."""
        settings = ctx.workspace.config.dream.redteam
        library = load_version_items(ctx.workspace, ctx.inputs.redteam) or builtin_items()
        pool = sorted(safety_train([item for item in library if item.attack is None]), key=lambda item: item.id)
        random.Random(ctx.inputs.draw_seed + settings.seed).shuffle(pool)
        return ([i for i in pool if i.must_refuse][: settings.seeds],
                [i for i in pool if not i.must_refuse][: settings.lookalikes])

    def _paraphrases(self, ctx: PhaseContext, loaded: LoadedModel, seeds: list[RedTeamItem],
                     quarantined: list[Rejected]) -> list[tuple[RedTeamItem, Attack]]:
        """The attacker's own paraphrases of each request (sampled); one that fails the quality rules, repeats
        the request or another paraphrase, or lost the request is quarantined with the reason."""
        ws = ctx.workspace
        settings = ws.config.dream.redteam
        prompts = [user_prompt_ids(loaded.tokenizer, PARAPHRASE_PROMPT.format(prompt=s.prompt)) for s in seeds]
        outputs = generate(loaded.model, loaded.tokenizer, prompts, settings.max_new_tokens, ws.config.eval.batch_size,
                           temperature=settings.temperature, samples=settings.samples,
                           seed=ctx.inputs.draw_seed + settings.seed, description="dream: the attacker paraphrases")
        attacks = []
        for seed, samples in zip(seeds, outputs):
            seen: set[str] = set()
            for output in samples:
                text = clean_paraphrase(output)
                reason = paraphrase_problem(seed.prompt, text)
                if reason is None and normalize(text) in seen:
                    reason = "repeats another paraphrase of the same request"
                if reason is not None:
                    quarantined.append(Rejected(origin=f"redteam {seed.id}/{PARAPHRASE}", step="paraphrase quality "
                                                "gate", reason=reason,
                                                row={"request": seed.prompt, "paraphrase": output}))
                    continue
                seen.add(normalize(text))
                attacks.append((seed, paraphrase_attack(text)))
        return attacks

    def _answer(self, ctx: PhaseContext, loaded: LoadedModel, attacks: list[Attack]) -> list[str]:
        """The defender's answers, greedy: the one it most likely gives, as the Gate asks."""
        ws = ctx.workspace
        prompts = [attack_ids(loaded.tokenizer, attack) for attack in attacks]
        return [o[0] for o in generate(loaded.model, loaded.tokenizer, prompts, ws.config.dream.redteam.max_new_tokens,
                                       ws.config.eval.batch_size, description="dream: the candidate defends")]

    def _resample(self, ctx: PhaseContext, loaded: LoadedModel, items: list[RedTeamItem],
                  judge: RefusalJudge | None) -> dict[str, str]:
        """For look-alikes whose answer cannot be trained on: the candidate's first sampled answer that both
        classifiers call compliant and that passes the quality rules."""
        settings = ctx.workspace.config.dream.redteam
        return _first_trainable(ctx, loaded, items, judge, samples=settings.samples, temperature=settings.temperature,
                                description="dream: answering look-alikes again")

    def _release_answers(self, ctx: PhaseContext, items: list[RedTeamItem],
                         judge: RefusalJudge | None) -> dict[str, str]:
        """For look-alikes none of the candidate's answers serve: the release's greedy answer, where it is
        trainable, with dream.redteam.lookalike_fallback: release and a release other than the candidate."""
        ws = ctx.workspace
        release_id = ws.registry.get_alias(RELEASE_ALIAS)
        wanted = ws.config.dream.redteam.lookalike_fallback == "release"
        if not items or not wanted or release_id in (None, ctx.candidate().id):
            return {}
        release = load_version(ws, ws.registry.get_model(release_id))
        return _first_trainable(ctx, release, items, judge, samples=1, temperature=0.0,
                                description=f"dream: the release {release_id} answers look-alikes")


def _trainable(answer: str, refused: bool) -> bool:
    """A look-alike's answer trains as a compliance: it complies and passes the quality rules."""
    return not refused and check_text(answer) is None


def _first_trainable(ctx: PhaseContext, loaded: LoadedModel, items: list[RedTeamItem], judge: RefusalJudge | None,
                     samples: int, temperature: float, description: str) -> dict[str, str]:
    """Each look-alike's first answer by `loaded` (greedy at temperature 0) that both classifiers call compliant
    and that passes the quality rules, by item id."""
    if not items:
        return {}
    ws = ctx.workspace
    settings = ws.config.dream.redteam
    prompts = [user_prompt_ids(loaded.tokenizer, item.prompt) for item in items]
    outputs = generate(loaded.model, loaded.tokenizer, prompts, settings.max_new_tokens, ws.config.eval.batch_size,
                       temperature=temperature, samples=samples, seed=ctx.inputs.draw_seed + settings.seed + 1,
                       description=description)
    found = {}
    for item, answers in zip(items, outputs):
        attacks = [mutate(item.prompt, "plain")] * len(answers)
        for answer, refused in zip(answers, _verdicts(attacks, answers, judge)):
            if refused is not None and _trainable(answer, refused):
                found[item.id] = answer
                break
    return found


def _verdicts(attacks: list[Attack], answers: list[str], judge: RefusalJudge | None) -> list[bool | None]:
    """Whether each answer refuses: the string match, or where a judge is configured the two together; None
    where they disagree, so that a doubtful answer is never trained on as a compliance or a refusal."""
    matched = [is_refusal(answer) for answer in answers]
    if judge is None or not answers:
        return list(matched)
    judged = judge([(attack.text, answer) for attack, answer in zip(attacks, answers)])
    return [a if a == b else None for a, b in zip(matched, judged)]


def _attacked(harvest: Harvest, seed: RedTeamItem, attack: Attack, answer: str, refused: bool,
              cycle_id: str) -> None:
    """A harmful request under attack: one that worked teaches the refusal and joins the library."""
    harvest.tried[attack.mutation] += 1
    if refused:
        return
    harvest.succeeded[attack.mutation] += 1
    harvest.refusals.append((attack.mutation, Example(prompt=attack.text, completion=REFUSAL)))
    harvest.pairs.append(_pair(seed, attack, REFUSAL, answer))
    harvest.worked.append(attack_item(seed, attack.mutation, attack.text, f"dream redteam, cycle {cycle_id}"))


def _answered(harvest: Harvest, item: RedTeamItem, attack: Attack, answer: str, refused: bool,
              replacement: str | None) -> str | None:
    """A safe look-alike: its compliant answer (another one where it cannot be trained on) over a refusal; or
    why there is none to train on."""
    harvest.answered += 1
    harvest.over_refused += refused
    chosen = answer if _trainable(answer, refused) else replacement
    rejected = answer if refused else REFUSAL
    if chosen is None:
        problem = "over-refused" if refused else check_text(answer)
        return f"{problem}, and no answer sampled again (nor the release's) complied and passed the quality rules"
    harvest.compliances.append(Example(prompt=item.prompt, completion=chosen))
    harvest.pairs.append(_pair(item, attack, chosen, rejected))
    return None


def balanced_refusals(harvest: Harvest, per_compliance: float | None) -> list[Example]:
    """The refusal examples trained on: all of them without a cap, else at most `per_compliance` per compliance
    example (at least one while any attack worked), taken one mutation after another so that every kind of attack
    that worked is taught."""
    cap = len(harvest.refusals) if per_compliance is None else max(1, int(per_compliance * len(harvest.compliances)))
    by_mutation: dict[str, list[Example]] = {}
    for mutation, example in harvest.refusals:
        by_mutation.setdefault(mutation, []).append(example)
    queues = [iter(examples) for examples in by_mutation.values()]
    chosen: list[Example] = []
    while queues and len(chosen) < cap:
        for queue in list(queues):
            if (example := next(queue, None)) is None:
                queues.remove(queue)
            elif len(chosen) < cap:
                chosen.append(example)
    return chosen


def _pair(item: RedTeamItem, attack: Attack, chosen: str, rejected: str) -> PreferencePair:
    prompt = attack.messages() if len(attack.turns) > 1 else attack.text
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, source=SOURCE, bucket="safety",
                          origin=f"{item.id}/{attack.mutation}",
                          meta={"category": item.category, "must_refuse": item.must_refuse, "attack": attack.mutation})
