"""What the server trusts right now: token signing keys and revoked certificates.

Both are reloaded from disk when they change (``FileWatcher``); a bad new
version is refused and the old one kept. Listeners hear of newly revoked
serials so live streams of revoked devices end at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from auth.errors import PkiError
from auth.keys import KeyRing, load_keyring
from auth.revocation import RevocationList, read_revocations
from auth.tokens import TokenPolicy

log = logging.getLogger(__name__)


class TrustState:
    def __init__(self, key_dir: Path, crl_path: Path, ca_bundle: Path, policy: TokenPolicy) -> None:
        self.key_dir = key_dir
        self.crl_path = crl_path
        self.ca_bundle = ca_bundle
        self.policy = policy
        self.keys: KeyRing = load_keyring(key_dir)
        self.issuers: list[x509.Certificate] = self._read_issuers()
        self.revocations: RevocationList = read_revocations(crl_path, self.issuers)
        self._on_revoked: list[Callable[[frozenset[int]], object]] = []
        self.denied: set[int] = set()  # serials another node revoked before our CRL reload caught up
        log.info(
            "trust.loaded",
            extra={
                "signing_keys": len(self.keys.keys),
                "current_kid": self.keys.current.kid,
                "revoked": len(self.revocations.serials),
            },
        )

    def _read_issuers(self) -> list[x509.Certificate]:
        try:
            return x509.load_pem_x509_certificates(self.ca_bundle.read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read the CA bundle {self.ca_bundle}: {exc}") from None

    def reload_issuers(self) -> None:
        """The CAs that may sign device certificates directly (follows the TLS CA bundle)."""
        self.issuers = self._read_issuers()
        log.info("trust.issuers_reloaded", extra={"cas": len(self.issuers)})

    def is_revoked(self, serial: int) -> bool:
        return self.revocations.is_revoked(serial) or serial in self.denied

    def deny(self, serials: frozenset[int]) -> None:
        """Refuse ``serials`` from now on (another node saw them revoked); no callbacks, no echo."""
        self.denied |= serials

    def on_revoked(self, callback: Callable[[frozenset[int]], object]) -> None:
        self._on_revoked.append(callback)

    def reload_keys(self) -> None:
        keys = load_keyring(self.key_dir)
        self.keys = keys
        log.info(
            "trust.keys_reloaded", extra={"signing_keys": len(keys.keys), "current_kid": keys.current.kid}
        )

    def reload_revocations(self) -> None:
        revocations = read_revocations(self.crl_path, self.issuers)
        added = revocations.serials - self.revocations.serials
        self.revocations = revocations
        log.info(
            "trust.crl_reloaded", extra={"revoked": len(revocations.serials), "newly_revoked": len(added)}
        )
        if added:
            for callback in self._on_revoked:
                callback(frozenset(added))
