"""TRL's side of bench/vs_trl.py: TRL's GRPOTrainer at the settings vs_trl.py wrote to a JSON file.

    <trl venv>/bin/python bench/trl_grpo.py SETTINGS.json

Runs in the throwaway TRL environment (trl, the same torch and transformers as the project), not
in the project's: it imports only `nemo_grpo.rewards` (standard library only) from this checkout,
so the reward is ours, called as a plain function. Writes one JSON line per optimizer step to
`settings["out"]`: the step's wall time (on_step_begin to on_step_end) and the time spent in
generation (`_generate`: HF generate), in the reward and in the whole rollout
(`_generate_and_score_completions`); the rest of the step is training.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(settings_path: str) -> None:
    s = json.loads(Path(settings_path).read_text())
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nemo_grpo.rewards.config import RewardConfig
    from nemo_grpo.rewards.math_reward import grade_batch

    tokenizer = AutoTokenizer.from_pretrained(s["model"])
    model = AutoModelForCausalLM.from_pretrained(s["model"], dtype=torch.float32)
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    reward_cfg = RewardConfig(**s["reward"])

    def reward(prompts, completions, completion_ids, answer, **_):
        """Ours: correctness + format term; a completion without EOS was cut off (TRL's own test)."""
        truncated = [not ids or ids[-1] not in ends for ids in completion_ids]
        return [g.reward for g in grade_batch(completions, answer, reward_cfg, truncated)]

    rows = [json.loads(line) for line in Path(s["data"]).read_text().splitlines()]
    out = Path(s["out"])

    class Timed(GRPOTrainer):
        seconds: dict[str, float] = {}

        @contextmanager
        def clock(self, name):
            start = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        def _generate(self, *args, **kwargs):
            with self.clock("generation"):
                return super()._generate(*args, **kwargs)

        def _calculate_rewards(self, *args, **kwargs):
            with self.clock("reward"):
                return super()._calculate_rewards(*args, **kwargs)

        def _generate_and_score_completions(self, *args, **kwargs):
            with self.clock("rollout"):
                return super()._generate_and_score_completions(*args, **kwargs)

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            Timed.seconds.clear()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s = time.perf_counter() - self.start
            t = Timed.seconds
            row = {"step": state.global_step, "step_s": step_s, "generation_s": t.get("generation", 0.0),
                   "reward_s": t.get("reward", 0.0), "train_s": step_s - t.get("rollout", 0.0)}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    config = GRPOConfig(
        output_dir=s["output_dir"], max_steps=s["steps"], seed=s["seed"], use_cpu=True,
        bf16=False, fp16=False, gradient_checkpointing=False,  # fp32 and no activation checkpointing, as ours
        per_device_train_batch_size=s["micro_batch"], gradient_accumulation_steps=s["accumulation"],
        num_generations=s["num_generations"], max_completion_length=s["max_new_tokens"],
        temperature=s["temperature"], top_p=s["top_p"], shuffle_dataset=False,  # the prompts in our loader's order
        learning_rate=s["lr"], lr_scheduler_type=s["scheduler"], weight_decay=s["weight_decay"],
        adam_beta1=s["betas"][0], adam_beta2=s["betas"][1], adam_epsilon=s["eps"], max_grad_norm=s["max_grad_norm"],
        beta=s["kl_coef"], epsilon=s["clip_low"], epsilon_high=s["clip_high"], loss_type="dapo",  # dapo: token-mean
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
    )
    trainer = Timed(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                    processing_class=tokenizer, callbacks=[StepTimes()])
    trainer.train()
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    print(f"TRL finished {trainer.state.global_step} steps; losses {losses}")


if __name__ == "__main__":
    main(sys.argv[1])
