"""Three ``identity serve`` instances behind deploy/nginx.conf, for tests/system/test_scale_out.py.

The instances share what deploy/nginx.conf says they must: the issuer (nginx's URL), the
database, Redis and its prefix (when there is one) and one keys folder. nginx runs the
committed conf with only its ports changed, unprivileged, with a certificate made here.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from identity.db import Database
from identity.models import Base
from tests.conftest import (
    free_port,
    remember_secret,
    run_cli,
    served_environment,
    stop_process,
    wait_until_up,
)
from tests.web_helpers import PASSWORD

NGINX = Path("/usr/sbin/nginx")
CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
RELOAD_SECONDS = 1.0  # IDENTITY_KEYS_RELOAD_SECONDS of every instance

T = TypeVar("T")
Auth = tuple[str, str]


@dataclass(frozen=True)
class Cluster:
    instances: tuple[str, ...]  # each instance's own http://127.0.0.1:port
    public: str  # nginx's https URL: the issuer
    plain: str  # nginx's http URL (redirects only)
    env: dict[str, str]  # what every instance and the CLI read
    tls: ssl.SSLContext  # trusts nginx's certificate
    instance_logs: tuple[Path, ...]
    nginx_log: Path
    keys_dir: Path
    app: Auth  # first-party client: password and refresh_token grants
    service: Auth  # client_credentials client


def eventually(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log file (identity's or nginx's)."""
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line being written as we read
    return entries


def _certificate(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 in ``folder`` (the conf's tls/); its path."""
    folder.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        # Its own root: the tests' TLS context trusts exactly this certificate.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / "fullchain.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _nginx_conf(https_port: int, http_port: int, upstream_ports: list[int]) -> str:
    """deploy/nginx.conf with its listen ports and upstream addresses moved to free ports;
    every other line runs as committed."""
    text = CONF.read_text()
    replacements = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        **{
            f"server 127.0.0.1:{8001 + n} ": f"server 127.0.0.1:{port} "
            for n, port in enumerate(upstream_ports)
        },
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has exactly one {old!r}"
        text = text.replace(old, new)
    return text


def _provision(env: dict[str, str]) -> tuple[Auth, Auth]:
    """Through the CLI, in parallel: the two clients and the users the tests log in as."""
    commands = [
        [
            *("clients", "create", "--name", "app", "--first-party"),
            *("--grant-type", "password", "--grant-type", "refresh_token"),
            *("--scope", "openid account offline_access"),
        ],
        ["clients", "create", "--name", "service"],
        *(
            ["users", "create", "--email", email, "--password", PASSWORD, "--verified"]
            for email in ("ada@example.com", "cy@example.com")
        ),
    ]
    try:
        with ThreadPoolExecutor(len(commands)) as pool:
            app, service, *_ = pool.map(lambda command: run_cli(env, *command), commands)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"{error}\n{error.stderr.decode(errors='replace')}") from None
    app_auth, service_auth = [(c["client_id"], c["client_secret"]) for c in (app, service)]
    remember_secret(app_auth[1])
    remember_secret(service_auth[1])
    return app_auth, service_auth


def _empty_tables(database_url: str) -> None:
    """What the `database` fixture does after each test: other tests expect empty tables."""
    database = Database(database_url)
    with database.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())
    database.dispose()


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """By PID, in reverse: nginx first, then the instances it forwards to."""
    for process in reversed(processes):
        stop_process(process)


def _environment(
    database_url: str, redis_url: str | None, redis_prefix: str, root: Path, public: str
) -> dict[str, str]:
    """What every instance and the CLI read: the same issuer, database, Redis and keys."""
    # The keys folder starts empty: the instances starting together fill it.
    env = served_environment(
        database_url, redis_url, f"{redis_prefix}scale-out:", root / "keys", port=0
    )
    env.update(
        IDENTITY_ISSUER=public,  # never an instance's own address
        IDENTITY_KEYS_RELOAD_SECONDS=str(RELOAD_SECONDS),
        IDENTITY_TRUSTED_PROXIES="127.0.0.1/32",  # nginx, as the instances see it
        IDENTITY_PASSWORD_GRANT="on",
        IDENTITY_RATE_LIMITS="login.account=6/300",
        IDENTITY_MIGRATE_ON_START="off",  # database_url is migrated already
        IDENTITY_LOG_LEVEL="info",  # the access lines
        IDENTITY_OUTBOX_DIR=str(root / "outbox"),
        IDENTITY_ARGON2_TIME_COST="1",
        IDENTITY_ARGON2_MEMORY_KIB="8",
        IDENTITY_ARGON2_PARALLELISM="1",
    )
    return env


def _nginx_command(prefix: Path) -> list[str]:
    """How deploy/nginx.conf says to run it, unprivileged, in the foreground."""
    return [
        *(str(NGINX), "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf")),
        *("-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr warn;"),
    ]


@contextmanager
def start_cluster(
    database_url: str, redis_url: str | None, redis_prefix: str, root: Path
) -> Iterator[Cluster]:
    """Three instances and nginx, all stopped (by PID) and the tables emptied at the end."""
    ports = [free_port() for _ in range(3)]
    https_port, http_port = free_port(), free_port()
    public = f"https://127.0.0.1:{https_port}"
    env = _environment(database_url, redis_url, redis_prefix, root, public)
    prefix = root / "nginx"
    (prefix / "logs").mkdir(parents=True)
    tls = ssl.create_default_context(cafile=str(_certificate(prefix / "tls")))
    (prefix / "nginx.conf").write_text(_nginx_conf(https_port, http_port, ports))
    instances = tuple(f"http://127.0.0.1:{port}" for port in ports)
    logs = tuple(root / f"instance-{port}.log" for port in ports)

    try:
        with ExitStack() as stack:
            processes: list[subprocess.Popen[bytes]] = []
            stack.callback(_stop_all, processes)
            for port, log_path in zip(ports, logs, strict=True):  # in parallel
                out = stack.enter_context(log_path.open("wb"))
                command = [sys.executable, "-m", "identity", "serve", "--port", str(port)]
                processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=out))
            out = stack.enter_context((root / "nginx.out").open("wb"))
            nginx = subprocess.Popen(_nginx_command(prefix), stdout=out, stderr=out)
            processes.append(nginx)
            app, service = _provision(env)  # while the instances start
            for url, process, log_path in zip(instances, processes[:3], logs, strict=True):
                try:
                    wait_until_up(url, process)
                except RuntimeError as error:
                    raise RuntimeError(f"{url}: {error}\n{log_path.read_text()[-3000:]}") from None

            def nginx_answers() -> bool:
                if nginx.poll() is not None:
                    raise RuntimeError(f"nginx exited: {(root / 'nginx.out').read_text()}")
                try:
                    return httpx.get(f"{public}/healthz", verify=tls, timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            eventually(nginx_answers, "nginx to answer")
            yield Cluster(
                instances=instances,
                public=public,
                plain=f"http://127.0.0.1:{http_port}",
                env=env,
                tls=tls,
                instance_logs=logs,
                nginx_log=prefix / "logs" / "access.log",
                keys_dir=root / "keys",
                app=app,
                service=service,
            )
    finally:
        _empty_tables(database_url)
