"""The device's own distribution (pi/client): only what src/device needs, none of the server's packages.

A Pi installs ``pi-audio-device``, not the service: the wheel holds ``src/device`` and exactly the
``auth``/``comms`` modules it imports (its import closure), declares none of the server-only
dependencies, and importing every device module pulls in none of them either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
CLIENT = ROOT / "pi" / "client"
OURS = {"device", "auth", "comms"}
# What the server needs and a device must never install (nor import).
SERVER_ONLY = {
    "numpy",
    "soxr",
    "soundfile",
    "aiohttp",
    "redis",
    "jinja2",
    "prometheus-client",
    "pyjwt",
    "grpcio-health-checking",
    "grpcio-reflection",
}
SERVER_ONLY_MODULES = ("numpy", "soxr", "soundfile", "aiohttp", "redis", "jinja2", "prometheus_client", "jwt")
ALLOWED = {  # the list, and what pydantic-settings brings anyway
    "grpcio",
    "protobuf",
    "cryptography",
    "opuslib",
    "pydantic",
    "pydantic-settings",
    "python-dotenv",
    "gpiozero",
    "sounddevice",
    "lgpio",
}


def project(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text())["project"]  # type: ignore[no-any-return]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def module_path(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def imported(module: str, path: Path) -> set[str]:
    """Our modules ``module`` imports (absolute or relative), with their parent packages."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            parts = target.split(".")
            if parts[0] in OURS:
                found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return found


def device_closure() -> set[str]:
    """Every module of ours that src/device imports, directly or not (as wheel paths)."""
    todo = [".".join(p.relative_to(SRC).with_suffix("").parts) for p in (SRC / "device").glob("*.py")]
    seen: set[str] = set()
    files: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_path(module)
        if path is None:  # a name imported from a module (``from auth import pki``'s ``auth.pki`` is one)
            continue
        files.add(path.relative_to(SRC).as_posix())
        todo += imported(module, path)
    return files


def test_the_device_declares_none_of_the_server_only_dependencies() -> None:
    device = project(CLIENT / "pyproject.toml")
    declared = names(list(device["dependencies"]))  # type: ignore[call-overload]
    extras = device["optional-dependencies"]
    assert isinstance(extras, dict)
    for requirements in extras.values():
        declared |= names(requirements)
    assert not declared & SERVER_ONLY, declared & SERVER_ONLY
    assert declared <= ALLOWED, declared - ALLOWED
    service = names(list(project(ROOT / "pyproject.toml")["dependencies"]))  # type: ignore[call-overload]
    assert SERVER_ONLY - {"soxr", "soundfile"} <= service  # the list above names real server packages
    assert project(CLIENT / "pyproject.toml")["version"] == project(ROOT / "pyproject.toml")["version"]


def test_the_wheel_holds_exactly_what_src_device_imports(device_wheel: Path) -> None:
    listed = zipfile.ZipFile(device_wheel).namelist()
    modules = {n for n in listed if n.endswith(".py")}
    needed = device_closure()
    assert "device/client.py" in needed and "comms/gen/comms_pb2.py" in needed
    missing, extra = needed - modules, modules - needed
    assert not missing, f"add to py-modules in pi/client/pyproject.toml: {sorted(missing)}"
    assert not extra, f"the device never imports these: drop from pi/client/pyproject.toml {sorted(extra)}"
    assert "auth/tokens.py" not in modules and "comms/gen/admin_pb2.py" not in modules
    metadata = next(n for n in listed if n.endswith(".dist-info/METADATA"))
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in zipfile.ZipFile(device_wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    assert not names(requires) & SERVER_ONLY
    entry_points = next(n for n in listed if n.endswith(".dist-info/entry_points.txt"))
    assert "audio-device = device.__main__:main" in zipfile.ZipFile(device_wheel).read(entry_points).decode()


CHECK_IMPORTS = """
import importlib, pkgutil, sys
import device
from device.__main__ import main
for info in pkgutil.iter_modules(device.__path__, "device."):
    importlib.import_module(info.name)
assert device.__file__.startswith(sys.argv[1]), device.__file__
forbidden = sys.argv[2].split(",")
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in forbidden)))
"""


def test_importing_every_device_module_from_the_wheel_imports_no_server_package(
    device_wheel: Path, tmp_path: Path
) -> None:
    """Only the wheel's files on the path (not src/): it is complete, and numpy & co stay out
    although this environment has them all (any import of theirs would show in sys.modules)."""
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(device_wheel).extractall(unpacked)
    result = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, str(unpacked), ",".join(SERVER_ONLY_MODULES)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the device imported server packages: {result.stdout}"
    for module in SERVER_ONLY_MODULES[:3]:  # the check can fail: these are importable here
        assert subprocess.run([sys.executable, "-c", f"import {module}"], check=False).returncode == 0
