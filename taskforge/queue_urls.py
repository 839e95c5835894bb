"""Every queue route, under one namespace (``queues:``).

The queues app serves what concerns the queue row alone (queues/api.py); what reaches its jobs
or workers (delete, purge, stats) is served from here (taskforge/queue_api.py), so this module
sits in the one package that may import both.
"""

from django.urls import path

from queues import api
from taskforge import queue_api

app_name = "queues"

urlpatterns = [
    path("queues", api.QueueListApi.as_view(), name="list"),
    path("queues/<str:name>", queue_api.QueueDetailApi.as_view(), name="detail"),
    path("queues/<str:name>/pause", api.QueuePauseApi.as_view(), name="pause"),
    path("queues/<str:name>/resume", api.QueueResumeApi.as_view(), name="resume"),
    path("queues/<str:name>/purge", queue_api.QueuePurgeApi.as_view(), name="purge"),
    path("queues/<str:name>/stats", queue_api.QueueStatsApi.as_view(), name="stats"),
]
