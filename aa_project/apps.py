from django.apps import AppConfig


class HostProjectConfig(AppConfig):
    """The host project as an app: its checks (aa_project/middleware.py) register when it is ready."""

    name = "aa_project"
    label = "aa_project"

    def ready(self) -> None:
        from aa_project import middleware  # noqa: F401
