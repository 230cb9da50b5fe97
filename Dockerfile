# identity: OAuth 2.1 / OpenID Connect server.
#   docker build -t identity .
#   docker run -p 8000:8000 -v identity-data:/data identity
# With no configuration it keeps its SQLite database, signing keys and mail outbox in the
# /data volume, and runs as an unprivileged user (uid 10001) that can write nowhere else.
# Configuration is IDENTITY_* environment variables (README, "Settings"); compose.yaml runs
# it with PostgreSQL, Redis and Mailpit.

# The wheel, built from what the package needs: templates/ and migrations/ ship inside it
# (as identity._templates and identity._migrations), so the image holds no checkout.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY identity identity
COPY templates templates
COPY migrations migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IDENTITY_DATABASE_URL=sqlite:////data/identity.db \
    IDENTITY_KEYS_DIR=/data/keys \
    IDENTITY_OUTBOX_DIR=/data/outbox

# Dependencies first, at the versions CI tested (constraints.txt): this layer is rebuilt when
# pyproject.toml or constraints.txt change, not on every change to the source.
COPY pyproject.toml constraints.txt /tmp/dependencies/
RUN python -c "import tomllib; project = tomllib.load(open('/tmp/dependencies/pyproject.toml', 'rb'))['project']; print('\n'.join(project['dependencies']))" \
        > /tmp/dependencies/requirements.txt \
    && pip install --no-cache-dir -c /tmp/dependencies/constraints.txt \
        -r /tmp/dependencies/requirements.txt \
    && rm -rf /tmp/dependencies

# The package: the wheel, not an editable checkout. `pip check` fails the build if the layer
# above missed a dependency.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && pip check \
    && rm -rf /tmp/wheels

# The user owns /data and nothing else: the install and the working directory (/) stay
# read-only to it. A numeric USER lets Kubernetes' runAsNonRoot verify it is not root.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin identity \
    && mkdir -p /data \
    && chown identity:identity /data \
    && chmod 700 /data

# The database, keys and outbox outlive the container; /data is created (owned by the user)
# before VOLUME, so a new named volume starts with that owner.
VOLUME ["/data"]

USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# serve runs migrations (IDENTITY_MIGRATE_ON_START) and creates keys before workers fork.
CMD ["identity", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
