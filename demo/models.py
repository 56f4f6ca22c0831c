"""A demo model so the system can be tried at once: a photo with a title."""

from django.db import models

from pipeline.fields import MediaImageField


class Photo(models.Model):
    title = models.CharField(max_length=200)
    image = MediaImageField(upload_to="photos/", blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return self.title


class FeaturedPhoto(Photo):
    """A proxy, as projects use for a second admin or manager: its rows are Photo rows."""

    class Meta:
        proxy = True
