"""identity serve, started as a subprocess, talking to independent clients over real HTTP."""

from __future__ import annotations

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
