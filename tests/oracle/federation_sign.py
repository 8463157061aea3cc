"""Signs and checks federation messages with other people's tools, for the
interoperability test: lxml (libxml2) computes the exclusive canonical form
of the <federated> element, Python's `cryptography` signs and verifies it
with Ed25519.

    federation_sign.py sign --key NODE.KEY --origin FP --destination FP \
        --key-id ID --id MESSAGE-ID --thread THREAD --sender SENDER \
        --hops N --payload XML [--time MS]

prints one <federation-message> frame: the <federated> element as a person
might write it (attributes out of canonical order, single quotes, spaces
inside the start tag) followed by <signature>, the base64 Ed25519 signature
of lxml's exclusive C14N of that element. The receiver can agree with the
signature only by canonicalizing what it reads, not by copying bytes.
NODE.KEY is a node's private key, RFC 8410 PKCS#8 PEM (`DATA_DIR/node.key`).

    federation_sign.py verify --public-key NODE.PUB < FRAME

reads a <federation-message> frame on standard input, checks its signature
over lxml's exclusive C14N of its <federated> element with the public key
(SubjectPublicKeyInfo PEM, `DATA_DIR/node.pub`), and prints the element's
attributes and payload as `name=value` lines (exit 1 if it does not verify).
"""

import argparse
import base64
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from lxml import etree


def single_quoted(value: str) -> str:
    """`value` as a single-quoted XML attribute value."""
    escaped = (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace("'", "&apos;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )
    return f"'{escaped}'"


def exclusive_c14n(element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


def sign(args: argparse.Namespace) -> None:
    with open(args.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        sys.exit(f"{args.key} is not an Ed25519 private key")
    # The payload must be one element on its own.
    etree.fromstring(args.payload.encode())
    millis = args.time if args.time is not None else int(time.time() * 1000)
    # Reverse of the canonical (alphabetical) order, single quotes, and
    # spaces and a line break inside the start tag.
    attributes = [
        ("time", str(millis)),
        ("thread", args.thread),
        ("sender", args.sender),
        ("origin", args.origin),
        ("key-id", args.key_id),
        ("id", args.id),
        ("hops", str(args.hops)),
        ("destination", args.destination),
    ]
    start = "\n    ".join(f"{name}={single_quoted(value)}" for name, value in attributes)
    written = f"<federated  {start} >{args.payload}</federated>"
    element = etree.fromstring(written.encode())
    signature = base64.b64encode(key.sign(exclusive_c14n(element))).decode()
    print(
        "<federation-message>\n  "
        + written
        + f"\n  <signature>{signature}</signature>\n</federation-message>"
    )


def verify(args: argparse.Namespace) -> None:
    with open(args.public_key, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    if not isinstance(key, Ed25519PublicKey):
        sys.exit(f"{args.public_key} is not an Ed25519 public key")
    root = etree.fromstring(sys.stdin.buffer.read())
    if root.tag != "federation-message":
        sys.exit(f"expected <federation-message>, got <{root.tag}>")
    federated = root.find("federated")
    signature = root.find("signature")
    if federated is None or signature is None or len(federated) != 1:
        sys.exit("a <federation-message> holds one <federated> and one <signature>")
    try:
        key.verify(base64.b64decode(signature.text), exclusive_c14n(federated))
    except InvalidSignature:
        print("the signature does not verify", file=sys.stderr)
        sys.exit(1)
    for name in sorted(federated.attrib):
        print(f"{name}={federated.get(name)}")
    print("payload=" + exclusive_c14n(federated[0]).decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    signing = commands.add_parser("sign", help="print a signed <federation-message>")
    signing.add_argument("--key", required=True, help="the node's private key (PKCS#8 PEM)")
    signing.add_argument("--origin", required=True, help="the sending organism's fingerprint")
    signing.add_argument("--destination", required=True, help="the receiving organism's")
    signing.add_argument("--key-id", required=True, help="the node key's id")
    signing.add_argument("--id", required=True, help="the message's unique id")
    signing.add_argument("--thread", required=True, help="the thread on the sending side")
    signing.add_argument("--sender", required=True, help="who sent it there (user:NAME, agent)")
    signing.add_argument("--hops", type=int, default=0, help="agent deliveries behind it")
    signing.add_argument("--payload", required=True, help="the payload, one XML element")
    signing.add_argument("--time", type=int, help="Unix milliseconds (default: now)")
    signing.set_defaults(run=sign)
    checking = commands.add_parser("verify", help="check a frame read on standard input")
    checking.add_argument("--public-key", required=True, help="the node's public key (PEM)")
    checking.set_defaults(run=verify)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
