"""Exclusive XML canonicalization by lxml (libxml2), the tests' oracle.

Usage: lxml_c14n.py DIR
For every DIR/NAME.xml writes DIR/NAME.lxml with the canonical bytes
(exclusive C14N 1.0 without comments), or DIR/NAME.lxml-error with the
parser's message when lxml refuses the document.
"""

import pathlib
import sys

from lxml import etree


def main() -> int:
    directory = pathlib.Path(sys.argv[1])
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, remove_blank_text=False, huge_tree=False
    )
    for source in sorted(directory.glob("*.xml")):
        try:
            tree = etree.parse(str(source), parser)
            canonical = etree.tostring(tree, method="c14n", exclusive=True, with_comments=False)
            source.with_suffix(".lxml").write_bytes(canonical)
        except (etree.XMLSyntaxError, etree.C14NError) as error:
            source.with_suffix(".lxml-error").write_text(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
