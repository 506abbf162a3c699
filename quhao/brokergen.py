"""`quhao broker gen`: a hall's Mosquitto configuration from its site file.

Writes into one folder:
- `mosquitto.conf`: three listeners, each with its own settings
  (`per_listener_settings true`); persistence; TCP_NODELAY; queue limits;
- `passwd`: every user's password, PBKDF2-SHA512 in Mosquitto's `$7$` format;
  `passwd-ws`: the same for `display` alone (the websockets listener);
- `acl`: what each user may publish and read (below);
- `ca/`: a private CA; `server.crt`/`server.key` for the TLS listener;
- `credentials/{user}/`: what one user's host needs — `password`, `ca.crt`, and
  (all but the hall) `client.crt`, `client.key`.

Listeners — who gets in, and as whom:
- loopback `port` on 127.0.0.1: every user, with its password (the hall and tools
  on the hall server; the tests and the demo run their devices here too);
- TLS `tls_port` on the LAN address: kiosks, counters and read-only users, with a
  client certificate signed by the hall's CA. The certificate is the identity
  (`require_certificate`, `use_identity_as_username`): its CN is the user name, a
  user name or password sent there is ignored, so no certificate logs in under
  another user's name;
- websockets `ws_port` on the loopback interface: `display` only, with its password
  (its password file holds nothing else) — for a local web gateway that serves hall
  screens; browsers never hold broker credentials. Bound by interface name (`lo`):
  Mosquitto 2.0.11's libwebsockets binds an IP address given here to every address.

Sessions: on every listener the client id is replaced by the user name
(`use_username_as_clientid`), so nobody can take over another's session — nobody
can knock the hall or a kiosk off, or fire its offline Last Will, by connecting with
its client id. Two connections of one user do take each other over, so each kind of
read-only program has its own user and they run side by side: `display` (the web
gateway for hall screens), `ctl` (`quhao ctl`), `monitor` (the demo's live view, or
any other read-only tool), `voice` (`quhao voice` on its own: the call events only).
Two copies of one program share a session: the newer takes it over. The hall gets no
client certificate: it connects on loopback only.

ACL (the same on every listener; anonymous clients are refused everywhere):
- `hall` reads and writes everything under `quhao/{site}/`;
- a device (kiosk or counter) publishes requests only under
  `hall/req/{its name}/…`, reads only its own `reply/{its name}` and the public
  state (hall state, window state and profile, the hall's availability), and
  reads and writes its own `device/{its name}/…`;
- a rater `rater-W{n}` (window n's touch rating screen, whose credentials the
  screens daemon holds) publishes only `hall/req/rater-W{n}/rate` and reads its own
  replies; the hall takes a rating from it for window n only;
- `office` (`quhao cases`, `quhao appointments`) publishes requests only under
  `hall/req/office/…` and reads its own replies; who acts is proven per request;
- read-only users read the hall state, windows, events, and devices'
  availability and status, and publish nothing.
A Last Will is a publish like any other: a kiosk's Will on the hall's availability
is dropped when it fires.

Run it again after adding devices: existing passwords, the CA and existing client
certificates are kept, new ones are added; send Mosquitto SIGHUP to reload.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from quhao.config import SiteConfig

if TYPE_CHECKING:  # cryptography itself is imported only when certificates are made
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

PBKDF2_ROUNDS = 1000
HALL_USER, DISPLAY_USER, CTL_USER, MONITOR_USER = "hall", "display", "ctl", "monitor"
OFFICE_USER = "office"  # `quhao cases`, `quhao appointments`: asks the hall, reads its replies
# `quhao voice` on its own (a hall with loudspeakers but no screens daemon): it hears the
# calls and nothing else, and has its own session beside `display`.
VOICE_USER = "voice"
READ_ONLY_USERS = (DISPLAY_USER, CTL_USER, MONITOR_USER)
# Users that only ever connect on the hall server's loopback: no client certificate.
LOOPBACK_ONLY_USERS = (HALL_USER,)
# The only user the websockets listener lets in.
WEBSOCKETS_USERS = (DISPLAY_USER,)


def password_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ROUNDS)
    return (
        f"$7${PBKDF2_ROUNDS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )


def rater_users(config: SiteConfig) -> list[str]:
    """`rater-W{n}`: window n's touch rating screen, driven by the screens daemon."""
    return [f"rater-W{number}" for number in config.windows]


def users(config: SiteConfig) -> list[str]:
    return [
        HALL_USER,
        *config.kiosks,
        *config.counters,
        *rater_users(config),
        OFFICE_USER,
        *READ_ONLY_USERS,
        VOICE_USER,
    ]


def acl(config: SiteConfig) -> str:
    root = f"quhao/{config.site.id}"
    public_reads = [
        f"{root}/hall/state",
        f"{root}/window/+/state",
        f"{root}/window/+/profile",
        f"{root}/device/{HALL_USER}/availability",
    ]
    lines = [
        "# Generated by `quhao broker gen`; anonymous clients have no access at all.",
        "",
        f"user {HALL_USER}",
        f"topic readwrite {root}/#",
        "",
    ]
    for device in [*config.kiosks, *config.counters]:
        lines += [
            f"user {device}",
            f"topic write {root}/hall/req/{device}/#",
            f"topic read {root}/reply/{device}",
            f"topic read {root}/reply/{device}/#",
            f"topic readwrite {root}/device/{device}/#",
            *(f"topic read {topic}" for topic in public_reads),
            "",
        ]
    for rater in rater_users(config):
        lines += [  # it may ask the hall one thing, for its own window: rate
            f"user {rater}",
            f"topic write {root}/hall/req/{rater}/rate",
            f"topic read {root}/reply/{rater}",
            f"topic read {root}/reply/{rater}/#",
            "",
        ]
    lines += [  # the hall office asks the hall as itself; who acts is proven per request
        f"user {OFFICE_USER}",
        f"topic write {root}/hall/req/{OFFICE_USER}/#",
        f"topic read {root}/reply/{OFFICE_USER}",
        f"topic read {root}/reply/{OFFICE_USER}/#",
        "",
    ]
    for reader in READ_ONLY_USERS:
        lines += [
            f"user {reader}",
            f"topic read {root}/hall/state",
            f"topic read {root}/window/#",
            f"topic read {root}/event/#",
            f"topic read {root}/device/+/availability",
            f"topic read {root}/device/+/status",
            "",
        ]
    lines += [  # the announcer: the two events it speaks, nothing more
        f"user {VOICE_USER}",
        f"topic read {root}/event/ticket.called",
        f"topic read {root}/event/ticket.recalled",
        "",
    ]
    return "\n".join(lines)


def mosquitto_conf(
    out: Path, port: int, tls_port: int, ws_port: int, lan_bind: str, run_as: str, data: Path
) -> str:
    return f"""# Generated by `quhao broker gen` for a hall. Paths are absolute.
# Started as root, Mosquitto drops to this user (which must read the files here).
user {run_as}

# Who may log in, as whom, and what they may do is set per listener below.
# On every listener the client id is replaced by the user name
# (use_username_as_clientid): no client can take over another's session.
per_listener_settings true

persistence true
persistence_location {data}/
autosave_interval 30

# Bounded queues: a device that is away long must not exhaust the broker.
max_inflight_messages 50
max_queued_messages 1000
max_packet_size 262144
# Nagle + delayed ACK cost 40-90 ms per request/response without this.
set_tcp_nodelay true

log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages true

# Daemons and tools on the hall server itself: every user, with its password.
listener {port} 127.0.0.1
allow_anonymous false
password_file {out}/passwd
acl_file {out}/acl
use_username_as_clientid true

# Kiosks, counters and read-only users on the LAN. The client certificate is
# the identity: its CN is the user name (a password sent here is not used).
listener {tls_port} {lan_bind}
cafile {out}/ca/ca.crt
certfile {out}/server.crt
keyfile {out}/server.key
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
allow_anonymous false
acl_file {out}/acl
use_username_as_clientid true

# A web gateway on the hall server (browsers never hold broker credentials):
# only the read-only user `{DISPLAY_USER}` is in its password file. Loopback only,
# named by interface: given 127.0.0.1, libwebsockets would listen on every address.
listener {ws_port} lo
protocol websockets
allow_anonymous false
password_file {out}/passwd-ws
acl_file {out}/acl
use_username_as_clientid true
"""


def generate(
    config: SiteConfig,
    out: Path,
    *,
    port: int = 1883,
    tls_port: int = 8883,
    ws_port: int = 9001,
    lan_bind: str = "0.0.0.0",
    hosts: tuple[str, ...] = (),
    run_as: str = "mosquitto",
    data_dir: Path | None = None,
) -> Path:
    out = out.resolve()
    data = (data_dir or out / "data").resolve()
    data.mkdir(parents=True, exist_ok=True)
    credentials = out / "credentials"
    passwords = {user: _password(credentials / user) for user in users(config)}
    hashes = {user: password_hash(p) for user, p in passwords.items()}
    _write(out / "passwd", "".join(f"{u}:{h}\n" for u, h in hashes.items()), 0o600)
    _write(out / "passwd-ws", "".join(f"{u}:{hashes[u]}\n" for u in WEBSOCKETS_USERS), 0o600)
    _write(out / "acl", acl(config), 0o644)
    ca_key, ca_cert = _ca(out / "ca", config.site.id)
    names = tuple(dict.fromkeys((*hosts, socket.gethostname(), "localhost", "127.0.0.1", "::1")))
    _issue(
        ca_key,
        ca_cert,
        out / "server.crt",
        out / "server.key",
        f"quhao-{config.site.id}",
        names,
        server=True,
    )
    ca_pem = (out / "ca" / "ca.crt").read_bytes()
    for user in passwords:
        folder = credentials / user
        _write_bytes(folder / "ca.crt", ca_pem, 0o644)
        if user in LOOPBACK_ONLY_USERS or (folder / "client.crt").exists():
            continue
        # The CN is the user name the TLS listener gives this certificate.
        crt, key = folder / "client.crt", folder / "client.key"
        _issue(ca_key, ca_cert, crt, key, user, (), server=False)
    conf = out / "mosquitto.conf"
    _write(conf, mosquitto_conf(out, port, tls_port, ws_port, lan_bind, run_as, data), 0o644)
    _hand_over(out, data, run_as)
    return conf


def _hand_over(out: Path, data: Path, run_as: str) -> None:
    """Give the broker's own files to the user Mosquitto runs as (when we can)."""
    if os.geteuid() != 0 or run_as == "root":
        return
    import pwd

    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        return
    for path in (out / "passwd", out / "passwd-ws", out / "acl", out / "server.key", data):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _password(folder: Path) -> str:
    path = folder / "password"
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    _write(path, value + "\n", 0o600)
    return value


def _write(path: Path, text: str, mode: int) -> None:
    _write_bytes(path, text.encode(), mode)


def _write_bytes(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


# ---- certificates -----------------------------------------------------------


def _save(key: EllipticCurvePrivateKey, cert: Certificate, key_path: Path, cert_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = serialization.Encoding.PEM
    _write_bytes(
        key_path,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write_bytes(cert_path, cert.public_bytes(pem), 0o644)


def _ca(folder: Path, site: str) -> tuple[EllipticCurvePrivateKey, Certificate]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key_path, cert_path = folder / "ca.key", folder / "ca.crt"
    if key_path.exists() and cert_path.exists():
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):  # what this function writes
            raise TypeError(f"{key_path}: {type(loaded).__name__}, not the CA's EC key")
        return loaded, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"quhao {site} hall CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _save(key, cert, key_path, cert_path)
    return key, cert


def _issue(
    ca_key: EllipticCurvePrivateKey,
    ca_cert: Certificate,
    cert_path: Path,
    key_path: Path,
    common_name: str,
    names: tuple[str, ...],
    *,
    server: bool,
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if names:
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _save(key, cert, key_path, cert_path)
