"""Training runs: the loop, the run folder and its safety, checkpoints, tracking during training, and
multi-stage procedures (IMP, eCNN)."""
