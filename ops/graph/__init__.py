"""The neighborhood graph of a training split: how it is built and how it is stored."""
