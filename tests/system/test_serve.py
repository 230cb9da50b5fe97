"""identity serve, started as a subprocess, talking to independent clients over real HTTP."""

from __future__ import annotations

import base64
import json
import socket
import time

import httpx
import jwt as pyjwt

from tests.conftest import run_cli


def test_pyjwkclient_validates_a_token_from_a_served_instance(
    served: tuple[str, dict[str, str]],
) -> None:
    url, env = served
    client = run_cli(
        env,
        "clients",
        "create",
        "--name",
        "svc",
        "--scope",
        "read",
        "--audience",
        "https://api.example.com",
    )
    response = httpx.post(
        f"{url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 200
    token = response.json()["access_token"]

    discovery = httpx.get(f"{url}/.well-known/openid-configuration").json()
    signing_key = pyjwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = pyjwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256"],
        audience="https://api.example.com",
        issuer=url,
    )
    assert claims["client_id"] == client["client_id"] and claims["scope"] == "read"


def test_rotation_through_the_cli_reaches_every_worker_and_old_tokens_still_validate(
    served: tuple[str, dict[str, str]],
) -> None:
    url, env = served
    client = run_cli(env, "clients", "create", "--name", "svc")
    auth = (client["client_id"], client["client_secret"])

    def token() -> str:
        return str(
            httpx.post(
                f"{url}/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth
            ).json()["access_token"]
        )

    before = token()
    old_kid = pyjwt.get_unverified_header(before)["kid"]
    promoted = run_cli(env, "keys", "rotate")["kid"]
    time.sleep(1.5)  # IDENTITY_KEYS_RELOAD_SECONDS=1
    # Both workers must sign with the new key: ask several times.
    assert {pyjwt.get_unverified_header(token())["kid"] for _ in range(12)} == {promoted}
    jwks = pyjwt.PyJWKClient(f"{url}/.well-known/jwks.json", cache_jwk_set=False)
    assert old_kid in {k.key_id for k in jwks.get_signing_keys()}
    claims = pyjwt.decode(
        before,
        jwks.get_signing_key(old_kid).key,
        algorithms=["RS256"],
        audience=client["client_id"],
    )
    assert claims["client_id"] == client["client_id"]


def test_pipelined_requests_to_a_served_instance_are_answered_in_order(
    served: tuple[str, dict[str, str]],
) -> None:
    """JWKS and discovery are written by the HTTP protocol itself (identity.http_protocol);
    pipelined around a token request served by the app, all three come back in order."""
    url, env = served
    client = run_cli(env, "clients", "create", "--name", "svc", "--scope", "read")
    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode())
    form = b"grant_type=client_credentials"
    host = url.removeprefix("http://").encode()
    requests = [
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"POST /oauth2/token HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Basic " + basic
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        + str(len(form)).encode() + b"\r\n\r\n" + form,
        b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
    ]  # fmt: skip
    with socket.create_connection(("127.0.0.1", int(host.split(b":")[1])), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        reader = sock.makefile("rb")
        bodies = []
        for _ in requests:
            status = reader.readline()
            length = 0
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            assert status.startswith(b"HTTP/1.1 200 "), status
            bodies.append(json.loads(reader.read(length)))
    jwks, token, discovery = bodies
    assert jwks["keys"] and token["token_type"] == "Bearer"
    assert discovery["jwks_uri"] == f"{url}/.well-known/jwks.json"
