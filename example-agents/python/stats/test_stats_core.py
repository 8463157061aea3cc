"""Tests of the stats agent's logic with plain CPython:
``python3 -m unittest discover -s example-agents/python/stats``."""

import statistics
import unittest

from stats_core import (
    Stats,
    StatsError,
    escape_attribute,
    format_number,
    parse_numbers,
    result_element,
    summarize,
)


class ParseNumbersTest(unittest.TestCase):
    def test_whitespace_and_commas_separate_numbers(self):
        self.assertEqual(parse_numbers("1 2 3.5"), [1.0, 2.0, 3.5])
        self.assertEqual(parse_numbers("1,2,3"), [1.0, 2.0, 3.0])
        self.assertEqual(parse_numbers(" 1 ,\n2,\t, 3 , "), [1.0, 2.0, 3.0])

    def test_decimal_literals(self):
        self.assertEqual(
            parse_numbers("-1 +2 .5 2. 6.02e23 1E-3"),
            [-1.0, 2.0, 0.5, 2.0, 6.02e23, 0.001],
        )

    def assert_malformed(self, text, *parts):
        with self.assertRaises(StatsError) as caught:
            parse_numbers(text)
        self.assertEqual(caught.exception.kind, "malformed")
        for part in parts:
            self.assertIn(part, caught.exception.message)
        return caught.exception.message

    def test_a_bad_token_is_named_with_its_position(self):
        message = self.assert_malformed("1 2 abc 4", "'abc'", "number 3")
        self.assertEqual(message, "number 3, 'abc', is not a number")

    def test_what_float_would_take_but_is_not_a_decimal_literal(self):
        for token in ["1_000", "0x10", "١٢", "1e", "--1", "1.2.3"]:
            self.assert_malformed(f"1 {token}", repr(token), "number 2", "is not a number")

    def test_nan_and_inf_are_refused(self):
        for token in ["nan", "NaN", "inf", "-inf", "+Infinity"]:
            self.assert_malformed(f"{token} 1", repr(token), "number 1", "not finite")

    def test_a_literal_too_large_for_a_double_is_refused(self):
        self.assert_malformed("1 1e400", "'1e400'", "too large")

    def test_no_numbers(self):
        for text in ["", "   ", " , ,\n"]:
            self.assert_malformed(text, "no numbers")

    def test_a_long_bad_token_is_cut(self):
        message = self.assert_malformed("x" * 1000, "number 1")
        self.assertLess(len(message), 100)


class FormatNumberTest(unittest.TestCase):
    def test_shortest_round_trip(self):
        self.assertEqual(format_number(2.1666666666666665), "2.1666666666666665")
        self.assertEqual(format_number(0.1), "0.1")
        self.assertEqual(format_number(1e-7), "1e-07")
        self.assertEqual(format_number(1.5e300), "1.5e+300")

    def test_integral_values_drop_the_fraction(self):
        self.assertEqual(format_number(2.0), "2")
        self.assertEqual(format_number(-3.0), "-3")
        self.assertEqual(format_number(1e16), "1e+16")
        self.assertEqual(format_number(1e15), "1000000000000000")

    def test_negative_zero_is_zero(self):
        self.assertEqual(format_number(-0.0), "0")
        self.assertEqual(format_number(0.0), "0")


class SummarizeTest(unittest.TestCase):
    def test_matches_the_statistics_module(self):
        numbers = [1.0, 2.0, 3.5]
        count, mean, median, stdev = summarize(numbers)
        self.assertEqual(count, 3)
        self.assertEqual(mean, statistics.mean(numbers))
        self.assertEqual(median, statistics.median(numbers))
        self.assertEqual(stdev, statistics.stdev(numbers))

    def test_one_number_has_stdev_zero(self):
        self.assertEqual(summarize([7.5]), (1, 7.5, 7.5, 0.0))

    def test_overflow_is_malformed(self):
        with self.assertRaises(StatsError) as caught:
            summarize([1.7e308, -1.7e308])
        self.assertEqual(caught.exception.kind, "malformed")
        self.assertIn("too large", caught.exception.message)


class ResultElementTest(unittest.TestCase):
    def test_payload(self):
        self.assertEqual(
            result_element([1.0, 2.0, 3.5]),
            '<stats-result count="3" mean="2.1666666666666665" median="2" '
            'stdev="1.2583057392117916"/>',
        )
        self.assertEqual(
            result_element([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], scope="session"),
            '<stats-result scope="session" count="8" mean="5" median="4.5" '
            'stdev="2.138089935299395"/>',
        )

    def test_escape_attribute(self):
        self.assertEqual(
            escape_attribute('a<b>&"c"\n'), "a&lt;b&gt;&amp;&quot;c&quot;&#xA;"
        )


class StatsTest(unittest.TestCase):
    def setUp(self):
        self.stats = Stats()

    def assert_fails(self, kind, tag, payload, *parts):
        with self.assertRaises(StatsError) as caught:
            self.stats.handle(tag, payload)
        self.assertEqual(caught.exception.kind, kind)
        for part in parts:
            self.assertIn(part, caught.exception.message)

    def test_stats(self):
        self.assertEqual(
            self.stats.handle("stats", "<stats>1, 2, 3, 4</stats>"),
            ['<stats-result count="4" mean="2.5" median="2.5" stdev="1.2909944487358056"/>'],
        )
        self.assertEqual(
            self.stats.handle("stats", "<stats>42</stats>"),
            ['<stats-result count="1" mean="42" median="42" stdev="0"/>'],
        )

    def test_entities_are_decoded(self):
        self.assert_fails("malformed", "stats", "<stats>1 &amp; 2</stats>", "'&'", "number 2")

    def test_child_elements_are_malformed(self):
        self.assert_fails(
            "malformed", "stats", "<stats>1 <n>2</n></stats>", "child elements", "<n>"
        )

    def test_not_xml_is_malformed(self):
        self.assert_fails("malformed", "stats", "<stats>1 2", "not XML")

    def test_wrong_root_is_malformed(self):
        self.assert_fails("malformed", "stats", "<other>1</other>", "expected <stats>")

    def test_unknown_tag_is_malformed(self):
        self.assert_fails("malformed", "count", "<count/>", "<count>")

    def test_total_before_any_number_is_refused(self):
        self.assert_fails("refused", "stats-total", "<stats-total/>", "no numbers yet")

    def test_total_with_content_is_malformed(self):
        self.stats.handle("stats", "<stats>1</stats>")
        self.assert_fails("malformed", "stats-total", "<stats-total>1</stats-total>", "no content")

    def test_total_covers_every_accepted_number(self):
        self.stats.handle("stats", "<stats>2 4 4 4</stats>")
        self.assert_fails("malformed", "stats", "<stats>5 x</stats>", "'x'")
        self.stats.handle("stats", "<stats>5 5 7 9</stats>")
        self.assertEqual(
            self.stats.handle("stats-total", "<stats-total></stats-total>"),
            [
                '<stats-result scope="session" count="8" mean="5" median="4.5" '
                'stdev="2.138089935299395"/>'
            ],
        )

    def test_a_total_that_overflows_is_refused(self):
        self.stats.handle("stats", "<stats>1.7e308</stats>")
        self.stats.handle("stats", "<stats>-1.7e308</stats>")
        self.assert_fails("refused", "stats-total", "<stats-total/>", "too large")


if __name__ == "__main__":
    unittest.main()
