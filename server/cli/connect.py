"""The command line's connection to a running server: address, TLS and token flags.

``livespt stream`` and ``livespt tracks`` take the same flags (:func:`add_connection_flags`)
and open their client the same way (:func:`connect`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a connection is made: the parser stays light
    from livespt.server.client import LiveSptClient


def add_connection_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--tls-ca``, ``--token-file``, ``--tls-cert`` and ``--tls-key`` to a command."""
    p.add_argument("--tls-ca", default=None, metavar="PEM",
                   help="with --server: connect with TLS, trusting the CA in this PEM file")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="with --server: send the (first) token in FILE as 'authorization: "
                        "Bearer <token>'")
    p.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="with --tls-ca: this client's certificate, for a server that asks "
                        "for one (mutual TLS)")
    p.add_argument("--tls-key", default=None, metavar="PEM",
                   help="with --tls-cert: its private key")


def connect(args: argparse.Namespace, target: str) -> LiveSptClient:
    """A client of ``target`` with the command's TLS and token flags.

    Raises
    ------
    ValueError
        Naming the flag: an unreadable or non-PEM file, an empty token file, or
        ``--tls-cert`` without ``--tls-key`` (or either without ``--tls-ca``).
    """
    from livespt.server.client import LiveSptClient
    from livespt.server.service.security import load_tokens

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None and args.tls_ca is None:
        raise ValueError("--tls-cert needs --tls-ca (the CA of the server's certificate)")
    token = load_tokens(Path(args.token_file))[0] if args.token_file else None
    return LiveSptClient(target, tls_ca=Path(args.tls_ca) if args.tls_ca else None,
                         token=token,
                         tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                         tls_key=Path(args.tls_key) if args.tls_key else None)
