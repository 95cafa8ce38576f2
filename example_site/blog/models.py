from django.db import models


class BlogPost(models.Model):
    title = models.CharField(max_length=255)
    author = models.CharField(max_length=60)

    def __str__(self) -> str:
        return self.title
