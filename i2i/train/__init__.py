"""The single training loop shared by every mode, with checkpoints, logging and DDP."""
