# syntax=docker/dockerfile:1
# Production image of TaskForge's web process. The same image runs the dispatcher:
#   docker run … taskforge python manage.py rundispatcher
# Required at run time: SECRET_KEY (or SECRET_KEY_FILE), ALLOWED_HOSTS, DATABASE_URL,
# REDIS_URL, CSRF_TRUSTED_ORIGINS; see docs/configuration.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system taskforge \
    && useradd --system --gid taskforge --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin taskforge

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps .

# Static files are collected at build time; whitenoise serves them. Settings refuse to load
# without a SECRET_KEY when DEBUG is false, so the build uses a throwaway one.
RUN SECRET_KEY=build-time-dummy-key-not-used-at-run-time DEBUG=false \
    python manage.py collectstatic --noinput

# Production by default: the container refuses to start without a real SECRET_KEY.
# TASKFORGE_DATA_DIR is only used when DATABASE_URL is unset (an embedded PostgreSQL,
# for trying the image out); it is the one directory the app user may write.
ENV DEBUG=false \
    TASKFORGE_DATA_DIR=/app/.taskforge
RUN mkdir -p /app/.taskforge && chown taskforge:taskforge /app/.taskforge

USER taskforge
EXPOSE 8000

# /health is exempt from the HTTPS redirect. Django checks the Host header, so the probe
# sends the first ALLOWED_HOSTS entry ('*' and leading dots made concrete).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; h = (os.environ.get('ALLOWED_HOSTS') or 'localhost').split(',')[0].strip().lstrip('.').replace('*', 'localhost') or 'localhost'; u.urlopen(u.Request('http://127.0.0.1:8000/health', headers={'Host': h}), timeout=4)"]

# Extra gunicorn options can be passed with GUNICORN_CMD_ARGS.
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "taskforge.wsgi"]
