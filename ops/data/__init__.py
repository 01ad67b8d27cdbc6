"""Data: every way a dataset enters the pipeline (downloads, archives, loaders, the synthetic
default, the registry) and the parsed-table contract they all return."""
