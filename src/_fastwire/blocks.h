/* Memory blocks that received out-of-band buffers live in (buffers.pxi).
 *
 * A block grows while its bytes arrive and is never sized from a peer's claim
 * alone: its committed part is at most about twice what has arrived. Raw C is
 * clearer than Cython for the platform calls.
 *
 * Two kinds:
 * - FW_BLOCK_HEAP: malloc/realloc (every platform; small buffers everywhere).
 * - FW_BLOCK_MAPPED (Linux, large buffers): address space for the whole claimed
 *   length is reserved PROT_NONE (which commits nothing: no memory, no
 *   overcommit charge), aligned to 2 MiB so transparent huge pages can back it,
 *   and made readable and writable piece by piece as bytes arrive. Growing it
 *   never moves or copies anything.
 *
 * None of these functions sets a Python exception or touches Python objects;
 * a failed allocation returns -1 and leaves the block as it was.
 */
#ifndef FW_BLOCKS_H
#define FW_BLOCKS_H

#include <stdlib.h>
#include <string.h>
#include "Python.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#define FW_HAVE_MAPPED 1
#else
#define FW_HAVE_MAPPED 0
#endif

enum { FW_BLOCK_NONE = 0, FW_BLOCK_HEAP = 1, FW_BLOCK_MAPPED = 2 };

/* How a large block is obtained on Linux; the other strategies exist so the
 * choice can be measured (bench/oob_alloc.py), not as user options. */
enum {
    FW_ALLOC_HEAP = 0,       /* malloc/realloc */
    FW_ALLOC_REMAP = 1,      /* mmap, grown with mremap(MREMAP_MAYMOVE) */
    FW_ALLOC_RESERVE = 2,    /* reserved PROT_NONE, committed with mprotect */
    FW_ALLOC_HUGE = 3,       /* FW_ALLOC_RESERVE + MADV_HUGEPAGE */
    FW_ALLOC_POPULATE = 4,   /* FW_ALLOC_RESERVE, committed with MAP_POPULATE */
    FW_ALLOC_HUGE_POPULATE = 5,
    FW_ALLOC_COUNT = 6
};

#define FW_HUGE_PAGE ((Py_ssize_t)2 * 1024 * 1024)

typedef struct {
    char *data;
    Py_ssize_t capacity;  /* usable (committed) bytes at data */
    Py_ssize_t reserved;  /* bytes of address space at data (mapped); == capacity for heap */
    int kind;
    int strategy;         /* the FW_ALLOC_* the block was made with */
} fw_block;

static int fw_alloc_strategy = FW_ALLOC_HEAP;
/* Buffers shorter than this are always heap blocks: a mapping costs system
 * calls and whole pages that malloc amortises. */
static Py_ssize_t fw_map_threshold = (Py_ssize_t)1024 * 1024;

static inline Py_ssize_t fw_round_up(Py_ssize_t n, Py_ssize_t to) {
    return (n + to - 1) / to * to;
}

#if FW_HAVE_MAPPED
static Py_ssize_t fw_page_size(void) {
    static Py_ssize_t page = 0;
    if (page == 0)
        page = (Py_ssize_t)sysconf(_SC_PAGESIZE);
    return page;
}

static int fw_strategy_reserves(int strategy) {
    return strategy >= FW_ALLOC_RESERVE;
}

/* Make [data + capacity, data + size) usable inside a reservation. */
static int fw_commit(fw_block *block, Py_ssize_t size) {
    char *start = block->data + block->capacity;
    size_t n = (size_t)(size - block->capacity);
    if (block->strategy == FW_ALLOC_POPULATE || block->strategy == FW_ALLOC_HUGE_POPULATE) {
        if (mmap(start, n, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, -1, 0) == MAP_FAILED)
            return -1;
        if (block->strategy == FW_ALLOC_HUGE_POPULATE)
            (void)madvise(start, n, MADV_HUGEPAGE);
    } else if (mprotect(start, n, PROT_READ | PROT_WRITE) != 0) {
        return -1;
    }
    block->capacity = size;
    return 0;
}

static int fw_map_reserve(fw_block *block, Py_ssize_t length, Py_ssize_t size, int strategy) {
    Py_ssize_t reserved = fw_round_up(length, FW_HUGE_PAGE);
    size_t span = (size_t)reserved + (size_t)FW_HUGE_PAGE;
    char *raw, *aligned;
    /* PROT_NONE + MAP_NORESERVE: address space only, nothing committed. */
    raw = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    aligned = (char *)fw_round_up((Py_ssize_t)(size_t)raw, FW_HUGE_PAGE);
    if (aligned > raw)
        munmap(raw, (size_t)(aligned - raw));
    if (raw + span > aligned + reserved)
        munmap(aligned + reserved, (size_t)(raw + span - (aligned + reserved)));
    if (strategy == FW_ALLOC_HUGE)
        (void)madvise(aligned, (size_t)reserved, MADV_HUGEPAGE);
    block->data = aligned;
    block->capacity = 0;
    block->reserved = reserved;
    block->kind = FW_BLOCK_MAPPED;
    block->strategy = strategy;
    if (fw_commit(block, fw_round_up(size, fw_page_size())) != 0) {
        munmap(aligned, (size_t)reserved);
        block->data = NULL;
        block->reserved = 0;
        block->kind = FW_BLOCK_NONE;
        return -1;
    }
    return 0;
}
#endif

/* A new block of at least `size` usable bytes for a buffer of `length` bytes
 * (size <= length; `length` is only a claim and decides the kind and the
 * address space reserved, never the memory committed). */
static int fw_block_new(fw_block *block, Py_ssize_t size, Py_ssize_t length) {
#if FW_HAVE_MAPPED
    int strategy = fw_alloc_strategy;
    if (length >= fw_map_threshold && strategy != FW_ALLOC_HEAP) {
        if (fw_strategy_reserves(strategy)) {
            if (fw_map_reserve(block, length, size, strategy) == 0)
                return 0;
            /* No address space to reserve (a 32-bit process): heap below. */
        } else {
            Py_ssize_t mapped = fw_round_up(size, fw_page_size());
            char *data = mmap(NULL, (size_t)mapped, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (data != MAP_FAILED) {
                block->data = data;
                block->capacity = block->reserved = mapped;
                block->kind = FW_BLOCK_MAPPED;
                block->strategy = strategy;
                return 0;
            }
        }
    }
#else
    (void)length;
#endif
    block->data = malloc(size > 0 ? (size_t)size : 1);
    if (block->data == NULL)
        return -1;
    block->capacity = block->reserved = size;
    block->kind = FW_BLOCK_HEAP;
    block->strategy = FW_ALLOC_HEAP;
    return 0;
}

/* Grow the usable part to at least `size` bytes (size <= the buffer's length).
 * Only called while nothing points into the block: heap and remapped blocks
 * may move. */
static int fw_block_grow(fw_block *block, Py_ssize_t size) {
    if (size <= block->capacity)
        return 0;
#if FW_HAVE_MAPPED
    if (block->kind == FW_BLOCK_MAPPED) {
        Py_ssize_t target = fw_round_up(size, fw_page_size());
        if (fw_strategy_reserves(block->strategy)) {
            if (target <= block->reserved)
                return fw_commit(block, target);
            /* A recycled reservation shorter than this buffer: move the
             * page tables, not the bytes. */
        }
        char *moved = mremap(block->data, (size_t)block->reserved, (size_t)target, MREMAP_MAYMOVE);
        if (moved == MAP_FAILED)
            return -1;
        block->data = moved;
        block->capacity = block->reserved = target;
        if (fw_strategy_reserves(block->strategy))
            block->strategy = FW_ALLOC_REMAP;  /* no longer a reservation with a PROT_NONE tail */
        return 0;
    }
#endif
    char *moved = realloc(block->data, (size_t)size);
    if (moved == NULL)
        return -1;
    block->data = moved;
    block->capacity = block->reserved = size;
    return 0;
}

/* Give back what lies past the first `size` bytes (the buffer is complete).
 * Best effort: a failure leaves the block larger, never invalid. */
static void fw_block_trim(fw_block *block, Py_ssize_t size) {
#if FW_HAVE_MAPPED
    if (block->kind == FW_BLOCK_MAPPED) {
        Py_ssize_t keep = fw_round_up(size, fw_page_size());
        if (keep >= block->capacity)
            return;
        if (fw_strategy_reserves(block->strategy)) {
            /* Back to reserved address space: discarded and uncharged at once. */
            if (mmap(block->data + keep, (size_t)(block->capacity - keep), PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) != MAP_FAILED)
                block->capacity = keep;
        } else if (munmap(block->data + keep, (size_t)(block->reserved - keep)) == 0) {
            block->capacity = block->reserved = keep;
        }
        return;
    }
#endif
    if (size < block->capacity && size > 0) {
        char *moved = realloc(block->data, (size_t)size);
        if (moved != NULL) {
            block->data = moved;
            block->capacity = block->reserved = size;
        }
    }
}

static void fw_block_free(fw_block *block) {
    if (block->data != NULL) {
#if FW_HAVE_MAPPED
        if (block->kind == FW_BLOCK_MAPPED)
            munmap(block->data, (size_t)block->reserved);
        else
#endif
            free(block->data);
    }
    memset(block, 0, sizeof(*block));
}

#endif /* FW_BLOCKS_H */
