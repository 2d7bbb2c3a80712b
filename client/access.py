"""How a command line reaches a secured server: the client key and TLS options of the CLIs.

Keys on a command line show in `ps` and shell history, so the key is read from $SER_API_KEY
when --api-key is not given.
"""

import argparse
import base64
import os

from ser_triton.core.contract import STREAM_SOCKET_KEY_PREFIX

API_KEY_VARIABLE = "SER_API_KEY"


def add_arguments(parser) -> None:
    """--api-key, --tls, --tls-ca-certificate on `parser` (or an argument group)."""
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_VARIABLE) or None, metavar="KEY",
                        help=f"the client key an edge with client keys requires, sent as Authorization: Bearer KEY "
                             f"(default ${API_KEY_VARIABLE})")
    parser.add_argument("--tls", action="store_true", help="connect over TLS (an edge that terminates TLS)")
    parser.add_argument("--tls-ca-certificate", metavar="PEM",
                        help="with --tls: check the server's certificate against this CA (or self-signed "
                             "certificate) instead of the system's CAs")


def client_keywords(args: argparse.Namespace) -> dict:
    """SERClient's keyword arguments for what add_arguments parsed."""
    return {"api_key": args.api_key, "tls": args.tls, "tls_ca_certificate": args.tls_ca_certificate}


def socket_key_protocol(key: str) -> str:
    """The WebSocket subprotocol that carries a client key to the edge (core.contract.STREAM_SOCKET_KEY_PREFIX)."""
    return STREAM_SOCKET_KEY_PREFIX + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
