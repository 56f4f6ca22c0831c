# syntax=docker/dockerfile:1
# One image for every process of the stack: web (gunicorn), the Celery workers, beat,
# flower, and the one-shot `migrate` / `cloudfront-init` jobs. Each compose service only
# changes the command.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=project.settings

# A fixed uid/gid, so files on bind mounts (the legacy media folder) and named volumes
# get predictable ownership.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# Every runtime dependency ships manylinux wheels (Pillow, psycopg[binary]), so no
# compiler or -dev packages are needed.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays owned by root (read-only for the app user); only var/ is writable.
COPY . .
RUN mkdir -p /app/var && chown app:app /app/var

USER app

# Static files are collected into the image (STATIC_ROOT = var/static) so every container
# of a release serves the same files. Settings run on their embedded defaults here: no
# database or bucket is touched.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

EXPOSE 8000

# Overridden per service in docker-compose.yml.
CMD ["gunicorn", "project.wsgi:application", "--bind", "0.0.0.0:8000", "--worker-tmp-dir", "/dev/shm", "--access-logfile", "-"]
