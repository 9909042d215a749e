"""Training machinery shared by every recipe: loop, schedule, optimizer, checkpoints, logging, distributed."""
