"""Data: text corpora for the char-RNN (and image loaders for the GANs)."""

from jaxgen.data.text import (  # noqa: F401
    CharBatches,
    Vocab,
    builtin_corpus,
    load_corpus,
    split_corpus,
)
