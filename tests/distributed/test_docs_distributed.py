"""The script in docs/distributed.md runs on 2 ranks (and learns what it says it learns)."""
import re
from pathlib import Path

from mpi_helpers import ok, run_mpi

DOC = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"


def test_the_documented_script_runs_on_two_ranks(tmp_path):
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", DOC.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) == 1 and "DistributedDataParallel" in blocks[0]
    script = tmp_path / "doc_example.py"
    script.write_text(blocks[0])
    out = ok(run_mpi(2, script)[0])
    assert out.count("learned") == 1 and "rank 0 of 2" in out, out
