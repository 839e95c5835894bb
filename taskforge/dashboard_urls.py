"""Every dashboard route: the pages operators use in a browser (docs/dashboard.md).

Pages live with the app whose data they show (accounts: the sign-in doors; workers: the
workers page); pages that span apps (the Overview, queues with their jobs and workers, jobs
with their workers and diagnosis) live in the top layer, taskforge/views/, as the queue API
does (taskforge/queue_api.py). Each page's live regions are served by the page's own URL with
``?partial=<name>`` (accounts/dashboard.py ``dashboard_page``).
"""

from django.urls import path

from accounts import views as account_views
from taskforge.views import jobs, overview, queues
from workers import views as worker_views

app_name = "dashboard"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("login", account_views.login_view, name="login"),
    path("logout", account_views.logout_view, name="logout"),
    path("signup", account_views.signup_view, name="signup"),
    path("switch", account_views.switch_view, name="switch"),
    path("queues", queues.queue_list, name="queues"),
    path("queues/<str:name>", queues.queue_detail, name="queue"),
    path("queues/<str:name>/pause", queues.queue_pause, name="queue-pause"),
    path("queues/<str:name>/resume", queues.queue_resume, name="queue-resume"),
    path("queues/<str:name>/purge", queues.queue_purge, name="queue-purge"),
    path("jobs", jobs.job_list, name="jobs"),
    path("jobs/bulk", jobs.job_bulk, name="jobs-bulk"),
    path("jobs/<uuid:job_id>", jobs.job_detail, name="job"),
    path("jobs/<uuid:job_id>/retry", jobs.job_retry, name="job-retry"),
    path("jobs/<uuid:job_id>/cancel", jobs.job_cancel, name="job-cancel"),
    path("workers", worker_views.worker_list, name="workers"),
    path("workers/<uuid:worker_id>/drain", worker_views.worker_drain, name="worker-drain"),
]
