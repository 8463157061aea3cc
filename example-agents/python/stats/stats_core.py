"""The stats agent's logic, free of component bindings so that plain CPython
can import and test it (``python3 -m unittest discover -s
example-agents/python/stats``).

Protocol
--------

``<stats>1 2 3.5</stats>``
    Numbers separated by whitespace and/or commas (``1,2, 3`` and ``1 2 3``
    are the same list). Each number is a decimal literal: an optional sign,
    ASCII digits with an optional fraction, an optional exponent (``-1``,
    ``.5``, ``2.``, ``6.02e23``). Answered with one payload::

        <stats-result count="3" mean="2.1666666666666665" median="2" stdev="1.2583057392117916"/>

``<stats-total/>``
    The same summary over every number this instance (one per session) has
    accepted so far, marked ``scope="session"``::

        <stats-result scope="session" count="…" mean="…" median="…" stdev="…"/>

Numbers
-------

* ``mean``, ``median`` and ``stdev`` come from the standard library's
  ``statistics`` module, over the numbers as floats; ``stdev`` is the
  *sample* standard deviation (``statistics.stdev``). With a single number
  it is undefined, and written as ``0``.
* Every number is written as Python's ``repr`` of the float (the shortest
  text that reads back as the same double, e.g. ``2.1666666666666665``),
  with a trailing ``.0`` dropped (``2.0`` is written ``2``, ``1e+16`` stays
  ``1e+16``) and negative zero written ``0``.

Failures
--------

:class:`StatsError` carries the WIT failure kind (``"malformed"`` or
``"refused"``) and a message for the sender:

* malformed: a token that is not a number (the message names it and its
  position), ``nan``/``inf`` or a literal too large for a double, no numbers
  at all, child elements, content in ``<stats-total/>``, a payload that is not
  XML, or a summary too large for a double;
* refused: ``<stats-total/>`` before any number was accepted.
"""

import math
import re
import statistics
import xml.etree.ElementTree as ElementTree

#: The tags this agent listens to.
STATS_TAG = "stats"
TOTAL_TAG = "stats-total"
#: The tag of every answer.
RESULT_TAG = "stats-result"

#: Tokens are separated by any run of whitespace and/or commas.
_SEPARATORS = re.compile(r"[\s,]+")
#: A decimal literal, ASCII only (``float()`` alone would also take
#: ``1_000``, ``infinity`` and non-ASCII digits).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
#: Words ``float()`` reads as a non-finite value.
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.ASCII | re.IGNORECASE)
#: The longest bad token quoted back in a message.
_MAX_QUOTED = 40


class StatsError(Exception):
    """A failure to report to the sender, as the WIT ``failure`` variant
    ``kind`` (``"malformed"``, ``"refused"`` or ``"internal"``)."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _malformed(message):
    return StatsError("malformed", message)


def _quote(token):
    if len(token) > _MAX_QUOTED:
        token = token[:_MAX_QUOTED] + "…"
    return repr(token)


def parse_numbers(text):
    """The numbers in ``text`` as floats; :class:`StatsError` (malformed)
    naming the first bad token, or when there is no number at all."""
    tokens = [token for token in _SEPARATORS.split(text) if token]
    if not tokens:
        raise _malformed(
            "no numbers: send numbers separated by spaces or commas, "
            "as in <stats>1 2 3.5</stats>"
        )
    numbers = []
    for position, token in enumerate(tokens, start=1):
        if _NUMBER.fullmatch(token):
            value = float(token)
            if math.isinf(value):
                raise _malformed(
                    f"number {position}, {_quote(token)}, is too large for a double"
                )
        elif _NON_FINITE.fullmatch(token):
            raise _malformed(
                f"number {position}, {_quote(token)}, is not finite: "
                "nan and inf are not accepted"
            )
        else:
            raise _malformed(f"number {position}, {_quote(token)}, is not a number")
        numbers.append(value)
    return numbers


def format_number(value):
    """``repr(value)``, the shortest round-trip text of the double, with a
    trailing ``.0`` dropped and negative zero written ``0``."""
    text = repr(float(value) + 0.0)  # + 0.0 turns -0.0 into 0.0
    return text[:-2] if text.endswith(".0") else text


def summarize(numbers):
    """``(count, mean, median, stdev)`` of a non-empty list of floats;
    ``stdev`` is the sample standard deviation, 0 for a single number."""
    if not numbers:
        raise ValueError("summarize() needs at least one number")
    try:
        mean = statistics.mean(numbers)
        median = statistics.median(numbers)
        stdev = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    except OverflowError:
        raise _malformed("the numbers are too large: their statistics overflow a double")
    for value in (mean, median, stdev):
        if not math.isfinite(value):
            raise _malformed("the numbers are too large: their statistics overflow a double")
    return len(numbers), mean, median, stdev


def escape_attribute(text):
    """``text`` escaped for a double-quoted XML attribute value."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#x9;")
        .replace("\n", "&#xA;")
        .replace("\r", "&#xD;")
    )


def result_element(numbers, scope=None):
    """The ``<stats-result …/>`` payload summarizing ``numbers``, with a
    ``scope`` attribute first when given."""
    count, mean, median, stdev = summarize(numbers)
    attributes = []
    if scope is not None:
        attributes.append(("scope", scope))
    attributes += [
        ("count", str(count)),
        ("mean", format_number(mean)),
        ("median", format_number(median)),
        ("stdev", format_number(stdev)),
    ]
    text = "".join(f' {name}="{escape_attribute(value)}"' for name, value in attributes)
    return f"<{RESULT_TAG}{text}/>"


def parse_element(payload, tag):
    """The payload's root element, checked to be ``tag`` with no child
    elements; :class:`StatsError` (malformed) otherwise."""
    try:
        root = ElementTree.fromstring(payload)
    except ElementTree.ParseError as error:
        raise _malformed(f"the payload is not XML: {error}")
    if root.tag != tag:
        raise _malformed(f"expected <{tag}>, got <{root.tag}>")
    if len(root):
        raise _malformed(
            f"<{tag}> takes its numbers as text, not child elements "
            f"(found <{root[0].tag}>)"
        )
    return root


class Stats:
    """One instance's state: the numbers accepted so far in this session."""

    def __init__(self):
        self.accepted = []

    def handle(self, tag, payload):
        """The payloads answering ``payload`` (whose root tag is ``tag``);
        :class:`StatsError` for a failure. Numbers are accepted only from a
        call that succeeds as a whole."""
        if tag == STATS_TAG:
            root = parse_element(payload, STATS_TAG)
            numbers = parse_numbers(root.text or "")
            answer = result_element(numbers)
            self.accepted.extend(numbers)
            return [answer]
        if tag == TOTAL_TAG:
            root = parse_element(payload, TOTAL_TAG)
            if (root.text or "").strip():
                raise _malformed(f"<{TOTAL_TAG}/> takes no content")
            if not self.accepted:
                raise StatsError(
                    "refused",
                    "no numbers yet in this session: send <stats>1 2 3</stats> first",
                )
            try:
                return [result_element(self.accepted, scope="session")]
            except StatsError:
                raise StatsError(
                    "refused",
                    "the session's numbers are too large: their statistics overflow a double",
                )
        raise _malformed(f"this agent handles <{STATS_TAG}> and <{TOTAL_TAG}/>, not <{tag}>")
