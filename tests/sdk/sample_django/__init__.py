"""A tiny Django project whose tasks run on TaskForge (tests/sdk/test_django_backend.py).

It is run in subprocesses with ``DJANGO_SETTINGS_MODULE=sample_django.settings`` and
``tests/sdk`` on PYTHONPATH: ``python -m sample_django.enqueue`` enqueues tasks and prints their
results; ``taskforge-worker taskforge_client.django_worker`` runs them.
"""
