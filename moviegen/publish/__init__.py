"""Publish stage: the manifest's view of what is published, publish intents and adoption, retired paths."""
