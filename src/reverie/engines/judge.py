"""A judge model as grader, with the yes/no protocol of the SEAL paper's grader, on any local model.

The judge sees the question, the gold answer and the prediction; the verdict is whichever of "yes" and "no"
(either capitalisation) its reply is more likely to be, by the log-probability of the whole word. No
sampling, no parsing of free text, and words split into several tokens are handled.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.engines.prompts import user_prompt_ids

JUDGE_PROMPT = (
    "You are grading a student's answer to a question against the correct answer. The student's answer is "
    "correct if it gives the same fact, even in other words or with extra detail.\n\n"
    "Question: {question}\nCorrect answer: {gold}\nStudent's answer: {prediction}\n\n"
    "Is the student's answer correct? Reply with yes or no."
)


VERDICT_WORDS = {True: ("yes", "Yes"), False: ("no", "No")}


class JudgeGrader:
    """Callable grader: [(question, gold, prediction)] -> [correct?]."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.spellings = {verdict: [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
                          for verdict, words in VERDICT_WORDS.items()}

    def __call__(self, items: list[tuple[str, str, str]]) -> list[bool]:
        prompts = [user_prompt_ids(self.tokenizer, JUDGE_PROMPT.format(question=q, gold=g, prediction=p))
                   for q, g, p in items]
        rows = [(prompt, reply) for prompt in prompts for replies in self.spellings.values() for reply in replies]
        scores = torch.tensor(self._reply_logprobs(rows)).view(len(prompts), 2, -1)
        yes, no = scores.logsumexp(dim=2).unbind(dim=1)
        return (yes > no).tolist()

    @torch.inference_mode()
    def _reply_logprobs(self, rows: list[tuple[list[int], list[int]]]) -> list[float]:
        """log P(reply | prompt) for each (prompt, reply), in left-padded batches."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = [prompt + reply for prompt, reply in rows[start : start + self.batch_size]]
            width = max(len(ids) for ids in chunk)
            ids = torch.tensor([[pad] * (width - len(row)) + row for row in chunk])
            mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in chunk])
            logprobs = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
            picked = logprobs.gather(2, ids[:, 1:, None])[..., 0]
            for row, (_, reply) in zip(picked, rows[start : start + self.batch_size]):
                out.append(float(row[-len(reply):].sum()))
        return out
