"""Training runs: the loop, the run folder and its safety (files, metrics.jsonl, lock, resume, signals, errors),
checkpoints, tracking during training, and multi-stage procedures (IMP, eCNN, stability, NTK alignment)."""
