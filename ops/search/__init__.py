"""Searching a dataset with its champion embedding network: the vector index, query encoding,
search and the rendering of results."""
