"""The OpenAPI document of the JSON API and the OAuth endpoints, and the ``/docs`` page."""
