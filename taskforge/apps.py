from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class TaskForgeConfig(AppConfig):
    name = "taskforge"
    verbose_name = "TaskForge"


class TaskForgeAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with TaskForge's site, whose login is rate limited.

    Lives here, not in taskforge/admin_site.py, because INSTALLED_APPS imports it before the
    models are ready and the site's form imports them. The module is imported as a module so
    that Django, looking for the one AppConfig of the ``taskforge`` app in this file, sees only
    TaskForgeConfig: this class is not the default.
    """

    default = False
    default_site = "taskforge.admin_site.TaskForgeAdminSite"
