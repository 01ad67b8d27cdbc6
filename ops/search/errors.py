"""The one error a search reports to its user: a sentence naming what is wrong."""


class SearchError(ValueError):
    """A search that cannot be answered (no model or index, bad query, unreadable image)."""
