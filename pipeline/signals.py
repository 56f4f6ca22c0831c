"""Signal handlers: tiny, and they only hand over to services.

Connected in ``PipelineConfig.ready`` to every model with a managed image and to its
proxies, each handled as its concrete model: a row saved through a proxy is processed
like any other. A save
hands the file it wrote to ``media_saved``, which compares it with the state in the
database (never with what the instance remembers); a delete reads what the row published
under a lock before the row goes. Raw saves (fixtures) are left alone, and handlers never
save the row they were called for.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.apps import apps
from django.db import models
from django.db.models.signals import post_save, pre_delete

from pipeline import services
from pipeline.fields import media_fields


def connect() -> None:
    """Connect the handlers to every model whose rows hold a managed image, proxies
    included. Per sender, not globally: a receiver for every model would cost Django's
    fast delete (``Collector.can_fast_delete``) to every table in the project."""
    for model in apps.get_models():
        if _managed(model)[1]:
            label = model._meta.label
            post_save.connect(_saved, sender=model, dispatch_uid=f"pipeline:save:{label}")
            pre_delete.connect(_deleting, sender=model, dispatch_uid=f"pipeline:delete:{label}")


@cache
def _managed(model: type[models.Model]) -> tuple[type[models.Model], tuple[str, ...]]:
    """The concrete model and its managed field names (empty for every other model)."""
    concrete = model._meta.concrete_model
    return concrete, tuple(f.name for f in media_fields(concrete))


def _saved(sender: type[models.Model], instance: models.Model, raw: bool, **kwargs: Any) -> None:
    concrete, names = _managed(sender)
    if raw or not names:
        return
    update_fields = kwargs.get("update_fields")
    for name in names:
        if update_fields is not None and name not in update_fields:
            continue  # this save did not write the column
        value = instance.__dict__.get(name)  # raw value: no FieldFile built for nothing
        file_name = str(getattr(value, "name", value) or "")
        if services.media_saved(model=concrete, pk=instance.pk, field_name=name, name=file_name):
            # What the save started (pending, a new revision), for whoever reads the
            # instance next; never written back by a later save (fields.PipelineOwned).
            field = concrete._meta.get_field(name)
            instance.refresh_from_db(fields=[f.name for f in field.companions()])


def _deleting(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    concrete, names = _managed(sender)
    for name in names:
        services.media_row_deleting(model=concrete, pk=instance.pk, field_name=name)
