"""Device labels and selectors (issue 21): the rules, the three backends, the API, the CLI, the console."""

from __future__ import annotations

import json

import aiohttp
import grpc
import pytest
from playwright.async_api import Browser

from auth.operators import Role
from comms.gen import admin_pb2 as apb
from server.app import AudioServer
from server.fleet.labels import MAX_LABELS, BadLabel, DeviceLabels, Selector, parse_selector
from server.state.shared_data import SharedData
from tests.conftest import Admin, Connect
from tests.helpers import EphemeralPki, wait_for
from tests.test_admin_api import ref, refused
from tests.test_admin_cli import cli, provision
from tests.test_console import browser, shot, signed_in
from tests.test_operator_robustness import _signed_in, audit_events
from tests.test_shared_data import data, store

__all__ = ["browser", "data", "store"]  # fixtures: a browser, every backend's shared data


# --- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("zone=kitchen", (("zone", "kitchen"),)),
        (" floor=2 , zone=Kitchen-1 ", (("floor", "2"), ("zone", "Kitchen-1"))),
        ("a.b_c-d=x.Y_z-0", (("a.b_c-d", "x.Y_z-0"),)),
    ],
)
def test_good_selectors_parse_to_sorted_terms(text: str, terms: tuple[tuple[str, str], ...]) -> None:
    assert parse_selector(text) == Selector(terms)


def test_all_is_every_device() -> None:
    selector = parse_selector(" all ")
    assert selector.everything and selector.matches({}) and str(selector) == "all"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "the selector is empty"),
        ("   ", "the selector is empty"),
        ("zone", "is not key=value"),
        ("zone=", "value '' is invalid"),
        ("=kitchen", "label key '' is invalid"),
        ("Zone=kitchen", "label key 'Zone' is invalid"),
        ("zone=kit chen", "value 'kit chen' is invalid"),
        ("zone=kitchen,,floor=2", "an empty term"),
        ("zone=kitchen,", "an empty term"),
        ("zone=a,zone=b", "names zone twice"),
        ("-zone=a", "label key '-zone' is invalid"),
        ("zone=a-", "value 'a-' is invalid"),
        ("k" * 33 + "=a", "is invalid: use 1..32"),
        ("zone=" + "v" * 65, "is invalid: use 1..64"),
        (",".join(f"k{i}=v" for i in range(17)), "17 terms; at most 16"),
        ("x" * 2000, "characters; at most"),
        ("zone=ki=tchen", "value 'ki=tchen' is invalid"),
        ("zone=küche", "value 'küche' is invalid"),
    ],
)
def test_bad_selectors_are_refused_saying_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BadLabel) as info:
        parse_selector(text)
    assert says in str(info.value)
    assert len(str(info.value)) < 200  # a long bad value is quoted short


def test_a_selector_matches_only_devices_carrying_every_term() -> None:
    selector = parse_selector("zone=kitchen,floor=2")
    assert selector.matches({"zone": "kitchen", "floor": "2", "extra": "x"})
    assert not selector.matches({"zone": "kitchen"})
    assert not selector.matches({"zone": "kitchen", "floor": "3"})
    assert not selector.matches({})


# --- storage, on memory, SQLite and Redis ---------------------------------------------------------


async def test_labels_are_set_changed_removed_and_kept_per_tenant(data: SharedData) -> None:
    labels = DeviceLabels(data)
    assert await labels.change("acme", "dev-1", [("zone", "kitchen"), ("floor", "2")], []) == {
        "floor": "2",
        "zone": "kitchen",
    }
    assert await labels.change("acme", "dev-1", [("zone", "hall")], ["floor", "never-there"]) == {
        "zone": "hall"
    }
    await labels.change("acme", "dev-2", [("zone", "hall")], [])
    await labels.change("globex", "dev-1", [("zone", "vault")], [])
    assert await labels.of_tenant("acme") == {"dev-1": {"zone": "hall"}, "dev-2": {"zone": "hall"}}
    assert await labels.of_device("globex", "dev-1") == {"zone": "vault"}
    assert await labels.of_device("acme", "dev-9") == {}


@pytest.mark.parametrize(
    ("set_labels", "remove", "says"),
    [
        ([("zone", "a"), ("Bad", "b")], [], "label key 'Bad' is invalid"),
        ([("zone", "a"), ("zone", "b")], [], "given twice with different values"),
        ([("zone", "a")], ["zone"], "both set and removed"),
        ([], ["bad key"], "label key 'bad key' is invalid"),
        ([(f"k{i}", "v") for i in range(MAX_LABELS)], [], "at most 16 labels; this would make 17"),
    ],
)
async def test_a_bad_change_changes_nothing(
    data: SharedData, set_labels: list[tuple[str, str]], remove: list[str], says: str
) -> None:
    labels = DeviceLabels(data)
    await labels.change("acme", "dev-1", [("floor", "2")], [])
    with pytest.raises(BadLabel) as info:
        await labels.change("acme", "dev-1", set_labels, remove)
    assert says in str(info.value)
    assert await labels.of_tenant("acme") == {"dev-1": {"floor": "2"}}


# --- the API ------------------------------------------------------------------------------------------


def _set(device: str, **labels: str) -> apb.SetLabelsRequest:
    return apb.SetLabelsRequest(
        device=ref(device), set=[apb.Label(key=k, value=v) for k, v in labels.items()]
    )


async def test_an_operator_labels_devices_and_lists_them_by_selector(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    for device in ("kitchen-1", "kitchen-2", "hall-1"):
        async with connect(server, "acme", device):
            pass
    async with connect(server, "globex", "kitchen-1"):
        pass
    async with admin(server, "acme", role="operator") as ops:
        labelled = await ops.SetLabels(_set("kitchen-1", zone="kitchen", floor="2"))
        assert [(x.key, x.value) for x in labelled.labels] == [("floor", "2"), ("zone", "kitchen")]
        await ops.SetLabels(_set("kitchen-2", zone="kitchen", floor="1"))
        await ops.SetLabels(_set("hall-1", zone="hall", floor="2"))

        async def listed(selector: str) -> list[str]:
            response = await ops.ListDevices(apb.ListDevicesRequest(selector=selector))
            assert response.total == len(response.devices)
            return [d.device_id for d in response.devices]

        assert await listed("zone=kitchen") == ["kitchen-1", "kitchen-2"]
        assert await listed("zone=kitchen,floor=2") == ["kitchen-1"]
        assert await listed("floor=2") == ["hall-1", "kitchen-1"]
        assert await listed("all") == ["hall-1", "kitchen-1", "kitchen-2"]
        assert await listed("zone=garage") == []  # matching nothing is an answer, not an error
        shown = await ops.GetDevice(ref("hall-1"))
        assert {(x.key, x.value) for x in shown.labels} == {("zone", "hall"), ("floor", "2")}
        removed = await ops.SetLabels(apb.SetLabelsRequest(device=ref("hall-1"), remove=["floor"]))
        assert [(x.key, x.value) for x in removed.labels] == [("zone", "hall")]
        error = await refused(ops.ListDevices(apb.ListDevicesRequest(selector="zone=kitchen,,x=1")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty term" in error.details()
        error = await refused(ops.SetLabels(_set("kitchen-1", Zone="x")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("label key 'Zone' is invalid")
        assert [(x.key, x.value) for x in (await ops.GetDevice(ref("kitchen-1"))).labels] == [
            ("floor", "2"),
            ("zone", "kitchen"),
        ]  # the refused change changed nothing
        # another tenant's device of the same name is not found, and keeps its (no) labels
        theirs = apb.DeviceRef(tenant="globex", device_id="kitchen-1")
        error = await refused(
            ops.SetLabels(apb.SetLabelsRequest(device=theirs, set=[apb.Label(key="a", value="b")]))
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
    async with admin(server, "globex", role="viewer") as globex:
        theirs = await globex.ListDevices(apb.ListDevicesRequest(selector="zone=kitchen"))
        assert list(theirs.devices) == []
        assert list((await globex.GetDevice(ref("kitchen-1"))).labels) == []
    audit = [e for e in await audit_events(server) if e.action == "SetLabels"]
    assert [e.result for e in audit] == ["NOT_FOUND", "INVALID_ARGUMENT", "OK", "OK", "OK", "OK"]
    assert audit[-1].parameters == {"set": {"zone": "kitchen", "floor": "2"}, "remove": []}
    assert audit[-1].target == "kitchen-1"


async def test_a_viewer_may_not_label_and_the_refusal_is_audited(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with connect(server, "acme", "dev-1"):
        pass
    async with admin(server, "acme", role="viewer", name="val") as viewer:
        error = await refused(viewer.SetLabels(_set("dev-1", zone="a")))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert list((await viewer.GetDevice(ref("dev-1"))).labels) == []
    (event,) = [e for e in await audit_events(server) if e.action == "SetLabels"]
    assert event.result == "PERMISSION_DENIED" and event.operator.endswith("/operator/val")


async def test_labels_are_shared_by_replicas_on_redis(
    server_factory: object, redis_server: object, connect: Connect, admin: Admin
) -> None:
    from tests.test_admin_replicas import replica_pair

    a, b = await replica_pair(server_factory, redis_server)  # type: ignore[arg-type]
    async with connect(a, "acme", "dev-1"):
        pass
    async with admin(a, "acme", role="operator") as on_a, admin(b, "acme", role="viewer") as on_b:
        await on_a.SetLabels(_set("dev-1", zone="kitchen"))
        listed = await on_b.ListDevices(apb.ListDevicesRequest(selector="zone=kitchen"))
        assert [d.device_id for d in listed.devices] == ["dev-1"]


# --- the CLI and the console ---------------------------------------------------------------------------


async def test_the_cli_labels_lists_by_selector_and_shows_labels(
    server: AudioServer, connect: Connect, pki: EphemeralPki
) -> None:
    provision(pki, "acme", "alice", Role.OPERATOR)
    async with connect(server, "acme", "kitchen-1"), connect(server, "acme", "hall-1"):
        code, out, err = await cli(server, pki, "devices", "label", "kitchen-1", "zone=kitchen", "floor=2")
        assert code == 0, err
        assert out.strip() == "labels of kitchen-1: floor=2,zone=kitchen"
        code, out, err = await cli(server, pki, "devices", "list", "--selector", "zone=kitchen")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[-1] == "LABELS" and "floor=2,zone=kitchen" in lines[1]
        assert "hall-1" not in out and out.strip().endswith("1 devices, 1 online")
        code, out, _ = await cli(server, pki, "devices", "show", "kitchen-1")
        assert "labels           floor=2,zone=kitchen" in out
        code, out, _ = await cli(server, pki, "devices", "label", "kitchen-1", "--remove", "floor", "--json")
        assert [(x["key"], x["value"]) for x in json.loads(out)["labels"]] == [("zone", "kitchen")]
        code, out, err = await cli(server, pki, "devices", "list", "--selector", "zone")
        assert code == 1 and err.strip() == "audio-admin: invalid: 'zone' is not key=value"
        code, _, err = await cli(server, pki, "devices", "label", "kitchen-1", "zone")
        assert code == 1 and "is not key=value" in err
        code, out, _ = await cli(server, pki, "devices", "list", "--selector", "zone=garage")
        assert code == 0 and out.strip().endswith("0 devices, 0 online")


async def test_the_console_shows_edits_and_filters_by_labels(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    async with connect(console, "acme", "kitchen-1") as device, connect(console, "acme", "hall-1"):
        await wait_for(lambda: device.status_requests >= 1)
        page = await signed_in(browser, console, pki, role="operator")
        await page.goto(page.url.rstrip("/") + "/devices/acme/kitchen-1")
        assert await page.locator('[data-testid="labels"]').inner_text() == "none"
        await page.fill('input[name="set"]', "zone=kitchen floor=2")
        await page.click('button:has-text("Save labels")')
        await page.wait_for_selector('.done:has-text("labels: floor=2 zone=kitchen")')
        assert await page.locator('[data-testid="labels"]').inner_text() == "floor=2 zone=kitchen"
        await page.fill('input[name="set"]', "Zone=bad")
        await page.click('button:has-text("Save labels")')
        assert "label key 'Zone' is invalid" in await page.content()
        await page.go_back()
        await page.goto(page.url.split("/devices/")[0] + "/?selector=zone%3Dkitchen")
        rows = page.locator("tbody tr")
        assert await rows.count() == 1
        assert await rows.first.get_attribute("data-device") == "acme/kitchen-1"
        assert "floor=2 zone=kitchen" in await rows.first.inner_text()
        await shot(page, "fleet-by-labels")
        await page.goto(page.url.split("/?")[0] + "/?selector=zone%3Dgarage")
        assert "0 devices match the labels zone=garage" in await page.content()


async def test_a_viewer_sees_no_label_form_and_a_hand_made_post_is_refused(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession, admin: Admin
) -> None:
    async with connect(console, "acme", "dev-1"):
        base, csrf = await _signed_in(console, pki, http, role="viewer", name="val")
        async with http.get(f"{base}/devices/acme/dev-1", ssl=False) as page:
            assert 'name="set"' not in await page.text()
        form = {"csrf": csrf, "set": "zone=a"}
        async with http.post(f"{base}/devices/acme/dev-1/labels", data=form, ssl=False) as answer:
            assert answer.status == 403
        async with http.post(
            f"{base}/devices/acme/dev-1/labels", data={"set": "zone=a"}, ssl=False
        ) as forged:
            assert forged.status == 403  # no CSRF token
    async with admin(console, "acme") as ops:
        assert list((await ops.GetDevice(ref("dev-1"))).labels) == []
    refusals = [e for e in await audit_events(console) if e.result == "PERMISSION_DENIED"]
    assert {e.action for e in refusals} == {"SetLabels", "console:/devices/acme/dev-1/labels"}
