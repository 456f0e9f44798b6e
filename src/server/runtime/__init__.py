"""How the process runs: settings, worker processes, health and metrics endpoints, file watching."""
