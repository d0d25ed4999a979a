"""Start-up: what `import ppo_jax.envs` leaves out, and that the stand-ins still work.

gymnax's environment modules import seaborn and matplotlib.pyplot for rendering only;
`ppo_jax.envs.deferred` binds stand-ins while gymnax imports. Each case runs in a fresh
interpreter, where nothing has imported these packages yet.
"""

import subprocess
import sys

import pytest


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_env_import_leaves_renderer_packages_unimported():
    out = _python(
        "import sys, ppo_jax.envs, ppo_jax.runtime.driver\n"
        "print(sorted(m for m in ('seaborn', 'matplotlib', 'matplotlib.pyplot') if m in sys.modules))"
    )
    assert out == "[]"


def test_stand_ins_resolve_to_the_real_modules():
    out = _python(
        "import ppo_jax.envs\n"
        "from gymnax.environments.bsuite import catch\n"
        "from gymnax.environments.misc import pong\n"
        "import matplotlib.pyplot, matplotlib.colors\n"
        "print(catch.plt.figure is matplotlib.pyplot.figure, pong.colors.to_rgb('red'))"
    )
    assert out == "True (1.0, 0.0, 0.0)"


@pytest.mark.parametrize(("first", "binding"), [("matplotlib.pyplot", "catch.plt"), ("seaborn", "pong.sns")])
def test_packages_imported_before_gymnax_stay_real(first, binding):
    out = _python(
        f"import {first}, sys\n"
        "import ppo_jax.envs\n"
        "from gymnax.environments.bsuite import catch\n"
        "from gymnax.environments.misc import pong\n"
        f"print({binding} is sys.modules['{first}'])"
    )
    assert out == "True"
