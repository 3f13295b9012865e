"""A real webhook receiver on loopback for the delivery tests: a threaded HTTP server that does what a partner's
receiver should (RFC 8935 §2; docs/webhooks.md, "Receiving"): it verifies each Security Event Token with the broker's
JWKS — signature, `typ`, `iss`, `aud`, one event — answers 202, and de-duplicates on `jti`.

It listens on 127.0.0.1, over plain http or, given a server TLS context, https (`host` names it in `url`, e.g.
"localhost" to match a certificate). It can be told to misbehave for the next requests: answer a status (with
headers, e.g. Retry-After or Location), close the connection without answering, or hold the request until released
(to kill a worker mid-send).

Not a conftest: tests open it with `Receiver(jwks, issuer)` as a context manager.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from broker.adapters.signing import SignatureError, verify_jws
from broker.services.events import SET_MEDIA_TYPE, SET_TYP


@dataclass
class Behaviour:
    """What to do with one request instead of accepting it."""

    status: int | None = None  # answer this status
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    close: bool = False  # close the connection without an answer
    hold: threading.Event | None = None  # wait for this before answering (then accept)


@dataclass
class Received:
    """One request as the receiver saw it."""

    jti: str | None
    claims: dict[str, Any] | None
    headers: dict[str, str]
    answered: int | None  # the status sent; None: closed without an answer
    error: str | None = None  # why the token was refused


class Receiver:
    def __init__(
        self,
        jwks: dict[str, Any],
        issuer: str,
        *,
        audiences: set[str] | None = None,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audiences = audiences  # None: any
        self.requests: list[Received] = []
        self.accepted: dict[str, dict[str, Any]] = {}  # jti → claims, the first time it was accepted
        self.duplicates: Counter[str] = Counter()  # jti → how many times it came again after being accepted
        self._plan: list[Behaviour] = []
        self._lock = threading.Lock()
        self.arrived = threading.Event()  # set whenever a request arrives
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                receiver._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:  # https: the listening socket hands out TLS connections
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{host}:{self.server.server_address[1]}/events"
        self._thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for behaviour in self._plan:
            if behaviour.hold is not None:
                behaviour.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    # -- telling it what to do ------------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500, **kwargs: Any) -> None:
        with self._lock:
            self._plan.extend(Behaviour(status=status, **kwargs) for _ in range(count))

    def close_next(self, count: int) -> None:
        with self._lock:
            self._plan.extend(Behaviour(close=True) for _ in range(count))

    def hold_next(self) -> threading.Event:
        """The next request is verified and recorded, then held until the returned event is set."""
        release = threading.Event()
        with self._lock:
            self._plan.append(Behaviour(hold=release))
        return release

    # -- what it saw ----------------------------------------------------------------------------------------------

    def jtis(self) -> list[str]:
        """Every jti that arrived, in order, duplicates included."""
        return [r.jti for r in self.requests if r.jti is not None]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        body = handler.rfile.read(length)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            behaviour = self._plan.pop(0) if self._plan else None
        claims, error = self._verify(body, headers)
        jti = claims.get("jti") if claims else None
        if behaviour is not None and behaviour.close:
            self._note(Received(jti, claims, headers, None, error))
            handler.close_connection = True
            handler.connection.shutdown(2)  # no answer at all
            return
        if behaviour is not None and behaviour.status is not None:
            self._note(Received(jti, claims, headers, behaviour.status, error))
            self._answer(handler, behaviour.status, behaviour.body, behaviour.headers)
            return
        if error is not None or claims is None:
            self._note(Received(jti, claims, headers, 400, error))
            # RFC 8935 §2.3: an error answer names the error in `err`.
            problem = json.dumps({"err": "invalid_request", "description": error}).encode()
            self._answer(handler, 400, problem, {"Content-Type": "application/json"})
            return
        with self._lock:
            if jti in self.accepted:
                self.duplicates[str(jti)] += 1
            else:
                self.accepted[str(jti)] = claims
        self._note(Received(jti, claims, headers, 202))
        if behaviour is not None and behaviour.hold is not None:
            behaviour.hold.wait(60)
        with contextlib.suppress(OSError):  # the sender may be gone (killed mid-send)
            self._answer(handler, 202, b"", {})

    def _note(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)
        self.arrived.set()

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
        if headers.get("content-type") != SET_MEDIA_TYPE:
            return None, f"Content-Type is {headers.get('content-type')!r}"
        try:
            claims = verify_jws(body.decode("ascii"), self.jwks, typ=SET_TYP)
        except (SignatureError, UnicodeDecodeError) as failure:
            return None, f"signature: {failure}"
        if claims.get("iss") != self.issuer:
            return claims, "wrong issuer"
        if self.audiences is not None and claims.get("aud") not in self.audiences:
            return claims, "wrong audience"
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            return claims, "no jti"
        events = claims.get("events")
        if not isinstance(events, dict) or len(events) != 1:
            return claims, "not exactly one event"
        return claims, None

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
