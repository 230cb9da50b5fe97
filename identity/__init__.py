"""identity: a standalone OAuth 2.1 / OpenID Connect identity server on Starlette."""

__version__ = "0.1.0"
