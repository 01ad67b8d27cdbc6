"""Text features: tokenization, word vectors, Fisher vectors and per-text feature files."""
