"""The server's log events worth an alert: one declared table, what each means and what to do.

Operators alert on log events by name, so a name that is documented but never
logged (a rename, a typo) is an alert that can never fire. This table is the
one list: ``scripts/gen_reference.py`` renders it into
``docs/reference/log-events.md`` and ``tests/test_reference_docs.py`` fails
when a name here is not the event of some logging call in ``src``.

Nothing imports it at run time; it is data for the docs and their tests.
"""

from __future__ import annotations

ALERTABLE: dict[str, str] = {
    "auth.rejected": "A call was refused (warning; sampled per client, `suppressed` counts the lines held "
    "back). Alert on a rise of one `reason` (`audio_auth_failures_total{reason}` counts every refusal): "
    "`certificate_revoked` / `device_revoked` is a revoked device still trying, `cert_*` a device "
    "provisioned for another fleet or by other tooling, `token_*` a clock or a broken client.",
    "session.ending": "A device's session ended; with `reason=revoked` (at warning) a revoked device was cut "
    "off, by the CRL or an operator's RevokeDevice. Other reasons (`disconnected`, `superseded`, "
    "`shutdown`, `stalled`, `operator`) are routine at info.",
    "session.possible_clone": "Three supersedes of one identity within a minute: two devices seem to share "
    "one certificate. Runbook: docs/operate/clone-alert.md.",
    "store.unavailable": "The state store failed (error; the failing `op` and the error): readiness is "
    "NOT_SERVING until it takes writes again (`store.recovered`). Runbook: docs/operate/redis-down.md.",
    "store.gave_up": "A server started without its store waited `STORE_START_TIMEOUT_S` and exits 1. "
    "Check Redis, its URL and password file.",
    "store.reset_detected": "The shared store lost its data (Redis restarted empty, FLUSHALL, an empty "
    "failover); the node restores the deny-list and its live devices from memory. Check the deny-list "
    "(docs/operate/redis-down.md, 'If Redis came back empty').",
    "store.generation_missing": "At start the store holds devices but no generation marker: data may have "
    "been lost while no server ran, and nothing was restored. Check the deny-list; revoke again.",
    "reload.failed": "A watched file was refused and the previous material stays (`what`: server-tls, "
    "signing-keys or crl; `reason`). For `what=crl` readiness is NOT_SERVING until a good CRL loads. "
    "Runbook: docs/operate/crl-and-certificates.md.",
    "crl.stale": "The CRL in force is past its nextUpdate (still enforced). Issue a new CRL (any "
    "`gen_certs.py revoke`) and distribute it.",
    "task.crashed": "A background loop raised and was restarted (with its traceback; "
    "`audio_background_restarts_total{task}`). Three within a minute turn readiness NOT_SERVING. A bug: "
    "report it with the traceback.",
    "stream.failed": "A device stream ended with INTERNAL because of a bug of ours (with a traceback); "
    "other streams are unaffected. Report it. (A stream whose device left while gRPC was sending to it "
    "is `stream.broken`, at info: not a bug.)",
    "request.internal_error": "A device-service call failed with INTERNAL because of a bug of ours (with a "
    "traceback). Report it.",
    "admin.internal_error": "An operator call failed with INTERNAL because of a bug of ours (with a "
    "traceback; audited). Report it.",
    "console.error": "A console request failed with a 500 because of a bug of ours (with a traceback). "
    "Report it.",
    "audit.backlog_full": "The store has been down so long that more than 10,000 audit entries waited in "
    "this replica's memory: the oldest stored copies are dropped (their log lines were written).",
    "bus.queue_full": "This node's queue of received fleet-bus messages is full (10,000): commands time "
    "out for operators (`audio_bus_dropped_total`). A node far behind: check its CPU and Redis latency.",
    "server.drain_incomplete": "On shutdown some devices were still connected after `SHUTDOWN_GRACE_S`; "
    "their streams were cut. Raise the grace (and `terminationGracePeriodSeconds`) if it happens on "
    "every rollout.",
    "store.unsaved_at_exit": "The server stopped while the store was down: device changes held in memory "
    "(modes, telemetry) could not be written within 2 s and are lost (`records` says how many).",
    "renew.refused": "A device's certificate renewal was refused (warning; `reason`, as in "
    "`audio_renewals_total{result}`). `device_revoked` / `certificate_revoked` is a revoked device still "
    "trying; `csr_*` a broken or hostile client; `no_issuing_ca` the issuing CA files are missing or "
    "unreadable: every renewal fails until they are back. Runbook: docs/operate/enrolment.md (Renewal).",
    "renew.no_issuing_ca": "A renewal found no usable issuing CA (error; which file and why). Devices "
    "cannot renew until it is fixed; their certificates keep their last third of lifetime meanwhile.",
}
