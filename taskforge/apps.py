import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger("taskforge")


class TaskForgeConfig(AppConfig):
    name = "taskforge"
    verbose_name = "TaskForge"

    def ready(self) -> None:
        if not settings.REDIS_URL:
            logger.info(
                "REDIS_URL is not set: using a local-memory cache "
                "(per process, so throttles are not shared between processes)"
            )
