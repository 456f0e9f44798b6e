"""Issue 23's guard: every counted refusal reason has a test that triggers it alone and asserts it.

The reasons are one enumeration (auth.reasons.Reason). A reason is covered by a row of one of the
two attack tables (their tests assert ``counted_since(before) == {reason: n}``: this rule and no
other, everything else valid) or by a test named below whose body asserts that reason's value.
Adding a reason without such a test fails here; so does naming a test that is gone or that no
longer mentions the reason it is listed for.
"""

from __future__ import annotations

import ast
from pathlib import Path

from auth.reasons import FALLBACKS, Reason
from tests.test_auth_rejections import CASES
from tests.test_security import TOKEN_ROWS

ROOT = Path(__file__).resolve().parent.parent
#: The tests that run each table, and the assertion that makes a row's reason checked.
TABLE_TESTS = {
    "tests/test_security.py::test_token_attacks": "counted_since(before) == {reason: 3}",
    "tests/test_auth_rejections.py::test_rejected_on_every_stream_while_others_keep_working": (
        "counted_since(before) == ({reason: 3} if reason else {})"
    ),
}
ELSEWHERE: dict[Reason, str] = {
    Reason.CERT_NOT_A_DEVICE: (
        "tests/test_operators.py::test_operator_certificates_never_call_the_device_services"
    ),
    Reason.CERT_NOT_AN_OPERATOR: "tests/test_admin_api.py::test_devices_and_operators_cannot_cross_services",
    Reason.CERT_OPERATOR_INVALID: (
        "tests/test_operators.py::test_operator_paths_are_recognised_and_devices_are_not"
    ),
    Reason.CERT_NOT_ISSUED_BY_CA: (
        "tests/test_issuing_ca.py::test_a_chain_one_level_deeper_is_refused_end_to_end"
    ),
    Reason.CERT_ISSUING_CA: (
        "tests/test_auth_rejections.py::test_intermediate_minted_by_the_fleet_ca_cannot_mint_devices"
    ),
    Reason.CERT_NAME_CONSTRAINTS: (
        "tests/test_issuing_ca.py::test_a_leaf_outside_the_name_constraints_is_refused_by_our_own_check"
    ),
    Reason.CERTIFICATE_REVOKED: (
        "tests/test_security.py::test_revoked_cert_is_refused_and_its_live_streams_cut"
    ),
    Reason.DEVICE_REVOKED: (
        "tests/test_admin_replicas.py::test_a_token_obtained_before_the_revocation_is_refused_on_every_replica"
    ),
    Reason.ROLE_INSUFFICIENT: "tests/test_admin_api.py::test_each_role_may_call_only_its_methods",
    Reason.TOKEN_AMBIGUOUS: "tests/test_security.py::test_two_authorization_entries_are_refused",
    Reason.TOO_MANY_CALLS: "tests/test_security.py::test_too_many_concurrent_calls_per_device",
    Reason.STORE_UNAVAILABLE: (
        "tests/test_store_faults.py::test_a_store_that_fails_reads_refuses_streams_with_unavailable"
    ),
    Reason.MALFORMED_REQUEST: (
        "tests/test_operator_robustness.py::test_unparseable_bytes_on_every_method_are_refused_counted_and_audited"
    ),
    Reason.CONSOLE_CSRF: (
        "tests/test_console.py::test_a_viewer_sees_no_actions_and_a_hand_made_post_is_refused_and_audited"
    ),
}


def body_of(node_id: str) -> str:
    path, name = node_id.split("::")
    text = (ROOT / path).read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return ast.get_source_segment(text, node) or ""
    raise AssertionError(f"{node_id} does not exist")


def table_reasons() -> set[str]:
    return {row[2] for row in TOKEN_ROWS.values()} | {row[2] for row in CASES.values() if row[2]}


def test_every_reason_has_a_test_that_asserts_it() -> None:
    covered = table_reasons() | set(ELSEWHERE)
    assert covered <= set(Reason), covered - set(Reason)  # a test asserts a label nobody counts
    missing = set(Reason) - FALLBACKS - covered
    assert not missing, f"refusal reasons no test triggers alone and asserts: {sorted(missing)}"
    assert not FALLBACKS & covered, "a reason a test triggers is not a fallback: take it off FALLBACKS"


def test_the_tables_are_run_by_tests_that_assert_the_reason() -> None:
    for node_id, assertion in TABLE_TESTS.items():
        assert assertion in body_of(node_id), node_id


def test_each_named_test_exists_and_asserts_its_reason() -> None:
    for reason, node_id in ELSEWHERE.items():
        assert f'"{reason.value}"' in body_of(node_id), (reason, node_id)
