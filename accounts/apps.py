from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Registers the OpenAPI description of API-key authentication.
        from accounts import schema  # noqa: F401
