"""docs/reference/ is what the code says, and the docs name only settings, metrics, log events and
files that exist (issue 19: the README once told operators to alert on an event never logged)."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from admin.settings import AdminSettings
from device.settings import DeviceSettings
from server.runtime.log_events import ALERTABLE
from server.runtime.settings import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
REFERENCE = ROOT / "docs" / "reference"
DOCS = sorted([ROOT / "README.md", ROOT / "SECURITY.md", *(ROOT / "docs").rglob("*.md")])
OPS_FILES = sorted(
    [
        *(ROOT / "k8s").rglob("*.yaml"),
        *(p for p in (ROOT / "pi").iterdir() if p.is_file()),
        ROOT / "Dockerfile",
    ]
)
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
TYPO_EXAMPLE = "AUDIO_SERVER_TOKEN_TTL"  # docs/operate/server.md shows what a mistyped name does


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = load_generator()


def logged_events(root: Path = SRC) -> set[str]:
    """The event of every logging call in ``root``: ``log.info("x.y", ...)``, ``log.log(level, "x.y")``,
    and the edges an ``Outage`` logs (``OutageEvents("store.unavailable", "store.recovered")``)."""
    found = set()
    for path in root.rglob("*.py"):
        if "_pb2" in path.name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            args = node.args
            if isinstance(node.func, ast.Name) and node.func.id == "OutageEvents":
                found.update(
                    a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                )
                continue
            if not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr in LOG_METHODS and args:
                event = args[0]
            elif node.func.attr == "log" and len(args) >= 2:
                event = args[1]
            else:
                continue
            if isinstance(event, ast.Constant) and isinstance(event.value, str):
                found.add(event.value)
    return found


LOGGED = logged_events()


def string_literals(root: Path = SRC) -> set[str]:
    """Every string constant in ``root``'s code: an event logged through a variable is one of them."""
    return {
        node.value
        for path in root.rglob("*.py")
        if "_pb2" not in path.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def code_spans(path: Path) -> list[str]:
    """Every inline code span of a Markdown file (fenced blocks apart: they hold commands, not names)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"`([^`\n]+)`", text)


def test_the_reference_is_what_the_code_says() -> None:
    pages = GEN.render()
    committed = {path.name for path in REFERENCE.glob("*")}
    assert committed == set(pages), (
        f"docs/reference/ holds {sorted(committed)}, the generator makes {sorted(pages)}: "
        "run `make reference`"
    )
    for name, text in pages.items():
        assert (REFERENCE / name).read_text() == text, f"docs/reference/{name} is stale: run `make reference`"


def test_the_reference_lists_every_setting_metric_and_alertable_event() -> None:
    pages = GEN.render()
    for page, cls in [
        ("server-settings.md", ServerSettings),
        ("device-settings.md", DeviceSettings),
        ("admin-settings.md", AdminSettings),
    ]:
        prefix = cls.model_config["env_prefix"]
        for name in cls.model_fields:
            assert f"| `{prefix}{name.upper()}` | `--{name.replace('_', '-')}` |" in pages[page], name
    for name in ("audio_auth_failures_total", "audio_store_up", "audio_supervisor_restarts_total"):
        assert f"| `{name}` |" in pages["metrics.md"]
    assert "| `audio_auth_failures_total` | counter | `reason` |" in pages["metrics.md"]
    for event in ALERTABLE:
        assert f"| `{event}` |" in pages["log-events.md"]


def test_the_event_scanner_sees_real_events_only() -> None:
    assert {"session.ending", "store.reset_detected", "auth.rejected", "bus.lost"} <= LOGGED  # log.log too
    assert "session.revoked" not in LOGGED  # the event the README once named: never logged


def test_every_alertable_event_is_logged_somewhere() -> None:
    missing = sorted(set(ALERTABLE) - LOGGED)
    assert not missing, f"server/runtime/log_events.py names events no code logs: {missing}"


def _event_namespaces() -> set[str]:
    return {event.split(".")[0] for event in LOGGED if "." in event}


FILE_SUFFIXES = {"crt", "key", "pem", "md", "py", "yaml", "proto", "service", "env", "conf", "sqlite3"}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_logged_events(path: Path) -> None:
    """A name like an event (``store.waiting``: the namespace of a logged event, a dot, a word) must be
    logged, or at least be a string the code holds (``device.superseded`` is logged via a variable)."""
    namespaces, strings = _event_namespaces(), string_literals()
    for span in code_spans(path):
        for name in re.findall(r"(?<![\w./-])([a-z_]+\.[a-z_]+)(?![\w./(-])", span):
            head, tail = name.split(".")
            if head in namespaces and tail not in FILE_SUFFIXES:
                assert name in LOGGED | strings, (
                    f"{path.relative_to(ROOT)} names the log event {name}, which no code logs"
                )


def _metric_names() -> set[str]:
    return {row[0] for row in GEN.metric_rows(GEN.metrics)}


def _module_names() -> set[str]:
    return {path.stem for path in SRC.rglob("*.py")}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_real_metrics(path: Path) -> None:
    metrics, modules = _metric_names(), _module_names()
    for span in code_spans(path):
        for name in re.findall(r"\baudio_[a-z_]+\b", span):
            if name in modules or span.startswith(f"{name}."):
                continue
            assert name in metrics, f"{path.relative_to(ROOT)} names the metric {name}, which is not exposed"


SETTING_NAME = re.compile(r"\bAUDIO_(SERVER|DEVICE|ADMIN)_[A-Z0-9_]+\b")


@pytest.mark.parametrize("path", DOCS + OPS_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_and_manifests_name_only_real_settings(path: Path) -> None:
    known = {
        f"{cls.model_config['env_prefix']}{name.upper()}"
        for cls in (ServerSettings, DeviceSettings, AdminSettings)
        for name in cls.model_fields
    }
    for match in SETTING_NAME.finditer(path.read_text()):
        name = match.group(0)
        if name == TYPO_EXAMPLE and path.name == "server.md":
            continue
        assert name in known, f"{path.relative_to(ROOT)} names the setting {name}, which does not exist"


PATH_ROOTS = ("src/", "tests/", "scripts/", "bench/", "k8s/", "pi/", "proto/", "docs/", "certs/")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_paths_the_docs_name_exist(path: Path) -> None:
    for span in code_spans(path):
        for word in span.split():
            word = word.rstrip(".,;:)").split(":")[0]
            if not word.startswith(PATH_ROOTS) or any(c in word for c in "<>*{}$…"):
                continue
            if word.startswith("certs/") and word != "certs/README.md":
                continue  # made by gen_certs.py, never committed
            assert (ROOT / word).exists(), f"{path.relative_to(ROOT)} names {word}, which does not exist"
