"""Throughput of lxml (libxml2) parse + exclusive C14N on the given files.

Usage: lxml_bench.py FILE... ; prints "NAME MB/s" per file.
"""

import sys
import time

from lxml import etree


def main() -> int:
    for path in sys.argv[1:]:
        data = open(path, "rb").read()
        iterations = max(3, int(50_000_000 / max(len(data), 1)))
        iterations = min(iterations, 200_000)
        start = time.perf_counter()
        for _ in range(iterations):
            root = etree.fromstring(data)
            etree.tostring(root, method="c14n", exclusive=True, with_comments=False)
        elapsed = time.perf_counter() - start
        print(f"{path} {len(data) * iterations / elapsed / 1e6:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
