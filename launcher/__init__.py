"""``make run``: both servers in one process on the embedded default, with demo workers."""
