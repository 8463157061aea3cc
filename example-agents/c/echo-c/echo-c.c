/*
 * The smallest C agent: answers <echoed> with the content of what it is
 * sent. The benchmarks use it to measure what a C agent costs
 * (instantiation, a call, memory per instance) apart from any work it does.
 * Ownership as in checksum.c: the envelope is ours to free, what we return
 * is malloc'd and freed by the generated cabi_post_handle.
 */
#include "agent.h"

#include <stdlib.h>
#include <string.h>

static const char OPEN[] = "<echoed>";
static const char CLOSE[] = "</echoed>";

bool exports_agent_handle(agent_envelope_t *msg, agent_list_string_t *ret,
                          agent_failure_t *err) {
    const char *payload = (const char *)msg->payload.ptr;
    size_t len = msg->payload.len;
    const char *start = memchr(payload, '>', len);
    size_t end = len;
    while (end > 0 && payload[end - 1] != '<') {
        end--;
    }
    bool ok = false;
    if (!start || end == 0 || (size_t)(start + 1 - payload) > end - 1) {
        err->tag = AGENTSERVER_AGENT_TYPES_FAILURE_MALFORMED;
        agent_string_dup(&err->val.malformed, "expected one element");
    } else {
        size_t content = (end - 1) - (size_t)(start + 1 - payload);
        size_t size = sizeof OPEN - 1 + content + sizeof CLOSE - 1;
        uint8_t *answer = malloc(size);
        agent_string_t *list = malloc(sizeof *list);
        if (answer && list) {
            memcpy(answer, OPEN, sizeof OPEN - 1);
            memcpy(answer + sizeof OPEN - 1, start + 1, content);
            memcpy(answer + sizeof OPEN - 1 + content, CLOSE, sizeof CLOSE - 1);
            list->ptr = answer;
            list->len = size;
            ret->ptr = list;
            ret->len = 1;
            ok = true;
        } else {
            free(answer);
            free(list);
            err->tag = AGENTSERVER_AGENT_TYPES_FAILURE_INTERNAL;
            agent_string_dup(&err->val.internal, "out of memory");
        }
    }
    agent_envelope_free(msg);
    return ok;
}
