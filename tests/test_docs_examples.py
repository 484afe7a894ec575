"""The code in the docs runs, and the quotations in them still match the code they quote.

In README.md and docs/*.md, every ```python block is a program: the blocks of one file run in
order in one namespace, and carry their own asserts (docs/extending.md checks that gradcheck
passes and that a wrong backward is caught). A block fenced ```python excerpt=<path> quotes
<path>: each of its lines (apart from ``...``) must still appear in that file, so a doc that
drifts from the library fails here either way.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python(?:[ \t]+excerpt=(\S+))?[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[str | None, str]]:
    """(quoted file or None, code) for every python fence, in order."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


def test_extending_has_examples():
    blocks = [code for src, code in python_blocks((ROOT / "docs" / "extending.md").read_text("utf-8")) if not src]
    assert len(blocks) >= 2, "docs/extending.md should show a new op and a new layer"
    joined = "\n".join(blocks)
    for needle in ("Function", "save_for_backward", "gradcheck", "nn.Module", "Adam"):
        assert needle in joined, f"docs/extending.md examples no longer use {needle}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_runnable_blocks_run(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                     # a block that writes files writes them here
    ns: dict = {"__name__": f"docs_{doc.stem}"}
    for i, (quoted, src) in enumerate(python_blocks(doc.read_text(encoding="utf-8"))):
        if quoted:
            continue
        try:
            exec(compile(src, f"{doc.name}[block {i}]", "exec"), ns)
        except Exception as e:  # name the failing block, keep the traceback
            pytest.fail(f"{doc.name} python block {i} failed: {type(e).__name__}: {e}\n\n{src}")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_excerpts_match_their_files(doc):
    for quoted, src in python_blocks(doc.read_text(encoding="utf-8")):
        if not quoted:
            continue
        path = ROOT / quoted
        assert path.is_file(), f"{doc.name} quotes {quoted}, which does not exist"
        text = path.read_text(encoding="utf-8")
        for line in src.splitlines():
            code = line.strip()
            if code and code != "...":
                assert code in text, f"{doc.name}: the excerpt of {quoted} has a line the file no longer has: {code!r}"


def test_block_extractor_sees_every_fence():
    text = ("a\n```python\nx = 1\n```\nb\n```\nnot python\n```\n```python excerpt=kernels/reference.py\n"
            "    y = 2\n```\n```python\nassert x == 1\n```\n")
    assert python_blocks(text) == [(None, "x = 1\n"), ("kernels/reference.py", "    y = 2\n"),
                                   (None, "assert x == 1\n")]


def test_the_readme_tour_shows_a_real_gradient(tmp_path, monkeypatch):
    """The tour's first gradient must not be all zeros (a ReLU that is off everywhere teaches nothing)."""
    monkeypatch.chdir(tmp_path)                     # the tour saves a checkpoint
    ns: dict = {}
    code = next(src for q, src in python_blocks((ROOT / "README.md").read_text("utf-8")) if not q)
    exec(compile(code, "README.md[tour]", "exec"), ns)
    assert (ns["x"].grad.numpy() != 0).any()
