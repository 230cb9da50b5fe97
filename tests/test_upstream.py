"""The upstream sign-in client against fake providers on loopback: the happy paths of OIDC and
GitHub, and each federation hole it must keep shut (forged state, mix-up, foreign or forged
ID tokens, replayed callbacks, unverified email, unreachable or hostile upstreams)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from identity.config import Settings
from identity.upstream import UpstreamClient
from identity.upstream_http import UpstreamError
from identity.upstream_providers import ProviderConfig
from tests.fake_upstreams import DENIAL_TEXT, FakeGitHub, FakeOidcProvider
from tests.fake_upstreams import fake_github as fake_github_fixture  # noqa: F401
from tests.fake_upstreams import fake_oidc as fake_oidc_fixture  # noqa: F401

REDIRECT_URI = "http://127.0.0.1:8000/signin/upstream/callback"


@pytest.fixture
def client(settings_for: Callable[..., Settings]) -> Iterator[UpstreamClient]:
    upstream = UpstreamClient(settings_for(insecure_http=True))
    yield upstream
    upstream.close()


@pytest.fixture(params=["oidc", "github"])
def fake(request: pytest.FixtureRequest) -> FakeOidcProvider | FakeGitHub:
    """Each fake in turn, for what both kinds of provider must do alike."""
    started: FakeOidcProvider | FakeGitHub = request.getfixturevalue(f"fake_{request.param}")
    return started


def provider_for(fake: FakeOidcProvider | FakeGitHub, **changes: Any) -> ProviderConfig:
    """The provider an operator would configure for ``fake``."""
    kind = "github" if isinstance(fake, FakeGitHub) else "oidc"
    provider = ProviderConfig(
        name=f"{kind}-fake",
        kind=kind,
        issuer=fake.issuer,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        scope="read:user user:email" if kind == "github" else "openid email profile",
        label=f"Continue with the {kind} fake",
        enabled=True,
        trust_mfa=False,
    )
    return dataclasses.replace(provider, **changes)


def authorize(
    client: UpstreamClient, provider: ProviderConfig
) -> tuple[dict[str, str], dict[str, Any]]:
    """Start a sign-in and follow the provider's redirect: (the callback's query, kept)."""
    url, kept = client.start(provider, REDIRECT_URI)
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return dict(parse_qsl(urlsplit(location).query)), kept


def refused(
    client: UpstreamClient,
    provider: ProviderConfig,
    query: dict[str, str],
    kept: dict[str, Any],
) -> str:
    """The reason ``finish`` refuses this callback with."""
    with pytest.raises(UpstreamError) as caught:
        client.finish(provider, REDIRECT_URI, query, kept)
    return caught.value.reason


# -- the happy paths ----------------------------------------------------------------------


def test_oidc_sign_in_returns_who_the_provider_signed_in(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.next_login(
        sub="248289761001", email="grace@example.test", name="Grace Hopper", amr=["pwd", "otp"]
    )
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    person = client.finish(provider, REDIRECT_URI, query, kept)

    assert person.subject == "248289761001"
    assert person.email == "grace@example.test"
    assert person.email_verified is True
    assert person.name == "Grace Hopper"
    assert person.amr == ["pwd", "otp"]


def test_start_sends_state_nonce_and_an_s256_challenge_of_the_kept_verifier(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    provider = provider_for(fake_oidc)
    _, kept = authorize(client, provider)
    _, other = authorize(client, provider)

    sent = fake_oidc.authorize_requests[0]
    digest = hashlib.sha256(kept["verifier"].encode()).digest()
    assert sent["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert sent["code_challenge_method"] == "S256"
    assert sent["state"] == kept["state"] and sent["nonce"] == kept["nonce"]
    assert sent["redirect_uri"] == REDIRECT_URI and sent["scope"] == provider.scope
    assert len(base64.urlsafe_b64decode(kept["state"] + "==")) >= 16  # at least 128 bits
    assert kept["state"] != other["state"] and kept["nonce"] != other["nonce"]
    assert set(kept) == {"provider", "state", "nonce", "verifier", "at"}


def test_github_sign_in_returns_the_id_primary_email_and_name(
    client: UpstreamClient, fake_github: FakeGitHub
) -> None:
    fake_github.next_login(id=583231, login="octocat", name="The Octocat", email="oc@example.test")
    provider = provider_for(fake_github)
    query, kept = authorize(client, provider)

    person = client.finish(provider, REDIRECT_URI, query, kept)

    assert person.subject == "583231"
    assert person.email == "oc@example.test"  # the primary one, not the noreply address
    assert person.email_verified is True
    assert person.name == "The Octocat"
    assert person.amr == []
    sent = fake_github.authorize_requests[0]
    assert sent["code_challenge_method"] == "S256" and sent["state"] == kept["state"]
    assert fake_github.token_requests[0]["accept"] == "application/json"


def test_github_person_without_a_name_is_named_by_login(
    client: UpstreamClient, fake_github: FakeGitHub
) -> None:
    fake_github.next_login(login="hubot", name=None, verified=False)
    provider = provider_for(fake_github)
    query, kept = authorize(client, provider)

    person = client.finish(provider, REDIRECT_URI, query, kept)

    assert person.name == "hubot"
    assert person.email_verified is False


def test_github_refusing_the_email_list_gives_no_email(
    client: UpstreamClient, fake_github: FakeGitHub
) -> None:
    fake_github.refuse_emails = True
    provider = provider_for(fake_github)
    query, kept = authorize(client, provider)

    person = client.finish(provider, REDIRECT_URI, query, kept)

    assert person.email is None and person.email_verified is False


def test_email_missing_from_the_id_token_comes_from_userinfo(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.email_in_userinfo_only = True
    fake_oidc.next_login(email="lin@example.test", email_verified=True)
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    person = client.finish(provider, REDIRECT_URI, query, kept)

    assert person.email == "lin@example.test" and person.email_verified is True


@pytest.mark.parametrize(
    ("claimed", "counted"),
    [(True, True), ("true", True), (False, False), ("false", False), (1, False), ("yes", False)],
)
def test_email_counts_as_verified_only_when_the_provider_says_true(
    client: UpstreamClient, fake_oidc: FakeOidcProvider, claimed: Any, counted: bool
) -> None:
    fake_oidc.next_login(email="maybe@example.test", email_verified=claimed)
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    person = client.finish(provider, REDIRECT_URI, query, kept)

    assert person.email == "maybe@example.test"
    assert person.email_verified is counted


def test_the_code_is_exchanged_with_client_secret_basic(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)
    client.finish(provider, REDIRECT_URI, query, kept)

    [request] = fake_oidc.token_requests
    assert request["auth_method"] == "client_secret_basic"
    assert "client_secret" not in request["fields"]
    assert "code_verifier" in request["fields"]


def test_client_secret_post_is_used_when_it_is_all_the_provider_lists(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.discovery_changes = {"token_endpoint_auth_methods_supported": ["client_secret_post"]}
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert client.finish(provider, REDIRECT_URI, query, kept).subject

    assert fake_oidc.token_requests[0]["auth_method"] == "client_secret_post"


def test_a_rotated_signing_key_is_fetched_again(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)
    client.finish(provider, REDIRECT_URI, query, kept)  # the key set is now cached
    fake_oidc.rotate_key()
    fake_oidc.next_login(sub="after-rotation")
    query, kept = authorize(client, provider)

    assert client.finish(provider, REDIRECT_URI, query, kept).subject == "after-rotation"


# -- state, issuer and nonce --------------------------------------------------------------


def test_a_forged_state_is_refused_before_the_code_is_spent(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    forged = refused(client, provider, {**query, "state": secrets.token_urlsafe(32)}, kept)
    missing = refused(client, provider, {k: v for k, v in query.items() if k != "state"}, kept)

    assert forged == missing == "state"
    assert fake_oidc.token_requests == []


def test_a_sign_in_started_for_another_provider_is_refused(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    query, kept = authorize(client, provider_for(fake_oidc))

    assert refused(client, provider_for(fake_oidc, name="other"), query, kept) == "state"


def test_a_sign_in_older_than_ten_minutes_is_refused(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert refused(client, provider, query, {**kept, "at": time.time() - 601}) == "state"


def test_an_id_token_with_another_nonce_is_refused(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.id_token_nonce = secrets.token_urlsafe(32)
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert refused(client, provider, query, kept) == "nonce"


def test_an_id_token_from_another_issuer_is_refused(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.id_token_issuer = "https://attacker.example"
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert refused(client, provider, query, kept) == "issuer"


def test_an_iss_parameter_naming_another_issuer_is_refused_before_the_code_is_sent(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.response_issuer = "https://attacker.example"
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert refused(client, provider, query, kept) == "issuer"
    assert fake_oidc.token_requests == []  # the mix-up defence: the code went nowhere


def test_a_missing_iss_parameter_is_refused_when_the_provider_advertises_it(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.omit_response_issuer = True
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert refused(client, provider, query, kept) == "issuer"


def test_a_missing_iss_parameter_is_accepted_when_the_provider_does_not_advertise_it(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.omit_response_issuer = True
    fake_oidc.discovery_changes = {"authorization_response_iss_parameter_supported": False}
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert client.finish(provider, REDIRECT_URI, query, kept).subject


def test_a_discovered_issuer_that_differs_from_the_configured_one_is_refused(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    # The same document, fetched for "issuer/", names the issuer without the slash.
    provider = provider_for(fake_oidc, issuer=fake_oidc.issuer + "/")

    with pytest.raises(UpstreamError) as caught:
        client.start(provider, REDIRECT_URI)

    assert caught.value.reason == "issuer"


# -- the ID token ---------------------------------------------------------------------------

OURS_AND_ANOTHER = object()  # stands for [our client_id, "another"]: known once the fake runs


@pytest.mark.parametrize(
    "misbehaviour",
    [
        pytest.param({"id_token_audience": "someone-else"}, id="another-audience"),
        pytest.param({"id_token_audience": ["x", "y"]}, id="other-audiences"),
        pytest.param({"id_token_audience": OURS_AND_ANOTHER}, id="several-audiences-no-azp"),
        pytest.param({"id_token_expired": True}, id="expired"),
        pytest.param({"id_token_algorithm": "none"}, id="alg-none"),
        pytest.param({"id_token_algorithm": "HS256"}, id="hs256-keyed-with-our-secret"),
    ],
)
def test_an_id_token_not_for_us_expired_or_not_signed_by_the_provider_is_refused(
    client: UpstreamClient, fake_oidc: FakeOidcProvider, misbehaviour: dict[str, Any]
) -> None:
    for knob, value in misbehaviour.items():
        is_ours = value is OURS_AND_ANOTHER
        setattr(fake_oidc, knob, [fake_oidc.client_id, "another"] if is_ours else value)
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert refused(client, provider, query, kept) == "token"


def test_an_id_token_for_several_audiences_with_our_azp_is_accepted(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.id_token_audience = [fake_oidc.client_id, "another"]
    fake_oidc.next_login(azp=fake_oidc.client_id)
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert client.finish(provider, REDIRECT_URI, query, kept).subject


def test_a_replayed_callback_is_refused(
    client: UpstreamClient, fake: FakeOidcProvider | FakeGitHub
) -> None:
    provider = provider_for(fake)
    query, kept = authorize(client, provider)
    client.finish(provider, REDIRECT_URI, query, kept)

    assert refused(client, provider, query, kept) == "token"


# -- refusals, hostile and unreachable upstreams ---------------------------------------------


def test_a_denial_at_the_provider_is_denied_without_echoing_its_words(
    client: UpstreamClient, fake: FakeOidcProvider | FakeGitHub
) -> None:
    fake.deny = True
    provider = provider_for(fake)
    query, kept = authorize(client, provider)

    with pytest.raises(UpstreamError) as caught:
        client.finish(provider, REDIRECT_URI, query, kept)

    assert caught.value.reason == "denied"
    assert "go away" not in str(caught.value) and query["error_description"] == DENIAL_TEXT


def test_a_token_response_that_is_not_json_is_an_invalid_response(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.malformed_token_response = True
    provider = provider_for(fake_oidc)
    query, kept = authorize(client, provider)

    assert refused(client, provider, query, kept) == "invalid_response"


def test_a_discovery_document_over_a_megabyte_is_an_invalid_response(
    client: UpstreamClient, fake_oidc: FakeOidcProvider
) -> None:
    fake_oidc.discovery_changes = {"padding": "x" * 1_100_000}

    with pytest.raises(UpstreamError) as caught:
        client.start(provider_for(fake_oidc), REDIRECT_URI)

    assert caught.value.reason == "invalid_response"


def test_a_provider_with_nothing_listening_is_unreachable(client: UpstreamClient) -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{bound.getsockname()[1]}/tenant-{secrets.token_hex(4)}"
        provider = ProviderConfig(
            "down", "oidc", issuer, "id", "secret", "openid", "Down", True, False
        )
        with pytest.raises(UpstreamError) as caught:
            client.start(provider, REDIRECT_URI)

    assert caught.value.reason == "unreachable"


def test_a_provider_that_goes_down_before_the_callback_is_unreachable(
    client: UpstreamClient, fake_github: FakeGitHub
) -> None:
    provider = provider_for(fake_github)
    query, kept = authorize(client, provider)
    fake_github.stop()

    assert refused(client, provider, query, kept) == "unreachable"


def test_a_provider_that_never_answers_is_unreachable_after_the_timeout(
    client: UpstreamClient,
) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        issuer = f"http://127.0.0.1:{silent.getsockname()[1]}/tenant-{secrets.token_hex(4)}"
        provider = ProviderConfig(
            "silent", "oidc", issuer, "id", "secret", "openid", "Silent", True, False
        )
        began = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            client.start(provider, REDIRECT_URI)

    assert caught.value.reason == "unreachable"
    assert 4 < time.monotonic() - began < 15


def test_an_http_issuer_is_refused_without_insecure_http(
    client: UpstreamClient,
    settings_for: Callable[..., Settings],
    fake: FakeOidcProvider | FakeGitHub,
) -> None:
    provider = provider_for(fake)
    query, kept = authorize(client, provider)  # started where plain http is allowed
    strict = UpstreamClient(settings_for(insecure_http=False))
    try:
        with pytest.raises(UpstreamError) as at_start:
            strict.start(provider, REDIRECT_URI)
        at_finish = refused(strict, provider, query, kept)
    finally:
        strict.close()

    assert at_start.value.reason == at_finish == "issuer"
    assert fake.token_requests == []  # the code never travelled over plain http
