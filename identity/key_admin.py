"""The operators' actions on the signing keys, shared by ``identity keys`` and the admin API
so that a rotation follows one rule and leaves one kind of audit row, whoever asked."""

from __future__ import annotations

from sqlalchemy.orm import Session

from identity import audit
from identity.audit import RequestContext
from identity.keys import KeyRecord, KeyStore


def list_keys(store: KeyStore) -> list[KeyRecord]:
    """Every key of the folder, as the manifest lists them (no key material); the first
    set is made in an empty folder."""
    store.ensure()
    return store.records()


def rotate_signing_key(
    store: KeyStore, session: Session, *, actor: str, context: RequestContext
) -> KeyRecord:
    """The published ``next`` key starts signing, the active one retires (still published
    until its tokens expire) and a new ``next`` is published; audited in ``session``'s
    transaction as ``key.rotated``. KeyStoreError when the folder cannot be written."""
    store.ensure()
    promoted = store.rotate()
    audit.record(
        session,
        "key.rotated",
        context=context,
        actor=actor,
        subject=promoted.kid,
        detail={"kid": promoted.kid},
    )
    return promoted
