"""URLs: the admin, a health check, the demo gallery, and local bucket files in DEBUG."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("", include("demo.urls")),
]

if settings.DEBUG and settings.STORAGES["public"]["BACKEND"].endswith("FileSystemStorage"):
    # The embedded default serves the local "public bucket" like a CDN would.
    from django.views.static import serve

    urlpatterns += [
        path(
            "cdn/<path:path>",
            serve,
            {"document_root": settings.STORAGES["public"]["OPTIONS"]["location"]},
        ),
    ]
