from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("items/<int:n>/", views.item),
    path("echo/", views.echo),
]
