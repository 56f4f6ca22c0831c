# Load the Celery app with Django, so that @shared_task binds to it (and not to a default
# app that would publish to amqp://localhost).
from workers import app as celery_app

__all__ = ["celery_app"]
