"""BatchService: batches of essays, pipeline runs that advance step by step, live progress."""
