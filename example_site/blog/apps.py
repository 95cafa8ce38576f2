from django.apps import AppConfig


class BlogConfig(AppConfig):
    name = "example_site.blog"
    label = "blog"
    verbose_name = "Blog"
