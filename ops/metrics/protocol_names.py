"""The retrieval protocols by name, importable without the evaluator (and torch)."""

PROTOCOLS = ("1k", "5k", "5fold_1k", "paper_1k", "all")
