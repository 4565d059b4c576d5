"""The consumer's sans-IO decisions: lineage, leases, checkpoints, read pacing."""
