from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from demo.models import Photo


def gallery(request: HttpRequest) -> HttpResponse:
    """A public page showing every photo through the ``picture`` tag."""
    photos = Photo.objects.all()[:100]
    return render(request, "demo/gallery.html", {"photos": photos})
