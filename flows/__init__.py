"""Prefect flows (and the CLI that starts them): compose tasks, decide fan-out, gather, report."""
