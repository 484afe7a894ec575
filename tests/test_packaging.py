"""pyproject.toml lists packages explicitly (``kernels/`` ships as ``minitrans.kernels``), so a new
subpackage must be added by hand; a plain ``pip install .`` silently leaves out one that is not."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _listed_packages() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^packages\s*=\s*\[(.*?)\]", text, re.S | re.M)
    assert block, "pyproject.toml has no [tool.setuptools] packages list"
    return set(re.findall(r'"([\w.]+)"', block.group(1)))


def _package_dirs() -> set[str]:
    found = set()
    for top, name in (("minitrans", "minitrans"), ("kernels", "minitrans.kernels")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_is_listed_in_pyproject():
    missing = sorted(_package_dirs() - _listed_packages())
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_no_listed_package_is_missing_on_disk():
    stale = sorted(_listed_packages() - _package_dirs())
    assert not stale, f"pyproject.toml lists packages that do not exist: {stale}"
