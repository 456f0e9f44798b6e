"""Token signing keys: Ed25519, one PEM file per key, named by its key id (``kid``).

Key ids sort by creation time (``k<UTC timestamp>-<random>``), so "the newest
key" is simply the largest kid: the server signs with it and verifies with all
of them. Rotation = add a new key, wait at least one token lifetime, remove the
old one. No restart: the server reloads the directory when it changes.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from auth.errors import SigningKeyError
from auth.pki import PRIVATE_MODE, write_material

KEY_SUFFIX = ".key"
KID_PATTERN = re.compile(r"k\d{8}T\d{6}Z-[0-9a-f]{8}")


def new_kid(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"k{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ed25519.Ed25519PrivateKey

    @property
    def public(self) -> ed25519.Ed25519PublicKey:
        return self.private.public_key()


@dataclass(frozen=True)
class KeyRing:
    """All keys we verify with; ``current`` is the one we sign with."""

    keys: dict[str, SigningKey]

    @property
    def current(self) -> SigningKey:
        return self.keys[max(self.keys)]

    def public_key(self, kid: str) -> ed25519.Ed25519PublicKey | None:
        key = self.keys.get(kid)
        return key.public if key else None


def create_signing_key(key_dir: Path, now: dt.datetime | None = None) -> SigningKey:
    """Write a new Ed25519 key as ``key_dir/<kid>.key`` (0600) and return it."""
    key = SigningKey(new_kid(now), ed25519.Ed25519PrivateKey.generate())
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_material(key_dir / f"{key.kid}{KEY_SUFFIX}", pem, PRIVATE_MODE, force=False)
    return key


def load_keyring(key_dir: Path) -> KeyRing:
    """Every ``<kid>.key`` in the directory. Raises SigningKeyError when none is usable."""
    if not key_dir.is_dir():
        raise SigningKeyError(
            f"signing key directory not found: {key_dir} (create one with gen_certs.py signing-key)"
        )
    keys: dict[str, SigningKey] = {}
    for path in sorted(key_dir.glob(f"*{KEY_SUFFIX}")):
        kid = path.name[: -len(KEY_SUFFIX)]
        if not KID_PATTERN.fullmatch(kid):
            raise SigningKeyError(
                f"{path}: file name is not a key id (expected kYYYYMMDDTHHMMSSZ-xxxxxxxx.key)"
            )
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            raise SigningKeyError(f"{path}: unreadable signing key ({type(exc).__name__})") from None
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise SigningKeyError(f"{path}: not an Ed25519 key")
        keys[kid] = SigningKey(kid, private)
    if not keys:
        raise SigningKeyError(f"no signing key in {key_dir} (create one with gen_certs.py signing-key)")
    return KeyRing(keys)
