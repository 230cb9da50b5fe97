"""The upstream providers service: the rules a provider must meet, its secret sealed at rest,
every change audited and seen by every process through the cache generation."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from identity import repositories
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, FederatedIdentity, UpstreamProvider, User
from identity.secret_box import SecretBox, new_key
from identity.upstream_presets import ProviderError
from identity.upstream_providers import UpstreamProviders, describe, redirect_uri
from tests.conftest import remember_secret

SECRET = "upstream-client-secret-7f3a9c"
remember_secret(SECRET)


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([new_key()])


@pytest.fixture
def providers_for(
    settings_for: Callable[..., Settings], box: SecretBox
) -> Callable[..., UpstreamProviders]:
    """A process's providers service: its own cache, the shared secret box."""

    def build(clock: Callable[[], float] | None = None, **overrides: Any) -> UpstreamProviders:
        settings = settings_for(**{"cache_check_seconds": 0.0, **overrides})
        if clock is None:
            return UpstreamProviders(settings, box)
        return UpstreamProviders(settings, box, clock=clock)

    return build


@pytest.fixture
def providers(providers_for: Callable[..., UpstreamProviders]) -> UpstreamProviders:
    return providers_for()


def _add(
    providers: UpstreamProviders, database: Database, name: str = "acme", **options: Any
) -> UpstreamProvider:
    values: dict[str, Any] = {
        "client_id": "identity-at-acme",
        "client_secret": SECRET,
        "issuer": "https://login.acme.example",
    }
    values.update(options)
    with database.transaction() as session:
        return providers.add(session, name=name, **values)


def _events(database: Database, kind: str) -> list[AuditEvent]:
    with database.transaction() as session:
        query = select(AuditEvent).where(AuditEvent.type == kind).order_by(AuditEvent.id)
        return list(session.scalars(query).all())


def _generation(session: Session) -> int:
    return repositories.cache_generation(session, "upstream_providers")


def test_an_added_provider_is_read_back_with_its_secret_opened(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database)
    with database.transaction() as session:
        config = providers.get(session, "acme")
    assert config is not None
    assert (config.kind, config.issuer, config.client_id) == (
        "oidc",
        "https://login.acme.example",
        "identity-at-acme",
    )
    assert config.client_secret == SECRET
    assert (config.scope, config.label) == ("openid email profile", "Continue with Acme")
    assert config.enabled and not config.trust_mfa


def test_the_client_secret_is_sealed_in_the_row(
    providers: UpstreamProviders, database: Database, box: SecretBox
) -> None:
    _add(providers, database)
    with database.transaction() as session:
        row = repositories.get_upstream_provider(session, "acme")
        assert row is not None
        sealed = row.client_secret_sealed
    assert SECRET not in sealed
    assert box.open(sealed) == SECRET


def test_a_provider_config_keeps_its_secret_out_of_its_repr(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database)
    with database.transaction() as session:
        config = providers.get(session, "acme")
    assert SECRET not in repr(config)


def test_a_preset_fills_kind_issuer_scope_and_label(
    providers: UpstreamProviders, database: Database
) -> None:
    github = _add(providers, database, "github", preset="github", issuer=None)
    google = _add(providers, database, "google", preset="google", issuer=None)
    assert (github.kind, github.issuer, github.scope, github.label) == (
        "github",
        "https://github.com",
        "read:user user:email",
        "Continue with GitHub",
    )
    assert (google.kind, google.issuer, google.scope, google.label) == (
        "oidc",
        "https://accounts.google.com",
        "openid email profile",
        "Continue with Google",
    )


def test_a_github_preset_may_point_at_another_host(
    providers_for: Callable[..., UpstreamProviders], database: Database
) -> None:
    providers = providers_for(insecure_http=True)
    row = _add(providers, database, "ghe", preset="github", issuer="http://127.0.0.1:9999")
    assert (row.kind, row.issuer, row.label) == (
        "github",
        "http://127.0.0.1:9999",
        "Continue with GitHub",
    )


def test_an_unknown_preset_is_refused(providers: UpstreamProviders, database: Database) -> None:
    with pytest.raises(ProviderError, match="unknown preset"):
        _add(providers, database, preset="myspace")


@pytest.mark.parametrize(
    "issuer", ["http://login.acme.example", "http://127.0.0.1:9000", "http://localhost:9000"]
)
def test_a_plain_http_issuer_is_refused_without_insecure_http(
    providers: UpstreamProviders, database: Database, issuer: str
) -> None:
    with pytest.raises(ProviderError, match="IDENTITY_INSECURE_HTTP"):
        _add(providers, database, issuer=issuer)
    with database.transaction() as session:
        assert repositories.get_upstream_provider(session, "acme") is None


def test_a_plain_http_issuer_is_accepted_with_insecure_http(
    providers_for: Callable[..., UpstreamProviders], database: Database
) -> None:
    providers = providers_for(insecure_http=True)
    assert _add(providers, database, issuer="http://127.0.0.1:9000").issuer == (
        "http://127.0.0.1:9000"
    )


@pytest.mark.parametrize(
    "issuer",
    [
        "https://login.acme.example/",
        "https://login.acme.example?tenant=1",
        "https://login.acme.example#top",
        "login.acme.example",
        "/relative/path",
        "ftp://login.acme.example",
        "https://user:pw@login.acme.example",
        "https://",
        "https://login.acme.example/a b",
    ],
)
def test_an_issuer_that_is_no_plain_absolute_url_is_refused(
    providers_for: Callable[..., UpstreamProviders], database: Database, issuer: str
) -> None:
    providers = providers_for(insecure_http=True)
    with pytest.raises(ProviderError, match="issuer"):
        _add(providers, database, issuer=issuer)


@pytest.mark.parametrize("name", ["Acme", "ac_me", "a" * 41, "", "-acme", "acme corp", "åcme"])
def test_a_name_that_cannot_sit_in_a_url_path_is_refused(
    providers: UpstreamProviders, database: Database, name: str
) -> None:
    with pytest.raises(ProviderError, match="provider name"):
        _add(providers, database, name)


def test_a_name_of_forty_letters_digits_and_dashes_is_accepted(
    providers: UpstreamProviders, database: Database
) -> None:
    name = "corp-sso-2" + "x" * 30
    assert _add(providers, database, name).name == name


def test_a_taken_name_is_refused(providers: UpstreamProviders, database: Database) -> None:
    _add(providers, database)
    with pytest.raises(ProviderError, match="exists already"):
        _add(providers, database, client_id="another")
    with database.transaction() as session:
        config = providers.get(session, "acme")
    assert config is not None and config.client_id == "identity-at-acme"


def test_an_openid_connect_provider_must_ask_for_openid(
    providers: UpstreamProviders, database: Database
) -> None:
    with pytest.raises(ProviderError, match="openid"):
        _add(providers, database, scope="email profile")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("client_id", ""),
        ("client_id", "has space"),
        ("client_secret", ""),
        ("client_secret", "line\nbreak"),
        ("label", "   "),
        ("scope", 'openid "quoted"'),
    ],
)
def test_malformed_settings_are_refused(
    providers: UpstreamProviders, database: Database, option: str, value: str
) -> None:
    with pytest.raises(ProviderError):
        _add(providers, database, **{option: value})


def test_an_update_changes_what_is_given_and_seals_a_new_secret(
    providers: UpstreamProviders, database: Database, box: SecretBox
) -> None:
    _add(providers, database)
    new_secret = "rotated-upstream-secret-2b81"
    remember_secret(new_secret)
    with database.transaction() as session:
        providers.update(
            session,
            "acme",
            scope="openid email",
            label="Sign in with Acme SSO",
            client_secret=new_secret,
            trust_mfa=True,
        )
    with database.transaction() as session:
        config = providers.get(session, "acme")
        row = repositories.get_upstream_provider(session, "acme")
        assert row is not None and new_secret not in row.client_secret_sealed
    assert config is not None
    assert (config.scope, config.label, config.trust_mfa) == (
        "openid email",
        "Sign in with Acme SSO",
        True,
    )
    assert config.client_secret == new_secret
    assert config.issuer == "https://login.acme.example"  # not given: unchanged
    [event] = _events(database, "provider.updated")
    assert event.detail["changed"] == ["client_secret", "label", "scope", "trust_mfa"]
    assert new_secret not in json.dumps(event.detail)


def test_an_update_that_changes_nothing_is_neither_audited_nor_announced(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database)
    with database.transaction() as session:
        before = _generation(session)
        providers.update(session, "acme", label="Continue with Acme")
    with database.transaction() as session:
        assert _generation(session) == before
    assert _events(database, "provider.updated") == []


def test_an_update_checks_the_https_rule_too(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database)
    with pytest.raises(ProviderError, match="plain http"), database.transaction() as session:
        providers.update(session, "acme", issuer="http://login.acme.example")


def test_changing_an_unknown_provider_is_a_lookup_error(
    providers: UpstreamProviders, database: Database
) -> None:
    with database.transaction() as session:
        for change in (
            lambda: providers.update(session, "nope", label="x"),
            lambda: providers.enable(session, "nope"),
            lambda: providers.disable(session, "nope"),
            lambda: providers.remove(session, "nope"),
        ):
            with pytest.raises(LookupError, match="no provider 'nope'"):
                change()


def test_a_disabled_provider_is_not_offered_but_still_found(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database)
    _add(providers, database, "other")
    with database.transaction() as session:
        providers.disable(session, "acme")
    with database.transaction() as session:
        assert [c.name for c in providers.enabled(session)] == ["other"]
        config = providers.get(session, "acme")
    assert config is not None and config.enabled is False
    with database.transaction() as session:
        providers.enable(session, "acme")
    with database.transaction() as session:
        assert sorted(c.name for c in providers.enabled(session)) == ["acme", "other"]
    assert [e.detail for e in _events(database, "provider.disabled")] == [{"provider": "acme"}]
    assert [e.detail for e in _events(database, "provider.enabled")] == [{"provider": "acme"}]


def test_disabling_a_disabled_provider_changes_nothing(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database)
    with database.transaction() as session:
        providers.disable(session, "acme")
    with database.transaction() as session:
        providers.disable(session, "acme")
    assert len(_events(database, "provider.disabled")) == 1


def test_removing_a_provider_removes_the_links_to_it(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database)
    _add(providers, database, "other")
    with database.transaction() as session:
        user = User(email="linked@example.com", email_verified=True)
        session.add(user)
        session.flush()
        for provider in ("acme", "other"):
            link = FederatedIdentity(
                provider=provider, subject="248289761001", user_id=user.id, email=user.email
            )
            session.add(link)
    with database.transaction() as session:
        assert providers.remove(session, "acme") == 1
    with database.transaction() as session:
        assert providers.get(session, "acme") is None
        links = session.scalars(select(FederatedIdentity.provider)).all()
    assert links == ["other"]
    [event] = _events(database, "provider.removed")
    assert event.detail == {"provider": "acme", "links_removed": 1}
    assert event.actor == "admin"


def test_every_change_moves_the_cache_generation(
    providers: UpstreamProviders, database: Database
) -> None:
    changes: list[Callable[[Session], object]] = [
        lambda session: providers.add(
            session,
            name="acme",
            client_id="id",
            client_secret=SECRET,
            issuer="https://login.acme.example",
        ),
        lambda session: providers.update(session, "acme", client_id="id-2"),
        lambda session: providers.disable(session, "acme"),
        lambda session: providers.enable(session, "acme"),
        lambda session: providers.remove(session, "acme"),
    ]
    for change in changes:
        with database.transaction() as session:
            before = _generation(session)
            change(session)
        with database.transaction() as session:
            assert _generation(session) == before + 1


def test_another_process_sees_a_change_at_its_next_check(
    providers_for: Callable[..., UpstreamProviders], database: Database
) -> None:
    elsewhere = providers_for()  # another instance, built before any change
    with database.transaction() as session:
        assert elsewhere.enabled(session) == []
    _add(providers_for(), database)
    with database.transaction() as session:
        assert [c.name for c in elsewhere.enabled(session)] == ["acme"]
    with database.transaction() as session:
        providers_for().disable(session, "acme")
    with database.transaction() as session:
        assert elsewhere.enabled(session) == []
        config = elsewhere.get(session, "acme")
    assert config is not None and not config.enabled


def test_between_checks_a_process_answers_from_memory(
    providers_for: Callable[..., UpstreamProviders], database: Database
) -> None:
    now = [0.0]
    elsewhere = providers_for(clock=lambda: now[0], cache_check_seconds=5.0)
    with database.transaction() as session:
        assert elsewhere.enabled(session) == []
    _add(providers_for(), database)
    now[0] = 4.0
    with database.transaction() as session:
        assert elsewhere.enabled(session) == []  # not checked yet: the interval bounds it
    now[0] = 5.0
    with database.transaction() as session:
        assert [c.name for c in elsewhere.enabled(session)] == ["acme"]


def test_a_provider_no_key_opens_is_left_out_and_the_others_stay(
    providers: UpstreamProviders,
    providers_for: Callable[..., UpstreamProviders],
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _add(providers, database)
    with database.transaction() as session:
        row = repositories.get_upstream_provider(session, "acme")
        assert row is not None
        row.client_secret_sealed = SecretBox([new_key()]).seal(SECRET)  # a key since removed
    _add(providers, database, "other")
    elsewhere = providers_for()
    with (
        caplog.at_level(logging.ERROR, logger="identity.upstream_providers"),
        database.transaction() as session,
    ):
        assert [c.name for c in elsewhere.enabled(session)] == ["other"]
    assert "acme is left out" in caplog.text


def test_the_redirect_uri_depends_only_on_the_issuer_and_the_name(
    providers: UpstreamProviders, database: Database
) -> None:
    assert redirect_uri("https://id.example", "acme") == (
        "https://id.example/login/with/acme/callback"
    )
    row = _add(providers, database)
    data = describe(row, "https://id.example")
    assert data["redirect_uri"] == "https://id.example/login/with/acme/callback"
    assert set(data) == {
        "name",
        "kind",
        "issuer",
        "client_id",
        "scope",
        "label",
        "enabled",
        "trust_mfa",
        "redirect_uri",
    }


def test_audit_rows_of_changes_carry_no_secret(
    providers: UpstreamProviders, database: Database
) -> None:
    _add(providers, database, trust_mfa=True)
    [event] = _events(database, "provider.added")
    assert event.actor == "admin"
    assert event.detail["provider"] == "acme" and event.detail["trust_mfa"] is True
    assert SECRET not in json.dumps(event.detail)
