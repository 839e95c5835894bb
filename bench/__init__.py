"""Benchmarks (not tests). Run from the repository root as modules: python -m bench.engine.

Importing this package configures Django for a database of the benchmarks' own
(TASKFORGE_DB_NAME, default taskforge_bench), so `import bench` comes before any app import.
"""

import os

os.environ.setdefault("TASKFORGE_DB_NAME", "taskforge_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskforge.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()
