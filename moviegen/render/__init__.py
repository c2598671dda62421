"""Render stage: the rendition spec and its key, the filter graph, audio and loudness, the encode, overlays."""
