"""Serving: resolve the gated ``champion`` to an exact version, load it with the training-time
feature code (the model as a dependency), and precompute: score open partitions into the
spec's predictions table and its ``_current`` view atomically, with ``fd_scoring_runs``."""
