"""Who may call the server: TLS, bearer tokens, and the rule for binding beyond loopback.

* **TLS**: :func:`server_credentials` from a PEM certificate chain and key, with an
  optional client CA that makes it mutual TLS (clients must present a certificate it
  signed). :func:`client_channel` is the client's side (a CA to trust, and a token).
* **Tokens**: :func:`load_tokens` reads a token file (one token per line; blank lines
  and ``#`` comments ignored). :class:`TokenAuth`, a server interceptor, lets a call
  through only with ``authorization: Bearer <token>`` metadata matching one of them
  (compared in constant time); gRPC health checking stays open so that load balancers
  and supervisors need no token. Everything else answers UNAUTHENTICATED.
* **Exposure**: :func:`check_exposure` refuses a non-loopback bind address unless TLS and
  a token are configured, or ``insecure`` is given explicitly (then it returns a warning).

Nothing here knows the service's methods beyond health checking's name.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger("livespt.server")

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods callable without a token (health checking)."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS server.

    Attributes
    ----------
    cert : Path
        Certificate chain of the server.
    key : Path
        Its private key.
    client_ca : Path, optional
        CA bundle client certificates must be signed by (mutual TLS); None: clients
        are not asked for a certificate.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None


def _read(path: Path, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN" not in data:
        raise ValueError(f"{flag} {path}: not a PEM file (no -----BEGIN line)")
    return data


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """The server credentials (gRPC) from PEM files.

    Raises
    ------
    ValueError
        Naming the flag (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``) of a file
        that cannot be read or is not PEM.
    """
    cert = _read(tls.cert, "--tls-cert")
    key = _read(tls.key, "--tls-key")
    ca = _read(tls.client_ca, "--tls-client-ca") if tls.client_ca is not None else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def load_tokens(path: Path, flag: str = "--token-file") -> tuple[str, ...]:
    """Tokens of a token file: one per line; blank lines and ``#`` comments are ignored.

    Raises
    ------
    ValueError
        Naming ``flag``: unreadable, empty, or a token with spaces or shorter than 16
        characters.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({exc})") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.split("#", 1)[0].strip()
        if not token:
            continue
        if any(c.isspace() for c in token) or len(token) < 16:
            raise ValueError(f"{flag} {path}, line {number}: a token is one word of at least "
                             "16 characters (e.g. from: python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))')")
        tokens.append(token)
    if not tokens:
        raise ValueError(f"{flag} {path}: no token in the file")
    return tuple(tokens)


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text.startswith("Bearer "):
                return text[len("Bearer "):].strip()
    return None


class TokenAuth(grpc.aio.ServerInterceptor):
    """Lets a call through only with a valid bearer token (health checking always).

    Parameters
    ----------
    tokens : sequence of str
        The accepted tokens.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    def allowed(self, metadata: Sequence[tuple[str, Any]] | None) -> bool:
        """Whether the metadata carries one of the tokens (constant-time comparison)."""
        given = _bearer(metadata)
        if given is None:
            return False
        got = given.encode()
        ok = False
        for token in self._tokens:  # every token compared: no early exit
            ok |= hmac.compare_digest(got, token)
        return ok

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler, or one that answers UNAUTHENTICATED."""
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if method.startswith(OPEN_PREFIXES) or handler is None:
            return handler
        if self.allowed(handler_call_details.invocation_metadata):
            return handler
        has_token = _bearer(handler_call_details.invocation_metadata) is not None
        message = ("invalid token" if has_token else
                   "this server needs a token: send the metadata 'authorization: Bearer "
                   "<token>' (livespt --token-file FILE)")
        return _denied(handler, message)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED."""
    code = grpc.StatusCode.UNAUTHENTICATED
    des, ser = handler.request_deserializer, handler.response_serializer

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover (a generator)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, des, ser)
    return grpc.unary_unary_rpc_method_handler(unary, des, ser)


def is_loopback(host: str) -> bool:
    """Whether a bind address is loopback only (``localhost``, 127.0.0.0/8, ``::1``)."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tls: bool, token: bool, insecure: bool) -> str | None:
    """Refuse to serve beyond loopback without TLS and a token, unless told ``insecure``.

    Returns
    -------
    str or None
        A warning to log (beyond loopback with ``insecure``, or with only one of the
        two), None when nothing needs saying.

    Raises
    ------
    ValueError
        Beyond loopback without TLS and a token, naming the flags to give.
    """
    if is_loopback(host) or (tls and token):
        return None
    missing = " and ".join(n for n, ok in (("TLS (--tls-cert, --tls-key)", tls),
                                           ("a token (--token-file)", token)) if not ok)
    if not insecure:
        raise ValueError(f"--host {host} is reachable beyond this machine: give {missing}, or "
                         "--insecure to serve without them on a trusted network")
    return (f"serving on {host} without {missing} (--insecure): anyone who can reach this "
            "port can stream, read results and fill the disk")


def client_channel(target: str, options: Sequence[tuple[str, Any]],
                   tls_ca: Path | None = None, token: str | None = None,
                   tls_cert: Path | None = None, tls_key: Path | None = None) -> grpc.Channel:
    """A client channel: TLS when ``tls_ca`` is given, the token on every call.

    Parameters
    ----------
    target : str
        ``host:port``.
    options : sequence of (str, value)
        Channel options (message sizes).
    tls_ca : Path, optional
        PEM CA bundle to verify the server with (enables TLS).
    token : str, optional
        Sent as ``authorization: Bearer <token>`` on every call.
    tls_cert, tls_key : Path, optional
        This client's certificate and key, for a server that asks for one (mutual TLS).

    Raises
    ------
    ValueError
        Naming the flag of a file that cannot be read or is not PEM.
    """
    if tls_ca is not None:
        ca = _read(tls_ca, "--tls-ca")
        cert = _read(tls_cert, "--tls-cert") if tls_cert is not None else None
        key = _read(tls_key, "--tls-key") if tls_key is not None else None
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca, key, cert),
                                      options=list(options))
    else:
        channel = grpc.insecure_channel(target, options=list(options))
    if token is not None:
        channel = grpc.intercept_channel(channel, _TokenMetadata(token))
    return channel


class _TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,
                     grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._pair = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._pair]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None
