"""Importing gymnax without its renderers' start-up cost.

`import gymnax` imports every environment module, and Pong's imports seaborn (with scipy.stats)
for its `render` only: about 1 s of every command's start-up on a CPU. `import_gymnax()` lets
those modules bind a stand-in that imports the real package the first time one of its attributes
is used (rendering Pong still works); everyone else importing seaborn gets the real one.
`ppo_jax.envs` imports gymnax from here (`from ppo_jax.envs.deferred import gymnax`) before any
other module of the package imports it.
"""

from __future__ import annotations

import importlib
import sys
import types

DEFERRED = ("seaborn",)


class DeferredModule(types.ModuleType):
    """A module object that imports `name` on first attribute access and forwards to it."""

    def __getattr__(self, attr: str):
        real = importlib.import_module(self.__name__)
        self.__dict__.update(vars(real))
        return getattr(real, attr)


def import_gymnax() -> types.ModuleType:
    """`import gymnax`, with the packages in DEFERRED bound as `DeferredModule`s meanwhile."""
    if "gymnax" in sys.modules:
        return sys.modules["gymnax"]
    placed = [name for name in DEFERRED if name not in sys.modules]
    for name in placed:
        sys.modules[name] = DeferredModule(name)
    try:
        return importlib.import_module("gymnax")
    finally:
        for name in placed:
            if isinstance(sys.modules.get(name), DeferredModule):
                del sys.modules[name]


gymnax = import_gymnax()
