"""Judge models with the yes/no protocol of the SEAL paper's grader, on any local model.

The verdict is whichever of "yes" and "no" (either capitalisation) the judge's reply is more likely to be, by
the log-probability of the whole word. No sampling, no parsing of free text, and words split into several
tokens are handled.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.engines.prompts import user_prompt_ids
from reverie.engines.scoring import continuation_logprobs

GRADER_PROMPT = (
    "You are grading a student's answer to a question against the correct answer. The student's answer is "
    "correct if it gives the same fact, even in other words or with extra detail.\n\n"
    "Question: {question}\nCorrect answer: {gold}\nStudent's answer: {prediction}\n\n"
    "Is the student's answer correct? Reply with yes or no."
)
VERDICT_WORDS = {True: ("yes", "Yes"), False: ("no", "No")}


class YesNoJudge:
    """Answers yes/no questions by comparing the likelihood of the two words."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.spellings = {verdict: [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
                          for verdict, words in VERDICT_WORDS.items()}

    def verdicts(self, questions: list[str]) -> list[bool]:
        prompts = [user_prompt_ids(self.tokenizer, q) for q in questions]
        rows = [(prompt, reply) for prompt in prompts for replies in self.spellings.values() for reply in replies]
        scores = continuation_logprobs(self.model, self.tokenizer, rows, self.batch_size)
        yes, no = torch.tensor(scores).view(len(prompts), 2, -1).logsumexp(dim=2).unbind(dim=1)
        return (yes > no).tolist()


class JudgeGrader(YesNoJudge):
    """Callable grader: [(question, gold, prediction)] -> [correct?]."""

    def __call__(self, items: list[tuple[str, str, str]]) -> list[bool]:
        return self.verdicts([GRADER_PROMPT.format(question=q, gold=g, prediction=p) for q, g, p in items])
