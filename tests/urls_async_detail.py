"""The host project's URLs with the API's detail route on the event loop, as ``aa_project.asgi`` serves it."""

from django.urls import include, path

from aa_project import urls as project
from sessions_app.api.urls import api_urlpatterns, app_name

urlpatterns = [path("api/", include((api_urlpatterns(async_detail=True), app_name))), *project.urlpatterns]
handler404 = project.handler404
handler500 = project.handler500
