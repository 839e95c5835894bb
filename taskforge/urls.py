from django.contrib import admin
from django.urls import include, path

from taskforge import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("", include("django_prometheus.urls")),
]
