"""Frozen CNN features: image vectors, region proposals and region vectors, streamed to Parquet."""
