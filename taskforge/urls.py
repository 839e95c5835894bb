from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from taskforge import health
from taskforge.lib import api_errors

handler404 = "taskforge.lib.api_errors.json_404"
handler500 = "taskforge.lib.api_errors.json_500"

api_v1 = [
    path("", include("accounts.urls")),
    # Every queue route, the queues app's and those reaching its jobs and workers.
    path("", include("taskforge.queue_urls")),
    path("", include("jobs.urls")),
    path("", include("workers.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Last of the /api/ routes: what none of them matched gets the JSON envelope.
    re_path(r"^api/", api_errors.api_not_found),
    path("", include("django_prometheus.urls")),
    # The dashboard, last: its pages sit at the top of the site (/, /jobs, /queues/<name>…).
    path("", include("taskforge.dashboard_urls")),
]
