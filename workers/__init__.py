"""The Celery side of the project: one app, its queues and routing. No business logic."""

from workers.celery import app

__all__ = ["app"]
