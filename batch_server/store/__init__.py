"""Batch stores: batches, essays, runs and their progress, in memory or in PostgreSQL."""
