"""Packaging: how `pip install -e .` makes `import ppo_jax` find the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_puts_the_project_root_on_sys_path():
    # setuptools' editable install writes the root into a .pth (a sys.path entry) only when
    # package-dir maps "" alone and every package sits where that entry finds it; otherwise it
    # installs an import hook that runs after sys.path, and a folder named ppo_jax in the current
    # directory (a clone's own folder) wins as a namespace package.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "."}
    assert (ROOT / setuptools["package-dir"][""] / "ppo_jax" / "__init__.py").is_file()


@pytest.mark.skipif(
    not os.environ.get("PPO_JAX_INSTALL_TEST"), reason="installs the package (set PPO_JAX_INSTALL_TEST=1)"
)
def test_a_clone_named_ppo_jax_imports_the_package_from_its_parent(tmp_path):
    clone = tmp_path / "ppo_jax"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", "docs", "tests", "scripts", "*.pyc"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", tmp_path / "venv"], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", clone], check=True, timeout=600)
    code = "import ppo_jax; print(ppo_jax.__file__, hasattr(ppo_jax, 'default_config'))"
    done = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(clone / "ppo_jax" / "__init__.py"), "True"], done.stdout
