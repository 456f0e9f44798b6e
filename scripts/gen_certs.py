#!/usr/bin/env python3
"""Provision the fleet PKI: CA, server certificate, device certificates.

    gen_certs.py ca      --out DIR
    gen_certs.py issuing-ca --out DIR [--days 365] [--rotate]   (DIR/issuing/, signed by DIR/ca.*)
    gen_certs.py server  --out DIR --dns NAME... --ip ADDR...
    gen_certs.py device  --out DIR --tenant T --device D [--issuing]
    gen_certs.py operator --out DIR --tenant T | --platform --name N --role viewer|operator|admin
    gen_certs.py dev     --out DIR          (a complete development PKI)
    gen_certs.py signing-key --out DIR      (a new Ed25519 token signing key in DIR/signing)
    gen_certs.py revoke  --out DIR --tenant T --device D | --serial HEX | --cert FILE
    gen_certs.py k8s-secrets --out DIR [--namespace audio] \
        | kubectl apply --server-side --field-manager=audio-secrets -f -

Keys are EC P-256, written with mode 0600. Existing material is never
overwritten unless --force is given. Device identity lives in the URI SAN
spiffe://<trust-domain>/tenant/<T>/device/<D>.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

from auth import issuing_ca, pki  # noqa: E402
from auth.errors import AuthError, PkiError  # noqa: E402
from auth.identity import (  # noqa: E402
    DEFAULT_TRUST_DOMAIN,
    Identity,
    validate_id,
    validate_trust_domain,
)
from auth.keys import create_signing_key  # noqa: E402
from auth.operators import OperatorIdentity, Role  # noqa: E402
from auth.revocation import CRL_FILE, revoke  # noqa: E402

DEV_DEVICES = (("acme", "dev-1"), ("acme", "dev-2"), ("globex", "dev-1"))
DEV_OPERATORS = (("acme", "dev-admin", "admin"),)  # make run / make admin / make demo use it
DEV_DNS = ("localhost",)
DEV_IPS = ("127.0.0.1", "::1")
SIGNING_DIR = "signing"


def _say(path: Path, what: str) -> None:
    print(f"created {what}: {path}")


GROUP_READABLE = 0o640


def grant_group(out: Path, gid: int) -> None:
    """Let group ``gid`` read what the server reads (server key, signing keys): owner rw, group r.

    For a container whose user is not the files' owner (the image runs as uid/gid 10001).
    The CA key and device keys are never shared: the server does not need them (the issuing
    CA's key it does: it issues enrolled devices' certificates).
    """
    _, issuing_key = issuing_ca.issuing_paths(out)
    keys = [out / pki.SERVER_KEY, issuing_key, *sorted((out / SIGNING_DIR).glob("*.key"))]
    for path in [p for p in keys if p.exists()]:
        os.chown(path, -1, gid)
        path.chmod(GROUP_READABLE)
        _say(path, f"group {gid} may read it now (0640)")


def cmd_ca(out: Path, force: bool) -> None:
    ca = pki.create_ca()
    pki.write_certified_key(ca, out / pki.CA_CERT, out / pki.CA_KEY, force=force)
    _say(out / pki.CA_CERT, "CA certificate")
    _say(out / pki.CA_KEY, "CA private key (0600; keep it offline in production)")


def cmd_issuing_ca(out: Path, trust_domain: str, days: int, rotate: bool) -> None:
    """An issuing CA signed by the root in DIR (the root's key is needed once, here)."""
    if days < 1:
        raise PkiError(f"--days {days}: an issuing CA lives at least a day")
    root = pki.load_ca(out)
    material = issuing_ca.create_issuing_ca(root, trust_domain, dt.timedelta(days=days))
    retired = issuing_ca.write_issuing_ca(material, out, rotate=rotate)
    cert_path, key_path = issuing_ca.issuing_paths(out)
    if retired is not None:
        _say(
            retired,
            "the previous issuing CA's certificate (its devices keep working until it expires "
            "or is revoked: gen_certs.py revoke --cert FILE)",
        )
    _say(
        cert_path,
        f"issuing CA (pathLen 0; names: URIs of {trust_domain} only; until "
        f"{material.cert.not_valid_after_utc:%Y-%m-%d})",
    )
    _say(key_path, "issuing CA private key (0600; the server's, in a Secret of its own)")


def cmd_server(out: Path, dns: Sequence[str], ips: Sequence[str], force: bool) -> None:
    ca = pki.load_ca(out)
    server = pki.issue_server_cert(ca, list(dns), list(ips))
    pki.write_certified_key(server, out / pki.SERVER_CERT, out / pki.SERVER_KEY, force=force)
    names = ", ".join([*dns, *ips])
    _say(out / pki.SERVER_CERT, f"server certificate for {names}")
    _say(out / pki.SERVER_KEY, "server private key (0600)")


def cmd_device(
    out: Path, tenant: str, device: str, trust_domain: str, force: bool, issuing: bool = False
) -> None:
    """A device certificate signed by the root, or (``issuing``) by the issuing CA: then the
    certificate file holds the device certificate followed by the issuing CA's."""
    identity = Identity(validate_id(tenant, "tenant"), validate_id(device, "device"))
    cert_path, key_path = pki.device_paths(out, identity)
    if issuing:
        ca = issuing_ca.load_issuing_ca(out)
        material = pki.issue_device_cert(ca, identity, trust_domain)
        issuing_ca.write_chain(material, ca.cert, cert_path, key_path, force=force)
    else:
        material = pki.issue_device_cert(pki.load_ca(out), identity, trust_domain)
        pki.write_certified_key(material, cert_path, key_path, force=force)
    via = " (leaf + issuing CA)" if issuing else ""
    _say(cert_path, f"device certificate for {identity.spiffe_id(trust_domain)}{via}")
    _say(key_path, "device private key (0600)")


def cmd_operator(out: Path, tenant: str | None, name: str, role: str, trust_domain: str, force: bool) -> None:
    """An operator's certificate: one tenant's (or, with --platform, every tenant's), with its role."""
    ca = pki.load_ca(out)
    operator = OperatorIdentity(validate_id(name, "operator"), Role.parse(role), tenant)
    material = pki.issue_operator_cert(ca, operator, trust_domain)
    cert_path, key_path = pki.operator_paths(out, operator)
    pki.write_certified_key(material, cert_path, key_path, force=force)
    _say(
        cert_path, f"operator certificate for {operator.spiffe_id(trust_domain)}, role {operator.role.label}"
    )
    _say(key_path, "operator private key (0600)")


def cmd_signing_key(out: Path) -> None:
    key = create_signing_key(out / SIGNING_DIR)
    _say(
        out / SIGNING_DIR / f"{key.kid}.key",
        f"token signing key {key.kid} (Ed25519, 0600; servers sign with the newest)",
    )


def cmd_revoke(
    out: Path, tenant: str | None, device: str | None, serials: Sequence[str], certs: Sequence[Path] = ()
) -> None:
    """Add serials to the root's CRL: root-issued devices, issuing CAs (which revokes every device
    they issued) and devices an issuing CA issued (serials are matched whoever issued them)."""
    ca = pki.load_ca(out)
    targets: list[int] = [pki.load_certificate(path).serial_number for path in certs]
    if tenant or device:
        if not (tenant and device):
            raise PkiError("give both --tenant and --device, or --serial")
        cert_path, _ = pki.device_paths(
            out, Identity(validate_id(tenant, "tenant"), validate_id(device, "device"))
        )
        if not cert_path.exists():
            raise PkiError(f"no certificate for {tenant}/{device} at {cert_path}; revoke it by --serial")
        targets.append(pki.load_certificate(cert_path).serial_number)
    for text in serials:
        try:
            targets.append(int(text.replace(":", ""), 16))
        except ValueError:
            raise PkiError(f"--serial {text!r} is not a hexadecimal serial number") from None
    if not targets:
        raise PkiError("nothing to revoke: give --tenant and --device, --serial or --cert")
    listed = revoke(ca, out / CRL_FILE, targets)
    for serial in targets:
        print(f"revoked serial {serial:x}")
    _say(
        out / CRL_FILE,
        f"CRL signed by the CA, {len(listed.serials)} revoked certificate(s); servers reload it",
    )


def secret(name: str, namespace: str, files: dict[str, bytes], kind: str = "Opaque") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "audio-server"},
        },
        "type": kind,
        "data": {key: base64.b64encode(value).decode() for key, value in sorted(files.items())},
    }


K8S_APPLY = "kubectl apply --server-side --field-manager=audio-secrets -f -"


def cmd_k8s_secrets(out: Path, namespace: str) -> None:
    """Print the Secrets the Deployment mounts, as a JSON List for server-side apply (K8S_APPLY):
    three, and the issuing CA's (``audio-issuing-ca``) when DIR has one.

    Server-side apply: a plain ``kubectl apply`` would copy every key into the
    ``kubectl.kubernetes.io/last-applied-configuration`` annotation of each Secret.

    Printed, never written to disk: pipe it to kubectl (or a sealed-secrets tool).
    """
    tls = pki.load_certified_key(out / pki.SERVER_CERT, out / pki.SERVER_KEY)
    ca_files = {"ca.crt": (out / pki.CA_CERT).read_bytes()}
    if (out / CRL_FILE).exists():
        ca_files[CRL_FILE] = (out / CRL_FILE).read_bytes()
    keys = sorted((out / SIGNING_DIR).glob("*.key")) if (out / SIGNING_DIR).is_dir() else []
    if not keys:
        raise PkiError(f"no signing key in {out / SIGNING_DIR}: run gen_certs.py signing-key --out {out}")
    items = [
        secret(
            "audio-server-tls",
            namespace,
            {"tls.crt": tls.cert_pem(), "tls.key": tls.key_pem()},
            "kubernetes.io/tls",
        ),
        secret("audio-fleet-ca", namespace, ca_files),
        secret("audio-signing-keys", namespace, {key.name: key.read_bytes() for key in keys}),
    ]
    cert_path, key_path = issuing_ca.issuing_paths(out)
    if key_path.exists():  # the enrolment service's key: a Secret of its own (never the root's key)
        issuing = pki.load_certified_key(cert_path, key_path)
        files = {cert_path.name: issuing.cert_pem(), key_path.name: issuing.key_pem()}
        items.append(secret("audio-issuing-ca", namespace, files))
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))


def cmd_dev(out: Path, trust_domain: str, force: bool) -> None:
    cmd_ca(out, force)
    cmd_server(out, DEV_DNS, DEV_IPS, force)
    for tenant, device in DEV_DEVICES:
        cmd_device(out, tenant, device, trust_domain, force)
    for tenant, name, role in DEV_OPERATORS:
        cmd_operator(out, tenant, name, role, trust_domain, force)
    cmd_signing_key(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gen_certs.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", type=Path, required=True, help="PKI directory (e.g. certs/prod)")
        p.add_argument("--force", action="store_true", help="overwrite existing material")

    common(sub.add_parser("ca", help="create the fleet CA"))
    p = sub.add_parser(
        "issuing-ca",
        help="create the issuing CA in DIR/issuing (signed by DIR/ca.*: pathLen 0, URIs of the trust "
        "domain only); the server issues enrolled devices' certificates with it",
    )
    p.add_argument("--out", type=Path, required=True, help="PKI directory (with the root's ca.key)")
    p.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    p.add_argument("--days", type=int, default=issuing_ca.ISSUING_VALIDITY.days, help="lifetime")
    p.add_argument(
        "--rotate",
        action="store_true",
        help="replace an existing issuing CA (its certificate is kept in DIR/issuing/retired)",
    )
    p = sub.add_parser("server", help="issue the server certificate (signed by DIR/ca.*)")
    common(p)
    p.add_argument("--dns", nargs="*", default=[], metavar="NAME", help="DNS names")
    p.add_argument("--ip", nargs="*", default=[], metavar="ADDR", help="IP addresses")
    p = sub.add_parser("device", help="issue a device certificate")
    common(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    p.add_argument(
        "--issuing",
        action="store_true",
        help="sign with the issuing CA (DIR/issuing) instead of the root; the file holds leaf + CA",
    )
    p = sub.add_parser(
        "operator", help="issue an operator certificate: DIR/operators/TENANT/NAME.* (role signed in)"
    )
    common(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant this operator sees and commands")
    who.add_argument("--platform", action="store_true", help="a platform operator: every tenant")
    p.add_argument("--name", required=True, help="the operator's name (a-z, 0-9, - and _)")
    p.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    p.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    p = sub.add_parser(
        "dev", help="a complete development PKI (CA, localhost server, 3 devices, operator acme/dev-admin)"
    )
    common(p)
    p.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    p = sub.add_parser("signing-key", help="a new Ed25519 token signing key in DIR/signing")
    p.add_argument("--out", type=Path, required=True, help="PKI directory")
    for name in ("server", "dev", "signing-key", "issuing-ca"):
        sub.choices[name].add_argument(
            "--group",
            type=int,
            metavar="GID",
            help="also let this group read the server and signing keys (0640), e.g. 10001 for the "
            "Docker image's user; the CA and device keys stay 0600",
        )
    p = sub.add_parser(
        "revoke", help="revoke device or issuing CA certificates (writes DIR/crl.pem, signed by the root)"
    )
    p.add_argument("--out", type=Path, required=True, help="PKI directory")
    p.add_argument("--tenant")
    p.add_argument("--device")
    p.add_argument("--serial", nargs="*", default=[], metavar="HEX", help="certificate serial numbers")
    p.add_argument(
        "--cert",
        nargs="*",
        default=[],
        type=Path,
        metavar="FILE",
        help="certificate files (the first certificate of each): a device's, an issuing CA's",
    )
    p = sub.add_parser(
        "k8s-secrets",
        help=f"print the Kubernetes Secrets (JSON) for: {K8S_APPLY} (no key copy in an annotation)",
    )
    p.add_argument("--out", type=Path, required=True, help="PKI directory")
    p.add_argument("--namespace", default="audio")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "trust_domain", None):
            validate_trust_domain(args.trust_domain)
        if args.command == "ca":
            cmd_ca(args.out, args.force)
        elif args.command == "issuing-ca":
            cmd_issuing_ca(args.out, args.trust_domain, args.days, args.rotate)
        elif args.command == "server":
            cmd_server(args.out, args.dns, args.ip, args.force)
        elif args.command == "device":
            cmd_device(args.out, args.tenant, args.device, args.trust_domain, args.force, args.issuing)
        elif args.command == "operator":
            tenant = None if args.platform else validate_id(args.tenant, "tenant")
            cmd_operator(args.out, tenant, args.name, args.role, args.trust_domain, args.force)
        elif args.command == "dev":
            cmd_dev(args.out, args.trust_domain, args.force)
        elif args.command == "signing-key":
            cmd_signing_key(args.out)
        elif args.command == "revoke":
            cmd_revoke(args.out, args.tenant, args.device, args.serial, args.cert)
        elif args.command == "k8s-secrets":
            cmd_k8s_secrets(args.out, args.namespace)
        if getattr(args, "group", None) is not None:
            grant_group(args.out, args.group)
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
