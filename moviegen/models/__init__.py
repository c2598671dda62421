"""Model registry, the tiny offline model and pipeline loading."""
