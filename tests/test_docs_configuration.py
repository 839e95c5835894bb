"""Every environment variable settings.py reads is documented in docs/configuration.md."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_variable_is_documented():
    settings = (ROOT / "taskforge" / "settings.py").read_text()
    read = set(re.findall(r'env_[a-z]+\(\s*"([A-Z][A-Z0-9_]+)"', settings))
    assert "DATABASE_URL" in read and len(read) > 15
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert not sorted(name for name in read if f"`{name}`" not in documented)
