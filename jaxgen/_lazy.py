"""Lazy submodules for the product packages: ``from jaxgen import gan; gan.models.build(...)``
imports ``jaxgen.gan.models`` on first use, so importing a package costs nothing it does not use."""

from __future__ import annotations

import importlib
from typing import Callable


def submodules(package: str, names: tuple[str, ...]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``package.NAME`` for each of ``names`` on first
    access."""

    def __getattr__(name: str):
        if name in names:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
