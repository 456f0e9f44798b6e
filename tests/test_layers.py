"""Imports flow one way: a change that imports against the grain fails here (issue 19).

``src/server`` is layered; each subpackage may import its own layer and those below it, never
above. The programs are apart too: the device client and the operator CLI never import the
server, and ``auth``/``comms`` (shared by all) import none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
KIT = {"errors", "metrics", "supervision", "limits"}  # the small kit everything uses
COMPOSITION_ROOT = {"app", "__main__"}
LAYERS = [  # lowest first
    {"kit"},
    {"state"},
    {"access", "audio"},
    {"devices"},
    {"fleet"},
    {"announce"},
    {"operator", "enrolment"},
    {"runtime"},
    {"root"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
PROGRAMS_MAY_IMPORT = {  # top-level packages of src/ and what each may import of ours
    "comms": {"comms"},
    "auth": {"auth", "comms"},
    "server": {"server", "auth", "comms"},
    "device": {"device", "auth", "comms"},
    "admin": {"admin", "auth", "comms"},
}


def layer_of(module: str) -> str:
    """``server.devices.registry``: ``devices``; ``server.metrics``: ``kit``; ``server.app``: ``root``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in KIT:
        return "kit"
    if parts[1] in COMPOSITION_ROOT:
        return "root"
    return parts[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


SOURCES = sorted(p for p in SRC.rglob("*.py") if "_pb2" not in p.name)


def test_every_server_module_is_in_a_layer() -> None:
    server = [module_name(p) for p in SOURCES if module_name(p).startswith("server.")]
    assert server
    unknown = {m for m in server if layer_of(m) not in RANK}
    assert not unknown, f"modules outside the layers (add their subpackage to LAYERS): {sorted(unknown)}"
    root = {m.split(".")[1] for m in server if m.count(".") == 1 and layer_of(m) in {"kit", "root"}}
    assert root <= KIT | COMPOSITION_ROOT, "only the kit and the composition root live in src/server"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_flow_one_way(path: Path) -> None:
    me = module_name(path)
    program = me.split(".")[0]
    allowed_programs = PROGRAMS_MAY_IMPORT[program]
    ours = set(PROGRAMS_MAY_IMPORT)
    for line, target in imports(path):
        top = target.split(".")[0]
        if top not in ours:
            continue  # the standard library or a dependency
        assert top in allowed_programs, f"{me}:{line} imports {target} ({program}: {allowed_programs})"
        if program == "server" and top == "server" and target != "server":
            here, there = layer_of(me), layer_of(target)
            if there in RANK and here in RANK:
                assert RANK[there] <= RANK[here], (
                    f"{me}:{line} imports {target}: layer {here!r} may not import layer {there!r} (above it)"
                )


WEB_CONSOLE = "server.operator.console"  # a front end of the operator API, never beneath it


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in SOURCES
        if module_name(p).startswith("server.") and not module_name(p).startswith(WEB_CONSOLE)
    ],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_nothing_beside_the_web_console_imports_it(path: Path) -> None:
    """The operator API and its stores serve the CLI and the console alike; only the composition
    root assembles the console."""
    me = module_name(path)
    if layer_of(me) == "root":
        return
    for line, target in imports(path):
        assert not target.startswith(WEB_CONSOLE), f"{me}:{line} imports {target} (the web console)"


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if module_name(p).startswith("server.operator")],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_operators_reach_device_records_through_the_fleet(path: Path) -> None:
    """Device records are read and changed through ``Fleet`` (which knows what is live where),
    never through the store or its guard; the operator side keeps only its own data (audit,
    sounds, sign-in) in the shared data store."""
    me = module_name(path)
    for line, target in imports(path):
        assert not target.startswith(
            ("server.state.guard", "server.state.store", "server.state.redis_store")
        ), f"{me}:{line} imports {target}: read device records through server.fleet.node.Fleet"
