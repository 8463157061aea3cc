/*
 * The checksum agent's pure logic, free of any WebAssembly or host detail
 * (test_crc32.c runs it natively): the CRC-32 of a byte string, and the text
 * of a <checksum> payload.
 */
#ifndef CHECKSUM_CRC32_H
#define CHECKSUM_CRC32_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Continues the CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320: the one
 * zlib's crc32() computes) `crc` over `len` bytes. Start with crc = 0.
 */
uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t len);

/* The CRC-32 of `len` bytes. */
uint32_t crc32(const uint8_t *data, size_t len);

/*
 * Unescapes XML character data: the entity references &amp; &lt; &gt; &quot;
 * &apos; and character references (&#13; &#xD;) become the UTF-8 bytes they
 * stand for; every other byte is copied. `out` needs room for `len` bytes
 * (unescaping never lengthens text); the bytes written are counted in
 * *out_len.
 *
 * Returns true, or false with a message (NUL-terminated, truncated to
 * `error_size`) in `error` when a reference is unknown, unterminated or not a
 * Unicode scalar value.
 */
bool xml_unescape(const char *text, size_t len, uint8_t *out, size_t *out_len,
                  char *error, size_t error_size);

/*
 * The text of `payload`, one element in exclusive canonical form that must be
 * <checksum>TEXT</checksum> (attributes ignored, no namespace), unescaped
 * into `out` as by xml_unescape (room for `len` bytes suffices).
 *
 * Returns true, or false with a message for the sender in `error` when the
 * root is not an unqualified `checksum`, the element has a child element or
 * other markup, or the payload is not one well-formed element.
 */
bool checksum_payload_text(const char *payload, size_t len, uint8_t *out,
                           size_t *out_len, char *error, size_t error_size);

#endif
