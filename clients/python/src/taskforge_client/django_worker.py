"""A handlers module for ``taskforge-worker`` that runs Django tasks by their import path.

    DJANGO_SETTINGS_MODULE=mysite.settings taskforge-worker taskforge_client.django_worker

Importing it sets Django up and installs :func:`taskforge_client.django.run_task` as the
fallback handler. Other handler modules may be named beside it; their handlers win.
"""

from taskforge_client.django import install

install()
