"""Executors plug in behind `worker.executors.base.Executor`."""
