"""Background jobs: the runner, and one module per job kind."""
