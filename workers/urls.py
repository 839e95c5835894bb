from django.urls import path

from workers import api

app_name = "workers"

urlpatterns = [
    path("workers", api.WorkerListApi.as_view(), name="list"),
    path("workers/<str:worker_id>", api.WorkerDetailApi.as_view(), name="detail"),
    path("workers/<str:worker_id>/heartbeat", api.WorkerHeartbeatApi.as_view(), name="heartbeat"),
    path("workers/<str:worker_id>/jobs", api.WorkerJobsApi.as_view(), name="jobs"),
    path("workers/<str:worker_id>/results", api.WorkerResultsApi.as_view(), name="results"),
    path("workers/<str:worker_id>/drain", api.WorkerDrainApi.as_view(), name="drain"),
    path("workers/<str:worker_id>/queues", api.WorkerQueuesApi.as_view(), name="queues"),
]
