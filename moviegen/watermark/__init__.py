"""Watermark stage: RivaGAN graphs, payloads, embedding, read-back, placement and the master marking."""
