from django.urls import path

from queues import api

app_name = "queues"

# Purge and stats (queues/<name>/purge, /stats) are served by jobs: see jobs/urls.py.
urlpatterns = [
    path("queues", api.QueueListApi.as_view(), name="list"),
    path("queues/<str:name>", api.QueueDetailApi.as_view(), name="detail"),
    path("queues/<str:name>/pause", api.QueuePauseApi.as_view(), name="pause"),
    path("queues/<str:name>/resume", api.QueueResumeApi.as_view(), name="resume"),
]
