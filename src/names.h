/* Group names, shared by the pure modules (JWT claims) and the server. */
#ifndef HERALD_NAMES_H
#define HERALD_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define GROUP_NAME_MAX 128

/* A valid group name: 1-128 bytes of [A-Za-z0-9._:-]. */
bool group_name_valid(const char *s, size_t n);

#endif
