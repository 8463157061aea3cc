#!/usr/bin/env python3
"""Check an AgentServer audit export offline, with the owner's public key.

    python3 verify_audit_export.py EXPORT identity.pub

It needs Python 3.11 and the `cryptography` package, nothing else: it does
what `agentserver audit verify --file EXPORT --owner identity.pub` does.
Certificates carry the exact bytes the owner signed, and checkpoints are
fixed statements, so no XML canonicalisation is needed here.

1. Every node certificate and node-key revocation must carry the owner's
   Ed25519 signature over its payload bytes.
2. The entries must continue the anchor one by one, each hash being
   SHA-256(previous hash || entry bytes).
3. Every checkpoint entry must state the entry count and head hash before
   it, name this organism, and be signed by a node key that a certificate
   lets sign `audit` at the checkpoint's time. A checkpoint made at or
   after its key's revocation (the revocation payload's `issued`) vouches
   for nothing: it counts as an ordinary entry.
4. The last entry must be a checkpoint that vouches, and the `end` line
   must agree.

Exit 0 with a summary when all of it holds; otherwise exit 1 naming the
first thing that does not (the line, the entry or the certificate).
The format is described in docs/operations.md ("Proving what the organism
carried").
"""

import base64
import hashlib
import re
import sys
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HEADER = b"agentserver-audit-export 1"
GENESIS = bytes(32)
CLOCK_SKEW = 60
MAX_LINE = 4096
MAX_BODY = 256 << 20
CHECKPOINT = re.compile(
    r'<audit-checkpoint count="(\d{1,19})" head="([0-9a-f]{64})" key-id="([0-9a-f]{16})" '
    r'organism="([0-9a-f]{64})" signature="([^"]*)" time="(\d{1,19})"></audit-checkpoint>'
)
INSTANT = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?[Zz]")


class Refused(Exception):
    """The export does not verify; the message says where."""


def instant(text):
    """Unix seconds of an RFC 3339 UTC instant such as 2026-12-28T00:00:00Z."""
    match = INSTANT.fullmatch(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a UTC instant")
    parts = [int(p) for p in match.groups()[:6]]
    parts[5] = min(parts[5], 59)
    return int(datetime(*parts, tzinfo=timezone.utc).timestamp())


def format_instant(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_signature(key, signature, message):
    try:
        key.verify(signature, message)
        return True
    except InvalidSignature:
        return False


def signed_command(record_id, signature_b64, payload, owner, name):
    """The one command element of a record the owner signed, and its `issued`."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        signature = b""
    if len(signature) != 64 or not verify_signature(owner, signature, payload):
        raise Refused(f"{name} {record_id}: the owner's signature does not verify")

    def invalid(reason):
        return Refused(f"{name} {record_id}: {reason}")

    try:
        root = ElementTree.fromstring(payload)
    except ElementTree.ParseError as error:
        raise invalid(str(error)) from None
    if root.get("id") != record_id:
        raise invalid("its payload has another id")
    try:
        issued = instant(root.get("issued"))
    except ValueError:
        raise invalid("its payload has no `issued`") from None
    children = list(root)
    if len(children) != 1 or children[0].tag != name:
        raise invalid(f"its payload is not one <{name}>")
    return children[0], issued


class Certificate:
    """A node certificate whose owner signature was checked."""

    def __init__(self, cert_id, signature_b64, payload, owner):
        def invalid(reason):
            return Refused(f"certificate {cert_id}: {reason}")

        element, self.issued = signed_command(
            cert_id, signature_b64, payload, owner, "node-certificate"
        )
        try:
            raw = base64.b64decode(element.get("public-key", ""), validate=True)
            self.key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise invalid("`public-key` is not an Ed25519 public key") from None
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        if element.get("key-id") != self.key_id:
            raise invalid("`key-id` is not the start of the key's fingerprint")
        self.purposes = set((element.get("purpose") or "").split())
        try:
            self.not_after = instant(element.get("not-after"))
        except ValueError:
            raise invalid("`not-after` is not a UTC instant") from None
        self.id = cert_id

    def covers(self, seconds, purpose):
        return (
            purpose in self.purposes
            and seconds + CLOCK_SKEW >= self.issued
            and seconds <= self.not_after
        )


class Revocation:
    """A node-key revocation whose owner signature was checked."""

    def __init__(self, record_id, signature_b64, payload, owner):
        element, self.issued = signed_command(
            record_id, signature_b64, payload, owner, "node-revoke"
        )
        self.key_id = element.get("key-id") or ""
        if not re.fullmatch(r"[0-9a-f]{16}", self.key_id):
            raise Refused(f"node-revoke {record_id}: `key-id` is not 16 lowercase hex digits")
        self.id = record_id

    def revokes(self, key_id, seconds):
        return key_id == self.key_id and seconds >= self.issued


class Records:
    """Reads an export's lines and length-given bodies, counting lines."""

    def __init__(self, stream):
        self.stream = stream
        self.line_number = 0

    def fail(self, reason):
        return Refused(f"line {self.line_number}: {reason}")

    def line(self):
        data = self.stream.readline(MAX_LINE)
        if not data.endswith(b"\n"):
            if len(data) >= MAX_LINE:
                self.line_number += 1
                raise self.fail("the line is too long")
            return None
        self.line_number += 1
        try:
            return data[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("not UTF-8") from None

    def body(self, length, what):
        data = self.stream.read(length + 1)
        if len(data) < length + 1:
            raise Refused(f"the export is cut short after the start of {what}: there is no `end` line")
        if data[-1:] != b"\n":
            raise self.fail(f"{what} is not {length} bytes long")
        self.line_number += data.count(b"\n")
        return data[:-1]

    def number(self, text):
        if not text.isdigit() or not text.isascii():
            raise self.fail(f"{text!r} is not a number")
        return int(text)

    def length(self, text):
        length = self.number(text)
        if length > MAX_BODY:
            raise self.fail(f"a body of {length} bytes is too long")
        return length


def entry_attribute(entry, name):
    start_tag = entry[: entry.find(">")] if ">" in entry else ""
    match = re.search(f' {re.escape(name)}="([^"]*)"', start_tag)
    return match.group(1) if match else None


def entry_content(entry):
    start = entry.find(">")
    end = entry.rfind("</audit-entry>")
    if start < 0 or end < start:
        return None
    return entry[start + 1 : end]


def check_checkpoint(seq, entry, previous_seq, previous, organism, certificates, revocations):
    """(time_ms, certificate id) of a checkpoint that vouches, or the reason
    (a string) why one made after its key's revocation vouches for nothing."""

    def fail(reason):
        return Refused(f"checkpoint at entry {seq}: {reason}")

    content = entry_content(entry)
    match = CHECKPOINT.fullmatch(content or "")
    if not match:
        raise fail("not a well-formed audit checkpoint")
    count, head, key_id, named, signature_b64, time_ms = match.groups()
    count, time_ms = int(count), int(time_ms)
    if named != organism:
        raise fail(f"it names organism {named}, not this one")
    if count != previous_seq or head != previous.hex():
        raise fail(
            f"it vouches for entry {count} with head {head}, "
            f"but it follows entry {previous_seq} with head {previous.hex()}"
        )
    seconds = time_ms // 1000
    revocation = next((r for r in revocations if r.revokes(key_id, seconds)), None)
    if revocation is not None:
        return (
            f"its key {key_id} was revoked as of {format_instant(revocation.issued)} "
            f"(revocation {revocation.id}), before it was made at {format_instant(seconds)}"
        )
    certificate = next(
        (c for c in certificates if c.key_id == key_id and c.covers(seconds, "audit")), None
    )
    if certificate is None:
        raise fail(
            f"its key {key_id} has no certificate for `audit` valid at "
            f"{format_instant(seconds)} in the export"
        )
    statement = content.replace(f' signature="{signature_b64}"', "", 1).encode()
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        signature = b""
    if len(signature) != 64 or not verify_signature(certificate.key, signature, statement):
        raise fail(f"the signature does not verify with key {key_id}")
    return time_ms, certificate.id


def verify(stream, owner):
    """Checks the export in `stream` (binary) against `owner`; returns a summary line."""
    owner_raw = owner.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    organism = hashlib.sha256(owner_raw).hexdigest()
    records = Records(stream)
    header = records.line()
    if header is None:
        raise Refused("the export is cut short after the start: there is no `end` line")
    if header.encode() != HEADER:
        raise records.fail(f"expected {HEADER.decode()!r}")
    line = records.line()
    if line is None:
        raise Refused("the export is cut short after the header: there is no `end` line")
    fields = line.split(" ")
    if fields[0] != "owner" or len(fields) != 2:
        raise records.fail("expected `owner`")
    if fields[1] != organism:
        raise Refused(f"the export is of organism {fields[1]}, not of the owner key given ({organism})")

    certificates = []
    revocations = []
    while True:
        line = records.line()
        if line is None:
            raise Refused("the export is cut short after the certificates: there is no `end` line")
        fields = line.split(" ")
        if fields[0] == "certificate" and len(fields) == 4:
            payload = records.body(records.length(fields[3]), f"certificate {fields[1]}")
            certificates.append(Certificate(fields[1], fields[2], payload, owner))
        elif fields[0] == "revocation" and len(fields) == 4:
            payload = records.body(records.length(fields[3]), f"revocation {fields[1]}")
            revocations.append(Revocation(fields[1], fields[2], payload, owner))
        elif fields[0] == "anchor" and len(fields) == 3:
            anchor_seq = records.number(fields[1])
            try:
                anchor_hash = bytes.fromhex(fields[2])
            except ValueError:
                anchor_hash = b""
            if len(anchor_hash) != 32:
                raise records.fail(f"{fields[2]!r} is not a hash")
            break
        else:
            raise records.fail(
                "expected `certificate ID SIGNATURE LENGTH`, `revocation ID SIGNATURE LENGTH` "
                "or `anchor SEQ HASH`"
            )

    previous_seq, previous = anchor_seq, anchor_hash
    if previous_seq == 0 and previous != GENESIS:
        raise records.fail("an anchor at entry 0 must be the genesis hash")
    first = None
    checkpoints = 0
    last_checkpoint = None
    revoked_checkpoint = None
    while True:
        line = records.line()
        if line is None:
            after = "the anchor" if first is None else f"entry {previous_seq}"
            raise Refused(f"the export is cut short after {after}: there is no `end` line")
        fields = line.split(" ")
        if fields[0] == "entry" and len(fields) == 4:
            seq = records.number(fields[1])
            stored_hash = fields[2]
            raw = records.body(records.length(fields[3]), f"entry {seq}")
            try:
                entry = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise records.fail(f"entry {seq} is not UTF-8") from None
            if seq != previous_seq + 1:
                raise Refused(
                    f"audit entry {seq} follows entry {previous_seq}: "
                    "entries are missing or out of order"
                )
            claimed = entry_attribute(entry, "n") or ""
            if claimed != str(seq):
                raise Refused(f"audit entry {seq} says it is entry {claimed}")
            digest = hashlib.sha256(previous + raw).digest()
            if digest.hex() != stored_hash:
                raise Refused(
                    f"audit entry {seq} is broken: its hash does not match "
                    "its contents and the previous entry"
                )
            vouch = None
            if entry_attribute(entry, "kind") == "checkpoint":
                vouch = check_checkpoint(
                    seq, entry, previous_seq, previous, organism, certificates, revocations
                )
            if isinstance(vouch, tuple):
                last_checkpoint = (seq,) + vouch
                checkpoints += 1
            elif isinstance(vouch, str) and first is None and anchor_seq > 0:
                raise Refused(
                    f"the anchor (entry {anchor_seq}) is not vouched for: entry {seq}, the first, "
                    f"is a checkpoint that vouches for nothing ({vouch})"
                )
            elif isinstance(vouch, str):
                revoked_checkpoint = (seq, vouch)
            elif first is None and anchor_seq > 0:
                raise Refused(
                    f"the anchor (entry {anchor_seq}) is not vouched for: "
                    f"entry {seq}, the first, is not a checkpoint"
                )
            if first is None:
                first = seq
            previous_seq, previous = seq, digest
        elif fields[0] == "end" and len(fields) == 4:
            said = f"{fields[1]} entries ending at entry {fields[2]} with hash {fields[3]}"
            if first is None:
                first = previous_seq + 1
            found = (
                f"{previous_seq + 1 - first} entries ending at entry {previous_seq} "
                f"with hash {previous.hex()}"
            )
            if said != found:
                raise Refused(f"the `end` line says {said}, but the entries give {found}")
            refused = ""
            if revoked_checkpoint is not None:
                refused = (
                    f" (the checkpoint at entry {revoked_checkpoint[0]} vouches for nothing: "
                    f"{revoked_checkpoint[1]})"
                )
            if last_checkpoint is None:
                raise Refused(f"the export holds no checkpoint{refused}")
            last_seq, time_ms, certificate = last_checkpoint
            if last_seq != previous_seq:
                raise Refused(
                    f"entries {last_seq + 1} to {previous_seq} follow the last checkpoint "
                    f"(entry {last_seq}): no signature covers them{refused}"
                )
            if records.line() is not None or stream.read(1):
                raise records.fail("nothing may follow the `end` line")
            return (
                f"entries {first} to {previous_seq} verified; {checkpoints} checkpoint(s), "
                f"the last at {format_instant(time_ms // 1000)} (entry {previous_seq}, "
                f"certificate {certificate}); head {previous.hex()}"
            )
        else:
            raise records.fail("expected `entry SEQ HASH LENGTH` or `end ENTRIES LAST-SEQ LAST-HASH`")


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    export_path, owner_path = argv[1], argv[2]
    with open(owner_path, "rb") as owner_file:
        owner = serialization.load_pem_public_key(owner_file.read())
    if not isinstance(owner, Ed25519PublicKey):
        sys.stderr.write(f"{owner_path}: not an Ed25519 public key\n")
        return 2
    try:
        with open(export_path, "rb") as stream:
            print(verify(stream, owner))
    except Refused as refused:
        sys.stderr.write(f"{export_path} does not verify: {refused}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
