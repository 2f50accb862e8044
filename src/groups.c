#include "groups.h"

#include <stdlib.h>
#include <string.h>

static uint32_t groups_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a: names are short, this is plenty */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

bool groups_init(group_table *t)
{
    t->nbuckets = 64;
    t->count = 0;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    return t->buckets != NULL;
}

void groups_destroy(group_table *t)
{
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        group *g = t->buckets[i];
        while (g) {
            group *next = g->next;
            free(g->members);
            free(g);
            g = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
}

group *groups_find(const group_table *t, const char *name, size_t len)
{
    uint32_t h = groups_hash(name, len);
    for (group *g = t->buckets[h & (t->nbuckets - 1)]; g; g = g->next)
        if (g->hash == h && g->name_len == len && memcmp(g->name, name, len) == 0)
            return g;
    return NULL;
}

static void groups_rehash(group_table *t)
{
    uint32_t nb = t->nbuckets * 2;
    group **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* keep the longer chains; still correct */
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        group *g = t->buckets[i];
        while (g) {
            group *next = g->next;
            g->next = b[g->hash & (nb - 1)];
            b[g->hash & (nb - 1)] = g;
            g = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

group *groups_get(group_table *t, const char *name, size_t len)
{
    group *g = groups_find(t, name, len);
    if (g)
        return g;
    g = calloc(1, sizeof *g + len + 1);
    if (!g)
        return NULL;
    g->hash = groups_hash(name, len);
    g->name_len = (uint8_t)len;
    memcpy(g->name, name, len);
    if (t->count + 1 > t->nbuckets)
        groups_rehash(t);
    g->next = t->buckets[g->hash & (t->nbuckets - 1)];
    t->buckets[g->hash & (t->nbuckets - 1)] = g;
    t->count++;
    return g;
}

long groups_add(group *g, struct conn *c, uint64_t after, uint32_t after_gen)
{
    if (g->n == g->cap) {
        uint32_t nc = g->cap ? g->cap * 2 : 4;
        group_entry *m = realloc(g->members, sizeof *m * nc);
        if (!m)
            return -1;
        g->members = m;
        g->cap = nc;
    }
    g->members[g->n] = (group_entry){c, after, after_gen};
    return g->n++;
}

struct conn *groups_remove(group *g, uint32_t slot)
{
    g->n--;
    if (slot == g->n)
        return NULL;
    g->members[slot] = g->members[g->n];
    return g->members[slot].c;
}

void groups_release_if_empty(group_table *t, group *g)
{
    if (g->n)
        return;
    group **pp = &t->buckets[g->hash & (t->nbuckets - 1)];
    while (*pp && *pp != g)
        pp = &(*pp)->next;
    if (*pp)
        *pp = g->next;
    t->count--;
    free(g->members);
    free(g);
}
