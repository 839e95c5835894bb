"""Settings of the sample project: no database, the TaskForge Tasks backend."""

import os

SECRET_KEY = "sample-project-only"
DEBUG = False
USE_TZ = True
DATABASES: dict = {}
try:
    import django.tasks  # noqa: F401 (Django 6: built in)

    INSTALLED_APPS: list[str] = []
except ImportError:
    INSTALLED_APPS = ["django_tasks"]

TASKS = {
    "default": {
        "BACKEND": "taskforge_client.django.TaskForgeBackend",
        "QUEUES": ["default", "once"],
        "OPTIONS": {
            "url": os.environ["TASKFORGE_URL"],
            "api_key": os.environ["TASKFORGE_API_KEY"],
            "timeout": 10,
        },
    }
}
