from django.contrib import admin

from demo.models import Photo
from pipeline.admin import MediaAdminMixin


@admin.register(Photo)
class PhotoAdmin(MediaAdminMixin, admin.ModelAdmin):
    list_display = ["title", "created"]
    search_fields = ["title"]
