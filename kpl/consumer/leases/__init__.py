"""Lease stores behind one compare-and-set protocol: memory, sqlite, dynamodb."""
