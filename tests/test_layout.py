"""The package's shape: no module over 500 lines, no function over 120, no import cycle between files
(tools/check_sizes.py, also run by `make lint`)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_sizes", REPO / "tools" / "check_sizes.py")
check_sizes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_sizes)


def test_no_module_or_function_over_the_limits():
    found = check_sizes.oversized(REPO / "workbench")
    assert not found, "split these:\n" + "\n".join(found)


def test_no_import_cycle_between_the_package_files():
    cycles = check_sizes.import_cycles(REPO / "workbench")
    assert not cycles, "import cycles:\n" + "\n".join(", ".join(c) for c in cycles)


def test_no_family_name_is_tested_outside_the_families(tmp_path):
    assert check_sizes.family_name_tests(REPO / "workbench") == []
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "engine.py": "def f(family):\n    return family == 'ssd' or family in ('yolo',)\n",
        "families/__init__.py": "def g(name):\n    return name == 'yolo'\n",
    })  # fmt: skip
    found = check_sizes.family_name_tests(pkg)  # both tests of engine.py, none of families/
    assert len(found) == 2 and all("pkg/engine.py:2:" in line for line in found)


def test_only_the_plan_and_the_families_call_the_resolvers(tmp_path):
    assert check_sizes.resolver_uses(REPO / "workbench") == []
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "plan.py": "from pkg.families import family_of\n\ndef p(m):\n    return family_of(m)\n",
        "families/__init__.py": "def family_of(m):\n    return m\n",
        "cli/export.py": "def run(m):\n    from pkg.families import family_of as fam\n    return fam(m)\n",
        "jobs.py": "import pkg.locations as loc\n\ndef j(m):\n    return loc.resolve_weights(m)\n",
        "config.py": "from pkg.recipe_names import parse_recipes\n",
        "steps.py": "from pkg.recipe_names import parse_recipes\n",
    })  # fmt: skip
    found = check_sizes.resolver_uses(pkg)  # the CLI's import, the jobs' call, the steps' import
    assert [line.split(": uses ")[0].split("pkg/")[1] for line in found] == [
        "cli/export.py:2", "jobs.py:4", "steps.py:1"
    ]  # fmt: skip


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_cycles_count_function_level_imports_and_package_inits(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "leaf.py": "import os\n",
        "a.py": "from pkg import leaf\n\ndef f():\n    from pkg.b import g\n",
        "b.py": "from . import a\n\ndef g():\n    pass\n",
        "sub/__init__.py": "from pkg.sub.x import y\n",
        "sub/x.py": "from pkg.sub import helpers\n\ny = 1\n",
        "sub/helpers.py": "",
    })  # fmt: skip
    assert check_sizes.import_cycles(pkg) == [
        ["pkg/a.py", "pkg/b.py"],
        ["pkg/sub/__init__.py", "pkg/sub/x.py"],  # `from pkg.sub import helpers` runs pkg/sub/__init__.py
    ]


def test_sizes_name_each_long_module_and_function(tmp_path):
    long_function = "def long():\n" + "    x = 1\n" * 120  # 121 lines
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "ok.py": "def short():\n" + "    x = 1\n" * 119,  # 120 lines: at the limit
        "big.py": long_function + "\n" * 380,  # 501 lines
    })  # fmt: skip
    assert check_sizes.oversized(pkg) == [
        "pkg/big.py: 501 lines (limit 500)",
        "pkg/big.py:1: function long is 121 lines (limit 120)",
    ]


@pytest.mark.parametrize("cycle", [False, True])
def test_command_exit_status(tmp_path, cycle):
    pkg = _package(
        tmp_path, {"__init__.py": "", "a.py": "import pkg.b\n" if cycle else "", "b.py": "import pkg.a\n"}
    )
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "check_sizes.py"), str(pkg)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == (1 if cycle else 0), proc.stdout + proc.stderr
    assert ("import cycle: pkg/a.py, pkg/b.py" in proc.stdout) == cycle
