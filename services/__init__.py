"""The freshrec processes: thin wiring over `freshrec` (one sub-package per process)."""
