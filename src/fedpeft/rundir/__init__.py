"""The run directory: metrics, checkpoints and the rules that keep a user's runs
intact (one writer at a time, nothing overwritten unless asked)."""
