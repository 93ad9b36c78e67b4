"""jaxgen: pure-function recurrent networks and GANs in JAX."""

__version__ = "0.1.0"
