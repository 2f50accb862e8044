/* A worker's group table: group name -> the worker's subscribers of it.
 * Owned by one worker thread, so no locks. Membership removal is O(1): each
 * subscription remembers its slot and the last member moves into the hole. */
#ifndef HERALD_GROUPS_H
#define HERALD_GROUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"

struct conn;

typedef struct group_entry {
    struct conn *c;
    uint64_t after;     /* deliver only offsets above this (the end of a history replay)... */
    uint32_t after_gen; /* ...within this epoch generation: a new lineage restarts offsets */
} group_entry;

typedef struct group {
    struct group *next; /* hash chain */
    uint32_t hash;
    uint32_t n, cap;
    group_entry *members;
    uint8_t name_len;
    char name[];
} group;

typedef struct group_table {
    group **buckets;
    uint32_t nbuckets; /* power of two */
    uint32_t count;
} group_table;


bool groups_init(group_table *t);
void groups_destroy(group_table *t);

group *groups_find(const group_table *t, const char *name, size_t len);
group *groups_get(group_table *t, const char *name, size_t len); /* creates; NULL on OOM */

/* Adds c; returns its slot or -1 on OOM. */
long groups_add(group *g, struct conn *c, uint64_t after, uint32_t after_gen);

/* Removes the member at slot; returns the member moved into it (or NULL) so
 * the caller can update that member's remembered slot. */
struct conn *groups_remove(group *g, uint32_t slot);

/* Frees g when it has no members. */
void groups_release_if_empty(group_table *t, group *g);

#endif
