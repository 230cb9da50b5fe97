"""The Alembic migrations, installed as the package ``identity._migrations``.

This folder stays at the top of the repository; pyproject.toml maps it into the wheel, and
identity.db finds it through importlib.resources in a checkout and an install alike."""
