"""docs/api.md must work verbatim: run its bash blocks, in order, against a live server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.django_db(transaction=True)
def test_every_command_of_the_api_walkthrough_works(live_server):
    blocks = bash_blocks()
    assert len(blocks) == 10
    script = "set -euo pipefail\n" + "\n".join(blocks)
    run = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "BASE": live_server.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("project ")
    assert lines[1].startswith("key tf_")
    assert lines[2] == "('emails', 7)"
    assert lines[3].startswith("job ")
    assert lines[4] == "('pending', 'emails', 'emails.send_welcome', 0)"
    assert "('images.publish', 'blocked')" in lines[5]
    assert lines[6] == "(2, True)"
    assert lines[7] == "1"
    assert lines[8].startswith("('validation_error', 'priority")
