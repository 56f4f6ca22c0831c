"""The project's URLs plus the public bucket folder at ``/cdn/``, for the browser tests.

The test settings point the public bucket at moto behind a ``cdn.example.test`` domain a
browser cannot reach; the browser tests put it in a folder instead, served here the way
the embedded mode serves it (``project/urls.py``, DEBUG only), so previews really load.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.static import serve

from project.urls import urlpatterns as project_urlpatterns


def public_bucket(request: HttpRequest, path: str) -> HttpResponse:
    # Read at request time: each test has its own folder.
    return serve(request, path, document_root=settings.STORAGES["public"]["OPTIONS"]["location"])


urlpatterns = [path("cdn/<path:path>", public_bucket), *project_urlpatterns]
