"""Text features: word vectors, Fisher vectors and per-text feature files."""
