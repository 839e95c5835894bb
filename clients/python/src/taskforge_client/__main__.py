"""``python -m taskforge_client`` is ``taskforge-worker``."""

from taskforge_client.cli import main

raise SystemExit(main())
