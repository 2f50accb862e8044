/* Subscriber side: what one received data message counts as. */
#ifndef HB_DELIVER_H
#define HB_DELIVER_H

#include <stdint.h>

/* wsc_handler.on_message for subscribers; ctx is the conn. */
void deliver_on_message(void *ctx, uint8_t opcode, const uint8_t *head, uint64_t total);

#endif
