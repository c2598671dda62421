"""moviegen: turn a Parquet campaign catalog into safe, labelled, per-channel AI videos.

The library layer: plain typed functions and small classes, no Prefect. Flows in ``flows/``
compose these stages; ``moviegen.run`` runs the same stages in a plain loop.
"""

__version__ = "0.1.0"
