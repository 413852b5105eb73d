"""The README's embedding example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from trio_agent.transports import ServerLimits

README = Path(__file__).resolve().parent.parent / "README.md"
PROTOCOL = README.parent / "docs" / "protocol.md"


@pytest.mark.timeout(60)
def test_the_embedding_example_runs(tmp_path: Path) -> None:
    match = re.search(r"## Embedding\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md has no embedding example"
    example = tmp_path / "example.py"
    example.write_text(match.group(1))
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=45, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 user_input"
    assert lines[-2].endswith(" done")
    assert lines[-1].startswith("done ")


@pytest.mark.parametrize("doc", [README, PROTOCOL], ids=lambda p: p.name)
def test_every_limit_and_its_flag_are_documented(doc: Path) -> None:
    text = doc.read_text()
    for field in attrs.fields(ServerLimits):
        flag = "--" + field.name.replace("_", "-")
        assert f"`{field.name}`" in text, f"{doc.name} does not name the limit {field.name}"
        assert re.search(rf"`{flag} ", text), f"{doc.name} does not give the flag {flag}"
