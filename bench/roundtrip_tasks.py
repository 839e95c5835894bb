"""The task bench/django_roundtrip.py enqueues (module level: the worker imports it by path)."""

from django_tasks import task


@task()
def add(a, b):
    return a + b
