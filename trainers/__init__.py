"""Self-play rollouts, ReST, SFT, evaluation, logging and the ``clarify`` CLI."""
