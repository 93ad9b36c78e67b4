"""Models: ``init(key, ...) -> params`` and pure ``apply`` functions."""
