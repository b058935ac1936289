"""The GRPO trainer: the loop (`loop.py`) and what it drives.

`setup.py` builds a run (data, device, Ray workers, checkpoints); `rollouts.py` generates and
grades one step's responses; `validation.py` scores the policy on held-out sets inside the loop;
`checkpointing.py` saves a step and resumes a run; `curriculum.py` chains runs into stages;
`config.py` holds the root `TrainConfig` that assembles every section. The math it calls is in
`nemo_grpo.algorithms` (pure functions).
"""
