"""A software WebAuthn authenticator for tests: it answers the options our server sends the
way a browser and a platform authenticator would (``credential.toJSON()``), with an EC P-256
key, attestation format "none", and a signature counter the test can set."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# Authenticator data flags (WebAuthn §6.1).
USER_PRESENT = 0x01
USER_VERIFIED = 0x04
BACKUP_ELIGIBLE = 0x08
BACKED_UP = 0x10
ATTESTED_CREDENTIAL = 0x40
AAGUID = bytes.fromhex("ea9b8d664d011d213ce4b6b48cb575d4")  # any 16 bytes name a model


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftwareAuthenticator:
    """One passkey on one authenticator, used from a browser at ``origin``."""

    def __init__(self, origin: str, *, synced: bool = False) -> None:
        self.origin = origin
        self.synced = synced
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = secrets.token_bytes(32)
        self.counter = 0
        self.user_handle: bytes | None = None

    @property
    def id(self) -> str:
        """The credential id as the server stores and browsers send it (base64url)."""
        return b64url(self.credential_id)

    def create(
        self, options_json: str, *, user_verified: bool = True, origin: str | None = None
    ) -> dict[str, Any]:
        """Make the passkey for ``navigator.credentials.create()`` options."""
        options = json.loads(options_json)
        self.user_handle = from_b64url(options["user"]["id"])
        numbers = self.key.public_key().public_numbers()
        cose_key = cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        attested = AAGUID + len(self.credential_id).to_bytes(2, "big") + self.credential_id
        auth_data = self._authenticator_data(
            options["rp"]["id"], user_verified, ATTESTED_CREDENTIAL, attested + cose_key
        )
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
        }

    def get(
        self,
        options_json: str,
        *,
        user_verified: bool = True,
        origin: str | None = None,
        counter: int | None = None,
    ) -> dict[str, Any]:
        """Sign the challenge of ``navigator.credentials.get()`` options; the counter rises
        by one unless ``counter`` sets it."""
        options = json.loads(options_json)
        allowed = [entry["id"] for entry in options.get("allowCredentials", [])]
        assert not allowed or self.id in allowed, "the options do not allow this passkey"
        self.counter = self.counter + 1 if counter is None else counter
        auth_data = self._authenticator_data(options["rpId"], user_verified, 0, b"")
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        response = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if self.user_handle is not None:
            response["userHandle"] = b64url(self.user_handle)
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": response,
        }

    def _authenticator_data(
        self, rp_id: str, user_verified: bool, extra_flags: int, attested: bytes
    ) -> bytes:
        flags = USER_PRESENT | extra_flags
        if user_verified:
            flags |= USER_VERIFIED
        if self.synced:
            flags |= BACKUP_ELIGIBLE | BACKED_UP
        rp_hash = hashlib.sha256(rp_id.encode()).digest()
        return rp_hash + bytes([flags]) + self.counter.to_bytes(4, "big") + attested

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin}
        return json.dumps({**data, "crossOrigin": False}).encode()
