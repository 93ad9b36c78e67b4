"""The character-level LSTM: ``model`` (init, apply, loss), ``data`` (corpora, vocabulary,
batches), ``train`` (the recipe on :mod:`jaxgen.training`), ``sample`` (text generation),
``config`` (defaults)."""

from jaxgen._lazy import submodules

__getattr__ = submodules(__name__, ("config", "data", "model", "sample", "train"))
