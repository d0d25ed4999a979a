"""Importing gymnax without its renderers' start-up cost.

`import gymnax` imports every environment module; Pong's imports seaborn (with scipy.stats) and
five of them import matplotlib.pyplot, for their `render` only: about 1.4 s of every command's
start-up on a CPU (seaborn 0.9 s, pyplot 0.4 s, `python -X importtime`). `import_gymnax()` lets
those modules bind stand-ins that import the real module the first time one of its attributes is
used (rendering still works); everyone else importing these packages gets the real ones (the run
driver imports pyplot in a thread while the first program runs).
`ppo_jax.envs` imports gymnax from here (`from ppo_jax.envs.deferred import gymnax`) before any
other module of the package imports it.
"""

from __future__ import annotations

import importlib
import sys
import types

DEFERRED = ("seaborn", "matplotlib", "matplotlib.pyplot", "matplotlib.colors")


class DeferredModule(types.ModuleType):
    """A module object that imports `name` on first attribute access and forwards to it."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:  # still standing in (the import machinery asks for __path__)
            raise AttributeError(attr)
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
    for name in placed:  # `import a.b as c` and `from a import b` read b as an attribute of a
        parent, _, child = name.rpartition(".")
        if parent in placed:
            setattr(sys.modules[parent], child, sys.modules[name])
    try:
        return importlib.import_module("gymnax")
    finally:
        for name in placed:
            if isinstance(sys.modules.get(name), DeferredModule):
                del sys.modules[name]


gymnax = import_gymnax()
