"""A real HTTP server that receives webhooks for the tests and benchmarks: it records every
request and answers as it is told (a status, a delay, a redirect, an answer held back)."""

from __future__ import annotations

import contextlib
import datetime
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ocr_testkit.stack import free_port
from ocr_testkit.waits import wait_until


@dataclass(frozen=True)
class Answer:
    """How the receiver answers one request."""

    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Answer only once this is set (or the receiver stops): a receiver that hangs.
    hold: threading.Event | None = None


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request was complete


class WebhookReceiver:
    """Records the webhooks sent to ``url``; answers with ``answers`` in turn, then ``default``."""

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ):
        self.host = host
        self.tls = tls
        self.port = port or free_port()
        self.received: list[Received] = []
        self.answers: list[Answer] = []
        self.default = Answer()
        self.broken_answers = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = receiver._record(self.path, dict(self.headers.items()), body)
                if answer.hold is not None:
                    while not answer.hold.wait(0.05) and not receiver._stopped.is_set():
                        pass
                if answer.delay_s:
                    receiver._stopped.wait(answer.delay_s)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                try:
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    # The sender hung up before reading the whole answer.
                    receiver.broken_answers += 1

            def log_message(self, *_args: object) -> None:
                pass

        self._stopped.clear()
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port (a receiver that is down refuses connections)."""
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            self.received.append(Received(path, headers, body, time.monotonic()))
            return self.answers.pop(0) if self.answers else self.default

    def wait_for_broken_answers(self, count: int, timeout_s: float = 20.0) -> None:
        wait_until(lambda: self.broken_answers >= count, timeout_s, f"{count} answer(s) cut short")

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        """The requests received, once there are at least ``count``."""
        wait_until(
            lambda: len(self.received) >= count,
            timeout_s,
            f"{count} webhook(s) at {self.url}",
            interval_s=0.02,
            state=lambda: len(self.received),
        )
        return list(self.received)


@contextlib.contextmanager
def receiving(
    port: int | None = None, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(port, host, tls).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def tls_contexts(names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A receiver's TLS context with a certificate for ``names`` from a CA made for the test,
    and a client context that trusts only that CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
        issuer_key: ec.EllipticCurvePrivateKey | None, ca: bool,
    ) -> x509.Certificate:  # fmt: skip
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
        return builder.sign(issuer_key or key, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = certificate("webhook test CA", ca_key, None, None, ca=True)
    leaf = certificate(names[0], leaf_key, ca.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
        with open(cert_path, "wb") as out:
            out.write(leaf.public_bytes(pem))
        with open(key_path, "wb") as out:
            out.write(
                leaf_key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server, client
