"""The JSON API under ``/api/v1``: the operations table, routes, bodies, problems, handlers."""
