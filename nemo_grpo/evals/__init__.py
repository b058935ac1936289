"""Evaluation: pass@k / avg@n / maj@n (`metrics`, pure) and the evaluation runner (`runner`).

`examples/run_eval.py` runs `nemo_grpo.evals.runner.run_evaluation`; the training loop's
validation (`nemo_grpo.trainer.validation`) uses the same sampling, grading and metrics.
"""

from nemo_grpo.evals.metrics import ProblemSamples, answer_key, majority_vote, pass_at_k, summarize

__all__ = ["ProblemSamples", "answer_key", "majority_vote", "pass_at_k", "summarize"]
