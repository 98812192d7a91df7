"""A non-editable install works without the checkout: built as a wheel, run from elsewhere.

The wheel is built from a copy of the project (so the build leaves nothing in the
checkout) and installed into a throw-away folder that comes first on PYTHONPATH; the
commands then run from a folder outside both. About 10 s on two CPU cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "results", "__pycache__", "*.egg-info", "build", ".*_cache", "tests"
)


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, base / "src", ignore=IGNORE)
    pip = [sys.executable, "-m", "pip"]
    quiet = ["--quiet", "--no-deps", "--no-index"]
    built = run(
        [*pip, "wheel", *quiet, "--no-build-isolation", "-w", str(base / "w"), "./src"], cwd=base
    )
    if built.returncode != 0:
        pytest.fail(built.stderr)
    wheel = next((base / "w").glob("nsnet_bench-*.whl"))
    target = base / "site"
    done = run([*pip, "install", *quiet, "--target", str(target), str(wheel)])
    if done.returncode != 0:
        pytest.fail(done.stderr)
    return target


def in_install(target: Path, code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "BENCH_REGISTRY"}}
    env["PYTHONPATH"] = str(target)
    return run([sys.executable, "-c", code], cwd=tmp_path, env=env)


def test_wheel_finds_its_catalogue_and_table_specs(installed: Path, tmp_path: Path) -> None:
    code = (
        "import bench, bench.catalogue as c, bench.table_spec as t\n"
        "print(bench.__file__); print(c.catalogue_path()); print(t.SPEC_DIR)\n"
        "print(sorted(t.available_specs())[:2])\n"
        "from bench.cli import main\n"
        "main(['list', 'detectors'])\n"
    )
    result = in_install(installed, code, tmp_path)
    assert result.returncode == 0, result.stderr
    module, catalogue, specs, names, *listing = result.stdout.splitlines()
    for path in (module, catalogue, specs):
        assert Path(path).is_relative_to(installed), path  # not the checkout
    assert (
        Path(catalogue).is_file() and names == "['table1_genimage', 'table2_universalfakedetect']"
    )
    assert any(line.strip().startswith("nsnet ") for line in listing)
    assert any(line.strip().startswith("univfd ") for line in listing)


def test_wheel_runs_bench_table_up_to_the_data(installed: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom bench.cli import main\n"
        "sys.exit(main(['table', 'table2_universalfakedetect', '--preset', 'paper']))\n"
    )
    result = in_install(installed, code, tmp_path)
    assert result.returncode == 2 and "needs --data-root" in result.stderr, result.stderr
