"""The code in docs/extending.md runs: every ```python block, in order, in one namespace.

The blocks carry their own asserts (gradcheck passes, a wrong backward is caught, the
layer's loss falls), so a doc that drifts from the library fails here.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return _BLOCK.findall(text)


def test_extending_has_examples():
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "docs/extending.md should show a new op and a new layer"
    joined = "\n".join(blocks)
    for needle in ("Function", "save_for_backward", "gradcheck", "nn.Module", "Adam"):
        assert needle in joined, f"docs/extending.md examples no longer use {needle}"


def test_extending_examples_run():
    ns: dict = {"__name__": "docs_extending"}
    for i, src in enumerate(python_blocks(DOC.read_text(encoding="utf-8"))):
        try:
            exec(compile(src, f"{DOC.name}[block {i}]", "exec"), ns)
        except Exception as e:  # name the failing block, keep the traceback
            pytest.fail(f"docs/extending.md python block {i} failed: {type(e).__name__}: {e}\n\n{src}")


def test_block_extractor_sees_every_fence():
    text = "a\n```python\nx = 1\n```\nb\n```\nnot python\n```\n```python\nassert x == 1\n```\n"
    assert python_blocks(text) == ["x = 1\n", "assert x == 1\n"]
