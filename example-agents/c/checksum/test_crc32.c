/*
 * Native tests of the checksum agent's pure logic (crc32.c), built with the
 * machine's C compiler by example-agents/c/test.sh.
 */
#include "crc32.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(bool ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s\n", what);
    }
}

static void crc_is(const char *text, uint32_t expected) {
    uint32_t got = crc32((const uint8_t *)text, strlen(text));
    char what[200];
    snprintf(what, sizeof what, "crc32(\"%.60s\") = %08x, expected %08x", text,
             got, expected);
    check(got == expected, what);
}

/* A heap copy of `s` without its NUL, so the sanitizers see every overread. */
static char *exact_copy(const char *s, size_t len) {
    char *copy = malloc(len > 0 ? len : 1);
    memcpy(copy, s, len);
    return copy;
}

static void unescapes_to(const char *text, const char *expected) {
    size_t len = strlen(text);
    char *in = exact_copy(text, len);
    uint8_t *out = malloc(len > 0 ? len : 1);
    size_t out_len = 0;
    char error[200] = "";
    bool ok = xml_unescape(in, len, out, &out_len, error, sizeof error);
    char what[300];
    snprintf(what, sizeof what, "unescape \"%s\" (%s)", text, error);
    check(ok && out_len == strlen(expected) &&
              memcmp(out, expected, out_len) == 0,
          what);
    free(out);
    free(in);
}

/* Runs checksum_payload_text on `payload`; the message is in `error`. */
static bool payload(const char *payload, char *text, size_t *text_len,
                    char *error, size_t error_size) {
    size_t len = strlen(payload);
    char *in = exact_copy(payload, len);
    uint8_t *out = malloc(len > 0 ? len : 1);
    error[0] = '\0';
    bool ok = checksum_payload_text(in, len, out, text_len, error, error_size);
    if (ok) {
        memcpy(text, out, *text_len);
        text[*text_len] = '\0';
    }
    free(out);
    free(in);
    return ok;
}

static void payload_text_is(const char *p, const char *expected) {
    char text[256], error[200], what[600];
    size_t text_len = 0;
    bool ok = payload(p, text, &text_len, error, sizeof error);
    snprintf(what, sizeof what, "text of %s is \"%s\" (got \"%s\", %s)", p,
             expected, ok ? text : "", error);
    check(ok && text_len == strlen(expected) &&
              memcmp(text, expected, text_len) == 0,
          what);
}

static void payload_fails(const char *p, const char *message_part) {
    char text[256], error[200], what[600];
    size_t text_len = 0;
    bool ok = payload(p, text, &text_len, error, sizeof error);
    snprintf(what, sizeof what, "%s is refused with \"...%s...\" (got %s \"%s\")",
             p, message_part, ok ? "success" : "failure", error);
    check(!ok && strstr(error, message_part) != NULL, what);
}

static void unescape_fails(const char *text, const char *message_part) {
    size_t len = strlen(text);
    char *in = exact_copy(text, len);
    uint8_t *out = malloc(len > 0 ? len : 1);
    size_t out_len = 0;
    char error[200] = "", what[300];
    bool ok = xml_unescape(in, len, out, &out_len, error, sizeof error);
    snprintf(what, sizeof what, "unescape \"%s\" fails with \"...%s...\" (got \"%s\")",
             text, message_part, error);
    check(!ok && strstr(error, message_part) != NULL, what);
    free(out);
    free(in);
}

int main(void) {
    /* Known CRC-32 vectors (zlib's crc32). */
    crc_is("", 0x00000000);
    crc_is("123456789", 0xcbf43926);
    crc_is("The quick brown fox jumps over the lazy dog", 0x414fa339);
    crc_is("a & b", 0xc8ba185a);
    {
        const uint8_t *fox = (const uint8_t *)"The quick brown fox jumps over the lazy dog";
        uint32_t crc = crc32_update(0, fox, 10);
        crc = crc32_update(crc, fox + 10, 33);
        check(crc == 0x414fa339, "crc32_update continues a CRC");
    }

    /* Unescaping: the exclusive-C14N escapes, and the other references. */
    unescapes_to("", "");
    unescapes_to("plain text", "plain text");
    unescapes_to("a &amp; b", "a & b");
    unescapes_to("&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b>");
    unescapes_to("line&#xD;\nnext", "line\r\nnext");
    unescapes_to("&#13;&#xd;", "\r\r");
    unescapes_to("&quot;&apos;", "\"'");
    unescapes_to("&#233;&#xE9;&#x20AC;&#x1F600;", "\xC3\xA9\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
    unescapes_to("&amp;amp;", "&amp;");
    unescape_fails("fish & chips", "'&' starts no reference");
    unescape_fails("trailing &", "'&' starts no reference");
    unescape_fails("&nbsp;", "unknown entity &nbsp;");
    unescape_fails("&#0;", "&#0; is not a character");
    unescape_fails("&#xD800;", "is not a character");
    unescape_fails("&#x110000;", "is not a character");
    unescape_fails("&#;", "is not a character");
    unescape_fails("&#x;", "is not a character");
    unescape_fails("&#12a;", "is not a character");

    /* Payloads. */
    payload_text_is("<checksum></checksum>", "");
    payload_text_is("<checksum/>", "");
    payload_text_is("<checksum>123456789</checksum>", "123456789");
    payload_text_is("<checksum>a &amp; b</checksum>", "a & b");
    payload_text_is("<checksum>&lt;not&gt; a child</checksum>", "<not> a child");
    payload_text_is("<checksum id=\"a>b\" xmlns=\"\">x</checksum>", "x");
    payload_text_is("<checksum>\xC3\xA9t\xC3\xA9 &#xD;</checksum>", "\xC3\xA9t\xC3\xA9 \r");
    payload_fails("<checksum>a<b>bold</b></checksum>", "child element <b>");
    payload_fails("<checksum><x/></checksum>", "child element <x>");
    payload_fails("<checksum><!-- c --></checksum>", "markup \"<!--");
    payload_fails("<crc>x</crc>", "expected a <checksum> element, got <crc>");
    payload_fails("<p:checksum xmlns:p=\"urn:p\">x</p:checksum>", "got <p:checksum>");
    payload_fails("<checksum xmlns=\"urn:x\">x</checksum>", "got {urn:x}checksum");
    payload_fails("<checksum>x</other>", "expected </checksum>, got </other>");
    payload_fails("<checksum>x", "ends before </checksum>");
    payload_fails("<checksum", "is not closed");
    payload_fails("<checksum a>x</checksum>", "malformed at \"a>x");
    payload_fails("<checksum a=b>x</checksum>", "no quoted value");
    payload_fails("<checksum a=\"b>x</checksum>", "is not closed");
    payload_fails("<checksum>x</checksum><more/>", "unexpected content after");
    payload_fails("<checksum>fish & chips</checksum>", "'&' starts no reference");
    payload_fails("", "not an element");
    payload_fails("just text", "not an element");
    payload_fails("</checksum>", "not an element");

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
