# identity: OAuth 2.1 / OpenID Connect server.
#   docker build -t identity .
#   docker run -p 8000:8000 -v identity-keys:/var/lib/identity/keys identity
# Configuration is IDENTITY_* environment variables (see identity/config.py);
# compose.yaml runs it with PostgreSQL, Redis and Mailpit.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IDENTITY_KEYS_DIR=/var/lib/identity/keys \
    IDENTITY_OUTBOX_DIR=/var/lib/identity/outbox

WORKDIR /app

# The build context is filtered by .dockerignore (no .git, local keys, databases, caches).
# db.py finds migrations/ next to the identity package, so the editable install keeps
# the source tree layout: /app/identity, /app/migrations, /app/templates, /app/alembic.ini.
COPY . .
RUN mkdir -p templates \
    && pip install --no-cache-dir -e . \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/identity \
        --shell /usr/sbin/nologin identity \
    && mkdir -p /var/lib/identity/keys \
    && chown -R identity:identity /var/lib/identity \
    && chmod 700 /var/lib/identity/keys

# Signing keys outlive the container; created (owned by identity) before VOLUME.
VOLUME ["/var/lib/identity/keys"]

USER identity

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# serve runs migrations (IDENTITY_MIGRATE_ON_START) and creates keys before workers fork.
CMD ["identity", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
