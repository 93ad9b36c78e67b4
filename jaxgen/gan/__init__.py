"""The GANs: ``models`` (FC GAN, DCGAN), ``step`` (state and the pure train step), ``sampling``
(generator parameters, recalibration, generation, loading a workdir), ``train`` (the recipe on
:mod:`jaxgen.training`), ``evaluate`` (``jaxgen eval``), ``config`` (defaults)."""

from jaxgen._lazy import submodules

__getattr__ = submodules(__name__, ("config", "evaluate", "models", "sampling", "step", "train"))
