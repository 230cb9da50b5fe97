"""The queries of webhook endpoints, their event outbox and deliveries."""

from __future__ import annotations

__all__: list[str] = []
