"""Seeing a run: loggers (console, JSONL, TensorBoard, W&B), per-step metrics, plots, rollout
dumps, and the collapse guards that stop a run."""
