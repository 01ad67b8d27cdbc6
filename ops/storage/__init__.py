"""Storage: atomic writes, where artifacts live, Parquet files, the DuckDB result store, read-only
SQL and training-run records."""
