"""What the server trusts right now: token signing keys and revoked certificates.

Both are reloaded from disk when they change (``FileWatcher``); a bad new
version is refused and the old one kept. Listeners hear of newly revoked
serials so live streams of revoked devices end at once.

Revocation fails closed: a CRL that disappears, does not parse, is not signed
by a CA of the bundle, or is older than the one in force is refused, counted
(``audio_crl_reload_failures_total{reason}``) and flagged as the readiness
problem ``crl`` until a good CRL loads; the previous list stays enforced. A
CRL past its nextUpdate is enforced and reported (``crl.stale``, and
``audio_crl_next_update_timestamp_seconds``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from auth.errors import PkiError, RevocationListError, RevocationListMissing, RevocationListOlder
from auth.keys import KeyRing, load_keyring
from auth.revocation import EMPTY, RevocationList, read_revocations
from auth.tokens import TokenPolicy
from server import metrics
from server.supervision import HealthCallback

log = logging.getLogger(__name__)

CRL_PROBLEM = "crl"  # the readiness problem a refused CRL raises


class TrustState:
    def __init__(self, key_dir: Path, crl_path: Path, ca_bundle: Path, policy: TokenPolicy) -> None:
        self.key_dir = key_dir
        self.crl_path = crl_path
        self.ca_bundle = ca_bundle
        self.policy = policy
        self.keys: KeyRing = load_keyring(key_dir)
        self.issuers: list[x509.Certificate] = self._read_issuers()
        self.crl_missing = False  # at start-up: whether that is allowed is check_crl_at_start's call
        try:
            self.revocations: RevocationList = read_revocations(crl_path, self.issuers)
        except RevocationListMissing:
            self.revocations, self.crl_missing = EMPTY, True
        self.crl_problem: str | None = None  # why the last CRL reload was refused, until one succeeds
        self._crl_health: HealthCallback | None = None
        self._stale_reported: RevocationList | None = None
        self._on_revoked: list[Callable[[frozenset[int]], object]] = []
        self._on_crl_loaded: list[Callable[[RevocationList], object]] = []
        self.denied: set[int] = set()  # serials another node revoked before our CRL reload caught up
        self._report_crl()
        log.info(
            "trust.loaded",
            extra={
                "signing_keys": len(self.keys.keys),
                "current_kid": self.keys.current.kid,
                "revoked": len(self.revocations.serials),
                "crl": self.revocations.describe(),
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
        if self.crl_problem is not None:  # a CRL of a new CA may have arrived before its bundle
            try:
                self.reload_revocations()
            except RevocationListError as exc:
                log.error(
                    "reload.failed",
                    extra={"what": "crl", "reason": exc.reason, "error": str(exc), "kept": "previous"},
                )

    def is_revoked(self, serial: int) -> bool:
        return self.revocations.is_revoked(serial) or serial in self.denied

    def deny(self, serials: frozenset[int]) -> None:
        """Refuse ``serials`` from now on (another node saw them revoked); no callbacks, no echo."""
        self.denied |= serials

    def on_revoked(self, callback: Callable[[frozenset[int]], object]) -> None:
        self._on_revoked.append(callback)

    def on_crl_loaded(self, callback: Callable[[RevocationList], object]) -> None:
        """``callback(crl)`` after every CRL swapped in (the fleet remembers the newest)."""
        self._on_crl_loaded.append(callback)

    def report_crl_health(self, callback: HealthCallback) -> None:
        """Where a refused CRL is flagged (readiness), and cleared when a good one loads."""
        self._crl_health = callback

    def reload_keys(self) -> None:
        keys = load_keyring(self.key_dir)
        self.keys = keys
        log.info(
            "trust.keys_reloaded", extra={"signing_keys": len(keys.keys), "current_kid": keys.current.kid}
        )

    def reload_revocations(self) -> None:
        """Swap in the CRL file if it is usable and not older than the one in force, else raise
        (the one in force stays) and flag readiness until a good one loads."""
        try:
            revocations = read_revocations(self.crl_path, self.issuers)
            if revocations.older_than(self.revocations):
                raise RevocationListOlder(
                    f"{self.crl_path}: CRL {revocations.describe()} is older than the one in force "
                    f"({self.revocations.describe()})"
                )
        except RevocationListError as exc:
            self._crl_refused(exc.reason)
            raise
        added = revocations.serials - self.revocations.serials
        self.revocations = revocations
        self.crl_missing = False
        log.info(
            "trust.crl_reloaded",
            extra={
                "revoked": len(revocations.serials),
                "newly_revoked": len(added),
                "crl": revocations.describe(),
            },
        )
        if self.crl_problem is not None:
            self.crl_problem = None
            if self._crl_health is not None:
                self._crl_health(CRL_PROBLEM, False)
        self._report_crl()
        for loaded in self._on_crl_loaded:
            loaded(revocations)
        if added:
            for callback in self._on_revoked:
                callback(frozenset(added))

    def _crl_refused(self, reason: str) -> None:
        metrics.CRL_RELOAD_FAILURES.labels(reason=reason).inc()
        self.crl_problem = reason
        if self._crl_health is not None:
            self._crl_health(CRL_PROBLEM, True)

    def _report_crl(self) -> None:
        next_update = self.revocations.next_update
        metrics.CRL_NEXT_UPDATE.set(next_update.timestamp() if next_update else math.inf)
        self.check_crl_fresh()

    def check_crl_fresh(self, now: dt.datetime | None = None) -> bool:
        """False (and one ``crl.stale`` warning per CRL) once the CRL in force is past its nextUpdate."""
        revocations = self.revocations
        if not revocations.stale(now or dt.datetime.now(dt.UTC)):
            return True
        if self._stale_reported is not revocations:
            self._stale_reported = revocations
            assert revocations.next_update is not None
            log.warning(
                "crl.stale",
                extra={
                    "crl": revocations.describe(),
                    "next_update": revocations.next_update.isoformat(),
                    "enforced": True,
                    "hint": "issue a new CRL (gen_certs.py revoke) and distribute it",
                },
            )
        return False
