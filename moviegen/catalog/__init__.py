"""Catalog stage: the Parquet schema, reading and writing catalogs, and the row checks."""
