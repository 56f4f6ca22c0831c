"""MediaImageField as a drop-in for ImageField, and reading variants without storage calls."""

from __future__ import annotations

import pytest
from django.apps.registry import Apps
from django.db import connection, models
from django.db.migrations import operations
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.graph import MigrationGraph
from django.db.migrations.state import ModelState, ProjectState

from demo.models import Photo
from pipeline.fields import MediaImageField, companion_fields


def product_state(image_field: models.Field) -> ProjectState:
    """A project state holding one model ``shop.Product`` with the given image field."""
    registry = Apps()
    attrs = {
        "__module__": "shop.models",
        "Meta": type("Meta", (), {"app_label": "shop", "apps": registry}),
        "title": models.CharField(max_length=50),
        "image": image_field,
    }
    model = type("Product", (models.Model,), attrs)
    state = ProjectState()
    state.add_model(ModelState.from_model(model))
    return state


def test_swapping_imagefield_for_mediaimagefield_keeps_the_column_and_adds_companions():
    before = product_state(models.ImageField(upload_to="products/", blank=True))
    after = product_state(MediaImageField(upload_to="products/", profile="product", blank=True))

    # _detect_changes: changes() would drop an app that has no migrations module.
    changes = MigrationAutodetector(before, after)._detect_changes(graph=MigrationGraph())
    ops = [op for migration in changes["shop"] for op in migration.operations]
    altered = [op for op in ops if isinstance(op, operations.AlterField)]
    added = [op for op in ops if isinstance(op, operations.AddField)]
    assert len(altered) == 1 and altered[0].name == "image"
    assert {op.name for op in added} == {f"image_{suffix}" for suffix in companion_fields()}
    assert len(ops) == len(altered) + len(added)  # nothing removed, nothing recreated

    # The altered column is the same column with the same type: its data stays as is.
    old = before.models["shop", "product"].fields["image"]
    new = altered[0].field
    old.set_attributes_from_name("image")
    new.set_attributes_from_name("image")
    assert old.column == new.column
    assert old.db_parameters(connection) == new.db_parameters(connection)


def test_status_is_an_indexed_column():
    status = Photo._meta.get_field("image_status")
    assert status.db_index
    assert {f.name for f in Photo._meta.fields} >= {f"image_{s}" for s in companion_fields()}


def test_deconstruct_round_trips_profile():
    field = MediaImageField(upload_to="x/", profile="product")
    _name, path, args, kwargs = field.deconstruct()
    assert path == "pipeline.fields.MediaImageField"
    assert kwargs["profile"] == "product" and "storage" not in kwargs
    assert MediaImageField(*args, **kwargs).profile == "product"


def manifest_photo() -> Photo:
    variants = [
        {
            "key": f"k/w{w}.{f}",
            "url": f"https://cdn/k/w{w}.{f}",
            "format": f,
            "width": w,
            "height": w // 2,
            "bytes": w,
        }
        for f in ("avif", "webp", "jpeg")
        for w in (640, 320)
    ]
    return Photo(
        title="t",
        image="photos/x.jpg",
        image_status="ready",
        image_manifest={"variants": variants, "original": variants[0]},
    )


def test_variants_srcset_and_url_for_read_the_manifest_only(db, django_assert_num_queries):
    photo = manifest_photo()
    with django_assert_num_queries(0):
        assert len(photo.image.variants) == 6
        assert (
            photo.image.srcset("webp")
            == "https://cdn/k/w320.webp 320w, https://cdn/k/w640.webp 640w"
        )
        assert photo.image.url_for(400, "avif") == "https://cdn/k/w640.avif"
        assert photo.image.url_for(5000, "jpeg") == "https://cdn/k/w640.jpeg"
        assert photo.image.url_for(100, "gif") is None
        assert photo.image.formats() == ["avif", "webp", "jpeg"]


@pytest.mark.parametrize("status", ["pending", "processing", "failed", "empty"])
def test_picture_renders_placeholder_unless_ready(status):
    from django.template import Context, Template

    photo = manifest_photo()
    photo.image_status = status
    photo.image_placeholder = {"color": "#112233", "preview": "data:image/webp;base64,AAAA"}
    html = Template("{% load pipeline %}{% picture p.image alt='x' %}").render(
        Context({"p": photo})
    )
    assert "<picture>" not in html
    assert 'src="data:image/webp;base64,AAAA"' in html and "background-color:#112233" in html
    assert f'data-status="{status}"' in html


def test_picture_offers_jpeg_xl_first_and_falls_through():
    from django.template import Context, Template

    photo = manifest_photo()
    photo.image_manifest["variants"] += [
        {"key": f"k/w{w}.jxl", "url": f"https://cdn/k/w{w}.jxl", "format": "jxl", "width": w,
         "height": w // 2, "bytes": w}
        for w in (640, 320)
    ]  # fmt: skip
    html = Template("{% load pipeline %}{% picture p.image alt='x' %}").render(
        Context({"p": photo})
    )
    types = [part.split('"')[0] for part in html.split('<source type="')[1:]]
    assert types == ["image/jxl", "image/avif", "image/webp"]
    assert 'src="https://cdn/k/w640.jpeg"' in html  # the fallback <img> is still JPEG
