"""Settings of the Django project bench/django_roundtrip.py plays: no database, its tasks on
the TaskForge Tasks backend of the benchmark's server (TASKFORGE_URL, TASKFORGE_API_KEY)."""

import os

SECRET_KEY = "benchmark-only"
USE_TZ = True
DATABASES: dict = {}
INSTALLED_APPS = ["django_tasks"]
TASKS = {
    "default": {
        "BACKEND": "taskforge_client.django.TaskForgeBackend",
        "OPTIONS": {
            "url": os.environ.get("TASKFORGE_URL", ""),
            "api_key": os.environ.get("TASKFORGE_API_KEY", ""),
        },
    }
}
