from django.urls import path

from jobs import api
from jobs.schedules import api as schedule_api

app_name = "jobs"

urlpatterns = [
    path("jobs", api.JobListApi.as_view(), name="list"),
    path("jobs/batch", api.JobBatchApi.as_view(), name="batch"),
    path("jobs/bulk", api.JobBulkApi.as_view(), name="bulk"),
    path("jobs/<str:job_id>", api.JobDetailApi.as_view(), name="detail"),
    path("jobs/<str:job_id>/executions", api.JobExecutionsApi.as_view(), name="executions"),
    path("jobs/<str:job_id>/logs", api.JobLogsApi.as_view(), name="logs"),
    path("jobs/<str:job_id>/cancel", api.JobCancelApi.as_view(), name="cancel"),
    path("jobs/<str:job_id>/retry", api.JobRetryApi.as_view(), name="retry"),
    path("jobs/<str:job_id>/complete", api.JobCompleteApi.as_view(), name="complete"),
    path("jobs/<str:job_id>/fail", api.JobFailApi.as_view(), name="fail"),
    path("batches/<str:batch_id>", api.BatchDetailApi.as_view(), name="batch-detail"),
    path("schedules", schedule_api.ScheduleListApi.as_view(), name="schedules"),
    path(
        "schedules/<str:schedule_id>",
        schedule_api.ScheduleDetailApi.as_view(),
        name="schedule-detail",
    ),
    path(
        "schedules/<str:schedule_id>/preview",
        schedule_api.SchedulePreviewApi.as_view(),
        name="schedule-preview",
    ),
    path(
        "schedules/<str:schedule_id>/trigger",
        schedule_api.ScheduleTriggerApi.as_view(),
        name="schedule-trigger",
    ),
    path(
        "schedules/<str:schedule_id>/runs",
        schedule_api.ScheduleRunsApi.as_view(),
        name="schedule-runs",
    ),
]
