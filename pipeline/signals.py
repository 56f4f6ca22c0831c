"""Signal handlers: tiny, and they only hand over to services.

A save whose managed file changed marks the row pending and enqueues processing after
the transaction commits; raw saves (fixtures) and saves that did not touch the file do
nothing. A delete removes the row's public objects after commit. Handlers never call
``save()`` on the row they were called for.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_init, post_save

# Name of the instance attribute holding each managed file's name as loaded or last saved.
_LOADED = "_pipeline_loaded_names"


def connect(model: type[models.Model], field_name: str) -> None:
    """Wire the handlers for one managed field of one concrete model."""
    uid = f"pipeline:{model._meta.label}.{field_name}"
    post_init.connect(
        _remember_name, sender=model, dispatch_uid=f"pipeline:{model._meta.label}:init", weak=False
    )
    post_save.connect(_on_save(field_name), sender=model, dispatch_uid=f"{uid}:save", weak=False)
    post_delete.connect(
        _on_delete(field_name), sender=model, dispatch_uid=f"{uid}:delete", weak=False
    )


def _remember_name(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    from pipeline.fields import media_fields

    setattr(instance, _LOADED, {f.name: _name(instance, f.name) for f in media_fields(sender)})


def _name(instance: models.Model, field_name: str) -> str:
    # Read the raw value: the descriptor would wrap it in a FieldFile for nothing.
    value = instance.__dict__.get(field_name)
    return str(getattr(value, "name", value) or "")


def _on_save(field_name: str) -> Any:
    def handler(
        sender: type[models.Model], instance: models.Model, created: bool, raw: bool, **kwargs: Any
    ) -> None:
        if raw:
            return
        loaded = instance.__dict__.setdefault(_LOADED, {})
        before, now = loaded.get(field_name, ""), _name(instance, field_name)
        if now == before and not (created and now):
            return
        loaded[field_name] = now
        from pipeline import services

        services.media_file_changed(instance=instance, field_name=field_name)

    return handler


def _on_delete(field_name: str) -> Any:
    def handler(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
        from pipeline import services

        services.media_row_deleted(instance=instance, field_name=field_name)

    return handler
