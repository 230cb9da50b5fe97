"""JSON API handlers for operators' work on the signing keys (``/api/v1/admin/keys...``):
the same rotation as ``identity keys rotate`` (``identity.key_admin``). No answer holds key
material: kids, states and times only."""

from __future__ import annotations

from identity import key_admin
from identity.api.admin_bodies import AdminKey, AdminKeys
from identity.api.calls import ApiCall, Result
from identity.api.problems import Problem, conflict
from identity.keys import KeyRecord, KeyStore, KeyStoreError


def _store(call: ApiCall) -> KeyStore:
    store: KeyStore = call.oauth.issuer.keys
    return store


def _shown(record: KeyRecord) -> AdminKey:
    return AdminKey.model_validate(record.as_dict())


def list_keys(call: ApiCall) -> Result:
    try:
        records = key_admin.list_keys(_store(call))
    except (KeyStoreError, OSError, ValueError, KeyError):
        raise Problem(
            503, "The signing keys cannot be read now.", headers={"Retry-After": "30"}
        ) from None
    call.record("admin.keys_listed")
    return AdminKeys(keys=[_shown(record) for record in records])


def rotate_keys(call: ApiCall) -> Result:
    """The published next key signs from now on (every instance within its reload time),
    the active one retires and stays published until its tokens expire; a 409 where the
    keys folder cannot be written (a read-only mount: rotate where it is written)."""
    try:
        promoted = key_admin.rotate_signing_key(
            _store(call), call.db, actor=call.operator, context=call.context
        )
    except KeyStoreError as error:
        raise conflict(str(error), "keys-not-rotated", "Keys not rotated") from None
    return _shown(promoted)
