from django.urls import path

from chatsite import views

urlpatterns = [path("", views.home, name="home")]
