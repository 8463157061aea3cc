"""Makes an organism identity and a signed privileged command with other
people's tools, for the interoperability test: the key pair with the
`cryptography` package, the payload's exclusive canonical form with lxml
(libxml2), the signature with `cryptography` again.

Usage: ed25519_interop.py DIR USER TAG
Writes DIR/identity.key (PKCS#8 PEM), DIR/identity.pub (SubjectPublicKeyInfo
PEM) and DIR/grant.xml, a signed <user-grant user=USER tag=TAG/>.
"""

import base64
import datetime
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lxml import etree


def main() -> None:
    out, user, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    key = Ed25519PrivateKey.generate()
    with open(os.path.join(out, "identity.key"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(os.path.join(out, "identity.pub"), "wb") as f:
        f.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Written the way a person would: attributes in any order, spaces,
    # single quotes; lxml's exclusive C14N is what gets signed.
    document = (
        "<privileged-command>\n"
        f"  <payload expires='{stamp(now + datetime.timedelta(minutes=10))}' id='py-{os.getpid()}'"
        f"   issued='{stamp(now)}'>\n"
        f"    <user-grant tag='{tag}'  user='{user}' />\n"
        "  </payload>\n"
        "</privileged-command>"
    )
    root = etree.fromstring(document)
    payload = root.find("payload")
    canonical = etree.tostring(payload, method="c14n", exclusive=True, with_comments=False)
    signature = etree.SubElement(root, "signature", algorithm="ed25519")
    signature.text = base64.b64encode(key.sign(canonical)).decode()
    with open(os.path.join(out, "grant.xml"), "wb") as f:
        f.write(etree.tostring(root))


if __name__ == "__main__":
    main()
