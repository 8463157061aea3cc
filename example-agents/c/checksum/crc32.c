#include "crc32.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- CRC-32 */

static uint32_t crc_table[256];
static bool crc_table_ready;

static void crc_table_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[n] = c;
    }
    crc_table_ready = true;
}

uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t len) {
    if (!crc_table_ready) {
        crc_table_init();
    }
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc = crc_table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    }
    return ~crc;
}

uint32_t crc32(const uint8_t *data, size_t len) {
    return crc32_update(0, data, len);
}

/* ------------------------------------------------------------ XML text */

/* At most this much of a name or reference is quoted in a message. */
#define QUOTE_MAX 40

static bool fail(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(char *error, size_t error_size, const char *format, ...) {
    if (error_size > 0) {
        va_list args;
        va_start(args, format);
        vsnprintf(error, error_size, format, args);
        va_end(args);
    }
    return false;
}

static int quoted(size_t len) {
    return (int)(len < QUOTE_MAX ? len : QUOTE_MAX);
}

static bool equals(const char *text, size_t len, const char *word) {
    return len == strlen(word) && memcmp(text, word, len) == 0;
}

/* Writes code point `c` as UTF-8; returns the number of bytes written. */
static size_t put_utf8(uint32_t c, uint8_t *out) {
    if (c < 0x80) {
        out[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (uint8_t)(0xC0 | (c >> 6));
        out[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (c >> 12));
        out[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (c >> 18));
    out[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* A character XML 1.0 allows in a document (its production Char). */
static bool xml_char(uint32_t c) {
    return c == 0x9 || c == 0xA || c == 0xD || (c >= 0x20 && c <= 0xD7FF) ||
           (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

/*
 * The code point of character reference body `ref` ("#13" or "#xD"), or
 * UINT32_MAX when it is not one.
 */
static uint32_t char_ref(const char *ref, size_t len) {
    size_t i = 1;
    unsigned base = 10;
    if (len > 1 && ref[1] == 'x') {
        base = 16;
        i = 2;
    }
    if (i == len) {
        return UINT32_MAX;
    }
    uint32_t value = 0;
    for (; i < len; i++) {
        char d = ref[i];
        unsigned digit;
        if (d >= '0' && d <= '9') {
            digit = (unsigned)(d - '0');
        } else if (base == 16 && d >= 'a' && d <= 'f') {
            digit = (unsigned)(d - 'a' + 10);
        } else if (base == 16 && d >= 'A' && d <= 'F') {
            digit = (unsigned)(d - 'A' + 10);
        } else {
            return UINT32_MAX;
        }
        value = value * base + digit;
        if (value > 0x10FFFF) {
            return UINT32_MAX;
        }
    }
    return value;
}

/* References are short: a ';' further away than this ends none. */
#define REF_MAX 12

bool xml_unescape(const char *text, size_t len, uint8_t *out, size_t *out_len,
                  char *error, size_t error_size) {
    size_t n = 0;
    size_t i = 0;
    while (i < len) {
        const char *amp = memchr(text + i, '&', len - i);
        size_t plain = (amp ? (size_t)(amp - text) : len) - i;
        memcpy(out + n, text + i, plain);
        n += plain;
        i += plain;
        if (i == len) {
            break;
        }
        /* text[i] is '&': its reference runs to the next ';'. */
        size_t window = len - i - 1 < REF_MAX ? len - i - 1 : REF_MAX;
        const char *semi = memchr(text + i + 1, ';', window);
        if (!semi) {
            return fail(error, error_size,
                        "'&' starts no reference at \"%.*s\": write a literal "
                        "'&' as &amp;",
                        quoted(len - i), text + i);
        }
        const char *ref = text + i + 1;
        size_t ref_len = (size_t)(semi - ref);
        if (equals(ref, ref_len, "amp")) {
            out[n++] = '&';
        } else if (equals(ref, ref_len, "lt")) {
            out[n++] = '<';
        } else if (equals(ref, ref_len, "gt")) {
            out[n++] = '>';
        } else if (equals(ref, ref_len, "quot")) {
            out[n++] = '"';
        } else if (equals(ref, ref_len, "apos")) {
            out[n++] = '\'';
        } else if (ref_len > 0 && ref[0] == '#') {
            uint32_t c = char_ref(ref, ref_len);
            if (c == UINT32_MAX || !xml_char(c)) {
                return fail(error, error_size,
                            "&%.*s; is not a character XML allows",
                            quoted(ref_len), ref);
            }
            n += put_utf8(c, out + n);
        } else {
            return fail(error, error_size,
                        "unknown entity &%.*s;: only &amp; &lt; &gt; &quot; "
                        "&apos; and character references are known",
                        quoted(ref_len), ref);
        }
        i += ref_len + 2;
    }
    *out_len = n;
    return true;
}

/* ------------------------------------------------------ <checksum> payload */

#define ROOT "checksum"

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether `c` may start an XML name (any non-ASCII byte is let through). */
static bool name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == ':' || (unsigned char)c >= 0x80;
}

/* Where a name starting at `i` ends. */
static size_t name_end(const char *s, size_t len, size_t i) {
    while (i < len && !is_space(s[i]) && s[i] != '>' && s[i] != '/' &&
           s[i] != '=' && s[i] != '<') {
        i++;
    }
    return i;
}

static size_t skip_space(const char *s, size_t len, size_t i) {
    while (i < len && is_space(s[i])) {
        i++;
    }
    return i;
}

/*
 * Reads the attributes of the root start tag from `*at` (just past its
 * name) to just past its '>' or "/>", refusing a default namespace.
 * Sets *empty when the tag ends with "/>".
 */
static bool root_attributes(const char *p, size_t len, size_t *at, bool *empty,
                            char *error, size_t error_size) {
    size_t i = *at;
    for (;;) {
        i = skip_space(p, len, i);
        if (i == len) {
            return fail(error, error_size,
                        "the start tag <" ROOT "> is not closed");
        }
        if (p[i] == '>' || (p[i] == '/' && i + 1 < len && p[i + 1] == '>')) {
            *empty = p[i] == '/';
            *at = i + (*empty ? 2 : 1);
            return true;
        }
        size_t name = i;
        i = name_end(p, len, i);
        size_t name_len = i - name;
        i = skip_space(p, len, i);
        if (name_len == 0 || i == len || p[i] != '=') {
            return fail(error, error_size,
                        "the start tag <" ROOT "> is malformed at \"%.*s\"",
                        quoted(len - name), p + name);
        }
        i = skip_space(p, len, i + 1);
        if (i == len || (p[i] != '"' && p[i] != '\'')) {
            return fail(error, error_size,
                        "the attribute %.*s of <" ROOT "> has no quoted value",
                        quoted(name_len), p + name);
        }
        const char *close = memchr(p + i + 1, p[i], len - i - 1);
        if (!close) {
            return fail(error, error_size,
                        "the value of the attribute %.*s of <" ROOT
                        "> is not closed",
                        quoted(name_len), p + name);
        }
        const char *value = p + i + 1;
        size_t value_len = (size_t)(close - value);
        if (equals(p + name, name_len, "xmlns") && value_len > 0) {
            return fail(error, error_size,
                        "expected <" ROOT "> in no namespace, got {%.*s}" ROOT,
                        quoted(value_len), value);
        }
        i = (size_t)(close - p) + 1;
    }
}

bool checksum_payload_text(const char *p, size_t len, uint8_t *out,
                           size_t *out_len, char *error, size_t error_size) {
    size_t i = skip_space(p, len, 0);
    if (i == len || p[i] != '<' || name_end(p, len, i + 1) == i + 1) {
        return fail(error, error_size,
                    "the payload is not an element: send <" ROOT
                    ">text</" ROOT ">");
    }
    size_t name = i + 1;
    i = name_end(p, len, name);
    if (!equals(p + name, i - name, ROOT)) {
        return fail(error, error_size,
                    "expected a <" ROOT "> element, got <%.*s>",
                    quoted(i - name), p + name);
    }
    bool empty = false;
    if (!root_attributes(p, len, &i, &empty, error, error_size)) {
        return false;
    }
    size_t n = 0;
    while (!empty) {
        const char *lt = memchr(p + i, '<', len - i);
        if (!lt) {
            return fail(error, error_size,
                        "the payload ends before </" ROOT ">");
        }
        size_t text_len = (size_t)(lt - p) - i;
        size_t written;
        if (!xml_unescape(p + i, text_len, out + n, &written, error,
                          error_size)) {
            return false;
        }
        n += written;
        i += text_len;
        /* p[i] is '<'. */
        if (i + 1 < len && p[i + 1] == '/') {
            size_t end = name_end(p, len, i + 2);
            if (!equals(p + i + 2, end - (i + 2), ROOT)) {
                return fail(error, error_size,
                            "expected </" ROOT ">, got </%.*s>",
                            quoted(end - (i + 2)), p + i + 2);
            }
            i = skip_space(p, len, end);
            if (i == len || p[i] != '>') {
                return fail(error, error_size,
                            "the end tag </" ROOT "> is not closed");
            }
            i++;
            break;
        }
        size_t child = name_end(p, len, i + 1);
        if (child > i + 1 && name_start(p[i + 1])) {
            return fail(error, error_size,
                        "<" ROOT "> takes text only, but holds the child "
                        "element <%.*s>: escape markup as &lt;",
                        quoted(child - (i + 1)), p + i + 1);
        }
        return fail(error, error_size,
                    "<" ROOT "> takes text only, but holds the markup "
                    "\"%.*s\"",
                    quoted(len - i < 12 ? len - i : 12), p + i);
    }
    if (skip_space(p, len, i) != len) {
        return fail(error, error_size,
                    "unexpected content after </" ROOT ">: \"%.*s\"",
                    quoted(len - i), p + i);
    }
    *out_len = n;
    return true;
}
