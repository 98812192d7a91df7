"""Packaging hook: a wheel carries the catalogue and the table specs inside ``bench/_data``.

The checkout keeps them where people look for them (registry.toml at the top,
benchmarks/tables and benchmarks/paper); a non-editable install (``pip install .``, a
wheel) has no checkout, so the build copies them into the package, where
``bench.catalogue`` and ``bench.table_spec`` fall back to them. Editable installs read the
checkout and copy nothing. Everything else is configured in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: (source in the checkout, destination below bench/_data/ in the wheel)
SHIPPED = [
    ("registry.toml", "registry.toml"),
    ("benchmarks/tables", "tables"),
    ("benchmarks/paper", "paper"),
]


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "bench" / "_data"
        for source, dest in SHIPPED:
            src, dst = HERE / source, target / dest
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildWithData})
