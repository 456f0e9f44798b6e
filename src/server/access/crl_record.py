"""The fleet's memory of its newest CRL: a missing or rolled-back ``crl.pem`` cannot un-revoke anyone.

The CRL is made where the CA key lives and reaches servers as a file; nothing
in the file says a newer one existed. So the shared store keeps a mark of the
newest CRL any node has loaded (its CA, number, lastUpdate, how many serials
it lists). At start-up (``check_crl_at_start``) the file is held against it:

* the file is missing: allowed only when the newest CRL seen lists nothing
  (nothing is revoked through the CRL), else refused;
* the file is older than the mark (same CA, lower number or earlier
  lastUpdate): refused;
* otherwise the file's CRL becomes the mark if it is newer.

Refusals raise ``RevocationListError`` (start-up exits 1 with one line). The
operator deny-list (``RevokeDevice``) lives in the store itself and does not
depend on the file. While running, ``CrlRecorder`` writes the mark after each
CRL a reload swaps in, on its own task, retrying while the store is away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass

from auth.errors import RevocationListMissing, RevocationListOlder
from auth.revocation import RevocationList
from server.access.trust import TrustState
from server.state.shared_data import SharedData

log = logging.getLogger(__name__)

TABLE = "trust"
KEY = "crl"
RETRY_S = 2.0


@dataclass(frozen=True)
class CrlMark:
    issuer_key: str | None
    number: int | None
    issued_at: float | None  # lastUpdate, Unix time
    revoked: int  # serials it lists

    @classmethod
    def of(cls, crl: RevocationList) -> CrlMark:
        issued = crl.issued_at.timestamp() if crl.issued_at else None
        return cls(crl.issuer_key, crl.number, issued, len(crl.serials))

    @classmethod
    def parse(cls, text: str) -> CrlMark:
        data = json.loads(text)
        return cls(data.get("issuer_key"), data.get("number"), data.get("issued_at"), int(data["revoked"]))

    def dumps(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def as_list(self) -> RevocationList:
        """For ordering only: the mark as a CRL without entries."""
        issued = dt.datetime.fromtimestamp(self.issued_at, dt.UTC) if self.issued_at is not None else None
        return RevocationList(frozenset(), issued, self.number, None, self.issuer_key)


async def remembered(data: SharedData) -> CrlMark | None:
    text = await data.get_entry(TABLE, KEY)
    return CrlMark.parse(text) if text else None


async def remember(data: SharedData, crl: RevocationList) -> None:
    """Make ``crl`` the fleet's mark unless the mark is newer (read, then write: two nodes loading
    two CRLs at once may leave the older; the next reload or start puts the newer back)."""
    if crl.issuer_key is None:
        return  # no CRL file: nothing to remember
    mark = await remembered(data)
    if mark is not None and crl.older_than(mark.as_list()):
        return
    await data.set_entry(TABLE, KEY, CrlMark.of(crl).dumps())


async def check_crl_at_start(data: SharedData, trust: TrustState) -> None:
    """Refuse to start on a missing CRL when the fleet has revoked certificates, or on a rolled-back
    one; else remember the file's CRL. Needs the store (call it once the store answers)."""
    mark = await remembered(data)
    path = trust.crl_path
    if mark is not None and trust.crl_missing and mark.revoked:
        raise RevocationListMissing(
            f"CRL not found: {path}, but this fleet's newest CRL ({_name(mark)}) revokes {mark.revoked} "
            "certificate(s); restore crl.pem (or a newer one) before starting"
        )
    if mark is not None and trust.revocations.older_than(mark.as_list()):
        raise RevocationListOlder(
            f"{path}: CRL {trust.revocations.describe()} is older than the newest this fleet has "
            f"loaded ({_name(mark)}); install that one or a newer one"
        )
    await remember(data, trust.revocations)


def _name(mark: CrlMark) -> str:
    return mark.as_list().describe()


class CrlRecorder:
    """Writes the mark after every CRL a reload swaps in (the reload runs without the store)."""

    def __init__(self, data: SharedData) -> None:
        self._data = data
        self._pending: RevocationList | None = None
        self._wake = asyncio.Event()
        self.written = 0  # marks written: observable

    def note(self, crl: RevocationList) -> None:
        self._pending = crl
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            crl, self._pending = self._pending, None
            if crl is None:
                continue
            try:
                await remember(self._data, crl)
            except Exception as exc:  # the store is away: its health says so; try again
                log.warning("crl.remember_failed", extra={"error": type(exc).__name__, "retry_s": RETRY_S})
                if self._pending is None:
                    self._pending = crl
                await asyncio.sleep(RETRY_S)
                self._wake.set()
                continue
            self.written += 1
