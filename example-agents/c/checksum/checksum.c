/*
 * The checksum agent, in C: <checksum>text</checksum> is answered with
 * <crc32>8 lowercase hex digits</crc32>, the CRC-32 of the text's UTF-8
 * bytes (the payload's escapes undone).
 *
 * Ownership, as the bindings wit-bindgen generates for C define it:
 *  - `msg` belongs to this function: the host allocated its strings with
 *    cabi_realloc (malloc), and this function frees them with
 *    agent_envelope_free;
 *  - what it returns (the list, its strings, or the failure's message) must
 *    be malloc'd: the generated cabi_post_handle frees it with free() once
 *    the host has copied it out;
 *  - arguments of imported functions (host log) are only borrowed.
 */
#include "agent.h"
#include "crc32.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void log_debug(const char *text) {
    agent_string_t message;
    agent_string_set(&message, text);
    agentserver_agent_host_log(AGENTSERVER_AGENT_HOST_LEVEL_DEBUG, &message);
}

/*
 * `failure` becomes the failure case `tag` with a malloc'd copy of `text`.
 * Every case of the variant holds one string, at the same place in the union.
 */
static bool fail(agent_failure_t *failure, uint8_t tag, const char *text) {
    failure->tag = tag;
    agent_string_dup(&failure->val.malformed, text);
    return false;
}

bool exports_agent_handle(agent_envelope_t *msg, agent_list_string_t *ret,
                          agent_failure_t *err) {
    const agent_string_t *payload = &msg->payload;
    bool ok = false;
    char error[200];
    /* Unescaping never lengthens text: the payload's length is room enough. */
    uint8_t *text = malloc(payload->len > 0 ? payload->len : 1);
    size_t text_len = 0;
    if (!text) {
        ok = fail(err, AGENTSERVER_AGENT_TYPES_FAILURE_INTERNAL, "out of memory");
    } else if (!checksum_payload_text((const char *)payload->ptr, payload->len,
                                      text, &text_len, error, sizeof error)) {
        log_debug(error);
        ok = fail(err, AGENTSERVER_AGENT_TYPES_FAILURE_MALFORMED, error);
    } else {
        char answer[sizeof "<crc32>01234567</crc32>"];
        snprintf(answer, sizeof answer, "<crc32>%08x</crc32>",
                 (unsigned)crc32(text, text_len));
        ret->len = 1;
        ret->ptr = malloc(sizeof *ret->ptr);
        if (!ret->ptr) {
            ret->len = 0;
            ok = fail(err, AGENTSERVER_AGENT_TYPES_FAILURE_INTERNAL, "out of memory");
        } else {
            agent_string_dup(&ret->ptr[0], answer);
            ok = true;
        }
    }
    free(text);
    agent_envelope_free(msg);
    return ok;
}
