"""The checkpoint sinks outside the database: a write-once folder and an HTTPS endpoint (a real TLS server on
loopback with its own CA, certificate checked)."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.adapters.checkpoint_sink import DirectorySink, HttpsSink, SinkConflict, SinkError, open_sink

NOTE_3 = "example.test/log\n3\n" + "A" * 43 + "=\n\n— example.test/log AAAA\n"
NOTE_3_OTHER = "example.test/log\n3\n" + "B" * 43 + "=\n\n— example.test/log AAAA\n"
NOTE_5 = "example.test/log\n5\n" + "C" * 43 + "=\n\n— example.test/log AAAA\n"


def test_the_folder_sink_writes_each_checkpoint_once_and_tracks_the_newest(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path / "checkpoints")
    assert sink.latest() is None
    sink.publish(3, NOTE_3)
    sink.publish(3, NOTE_3)  # the same checkpoint again (a heartbeat): fine
    sink.publish(5, NOTE_5)
    assert sink.latest() == NOTE_5
    assert (tmp_path / "checkpoints" / f"{3:020d}.note").read_text() == NOTE_3
    with pytest.raises(SinkConflict, match="different checkpoint of size 3"):
        sink.publish(3, NOTE_3_OTHER)
    assert (tmp_path / "checkpoints" / f"{3:020d}.note").read_text() == NOTE_3  # never replaced
    sink.publish(3, NOTE_3)  # an older one re-exported does not move "latest" back
    assert sink.latest() == NOTE_5
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_an_unwritable_folder_is_a_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SinkError, match="could not write"):
        DirectorySink(blocker / "checkpoints").publish(1, NOTE_3)


def test_open_sink_takes_a_folder_or_an_https_url(tmp_path: Path) -> None:
    assert isinstance(open_sink("checkpoints", instance_path=tmp_path), DirectorySink)
    assert open_sink("checkpoints", instance_path=tmp_path).path == tmp_path / "checkpoints"  # type: ignore[attr-defined]
    assert isinstance(open_sink("https://sink.example/log", instance_path=tmp_path), HttpsSink)
    with pytest.raises(ValueError, match="https"):
        open_sink("http://sink.example/log", instance_path=tmp_path)


# -- HTTPS -----------------------------------------------------------------------------------------------------


class _Store:
    def __init__(self) -> None:
        self.notes: dict[int, str] = {}
        self.fail = False


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test sink CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


@pytest.fixture
def https_sink(tmp_path: Path) -> Iterator[tuple[str, Path, _Store]]:
    ca_file, cert_file, key_file = _certificates(tmp_path)
    store = _Store()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            note = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
            size = int(note.split("\n")[1])
            if store.fail:
                self.send_response(500)
            elif store.notes.setdefault(size, note) != note:
                self.send_response(409)
            else:
                self.send_response(201)
            self.end_headers()

        def do_GET(self) -> None:
            if not store.notes:
                self.send_response(404)
                self.end_headers()
                return
            body = store.notes[max(store.notes)].encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/checkpoints", ca_file, store
    finally:
        server.shutdown()
        server.server_close()


def test_the_https_sink_posts_checkpoints_and_reads_the_newest(https_sink: tuple[str, Path, _Store]) -> None:
    url, ca_file, store = https_sink
    sink = HttpsSink(url, ca_file=str(ca_file))
    assert sink.latest() is None
    sink.publish(3, NOTE_3)
    sink.publish(5, NOTE_5)
    assert sink.latest() == NOTE_5
    with pytest.raises(SinkConflict):
        sink.publish(3, NOTE_3_OTHER)
    store.fail = True
    with pytest.raises(SinkError, match="answered 500"):
        sink.publish(7, NOTE_5)


def test_the_https_sink_checks_the_server_certificate(https_sink: tuple[str, Path, _Store]) -> None:
    url, _, _ = https_sink
    with pytest.raises(SinkError, match="could not reach"):
        HttpsSink(url).publish(3, NOTE_3)  # the system's CAs do not know the test CA


def test_the_https_sink_refuses_plain_http() -> None:
    with pytest.raises(ValueError, match="https"):
        HttpsSink("http://127.0.0.1:9/checkpoints")
