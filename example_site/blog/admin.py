from django.contrib import admin

from example_site.blog.models import BlogPost


@admin.register(BlogPost)
class BlogPostAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "author"]
    search_fields = ["author"]
