"""The page, mail and static templates, installed as the package ``identity._templates``.

This folder stays at the top of the repository; pyproject.toml maps it into the wheel, and
identity.rendering finds it through importlib.resources in a checkout and an install alike."""
