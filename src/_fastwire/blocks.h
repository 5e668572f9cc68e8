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
#ifdef MADV_POPULATE_WRITE
#define FW_MADV_POPULATE_WRITE MADV_POPULATE_WRITE
#else
#define FW_MADV_POPULATE_WRITE 23
#endif
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

/* Measured receiving 64 MiB over AF_UNIX (docs/net.md, "Receive memory"):
 * huge pages fault in 512 times fewer pages than fresh 4 KiB ones. */
#if FW_HAVE_MAPPED
static int fw_alloc_strategy = FW_ALLOC_HUGE;
#else
static int fw_alloc_strategy = FW_ALLOC_HEAP;
#endif
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
    if (block->strategy == FW_ALLOC_POPULATE) {
        if (mmap(start, n, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, -1, 0) == MAP_FAILED)
            return -1;
    } else {
        if (mprotect(start, n, PROT_READ | PROT_WRITE) != 0)
            return -1;
        /* A new mapping would drop the huge-page advice: populate in place
         * (Linux 5.14+; older kernels refuse, and the pages fault in later). */
        if (block->strategy == FW_ALLOC_HUGE_POPULATE)
            (void)madvise(start, n, FW_MADV_POPULATE_WRITE);
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
    if (strategy == FW_ALLOC_HUGE || strategy == FW_ALLOC_HUGE_POPULATE)
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

static void fw_block_free(fw_block *block);

/* A new block of `size` bytes holding the old one's bytes; the old one is freed. */
static int fw_block_move(fw_block *block, Py_ssize_t size) {
    fw_block fresh;
    if (fw_block_new(&fresh, size, size) != 0)
        return -1;
    memcpy(fresh.data, block->data, (size_t)block->capacity);
    fw_block_free(block);
    *block = fresh;
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
        if (block->reserved > block->capacity) {
            /* mremap takes one mapping: drop the PROT_NONE tail first. */
            if (munmap(block->data + block->capacity, (size_t)(block->reserved - block->capacity)) != 0)
                return fw_block_move(block, size);
            block->reserved = block->capacity;
        }
        char *moved = mremap(block->data, (size_t)block->capacity, (size_t)target, MREMAP_MAYMOVE);
        if (moved == MAP_FAILED)  /* e.g. committed in pieces that did not merge */
            return fw_block_move(block, size);
        block->data = moved;
        block->capacity = block->reserved = target;
        block->strategy = FW_ALLOC_REMAP;
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

/* ---- the pool of recently freed large blocks ---------------------------------
 *
 * Paging in fresh memory (a fault and a zeroed page per 4 KiB) costs more than
 * receiving into it, so a large block whose buffer was dropped is kept for the
 * next receive. The pool is bounded in blocks and in bytes, holds only blocks of
 * at least fw_map_threshold bytes, and drops its oldest block to make room.
 * Blocks are returned from a ReceiveBuffer's deallocation, on any thread, so
 * the pool is guarded by its own spin lock (an atomic flag, held for a few
 * loads and stores and never across a system call or Python), not by the GIL. */
#define FW_POOL_SLOTS 64

static fw_block fw_pool[FW_POOL_SLOTS];
static int fw_pool_count = 0;
static Py_ssize_t fw_pool_bytes = 0;
static Py_ssize_t fw_pool_max_blocks = 4;
static Py_ssize_t fw_pool_max_bytes = (Py_ssize_t)256 * 1024 * 1024;
static char fw_pool_locked = 0;

#if defined(_MSC_VER)
#include <intrin.h>
#include <windows.h>
static void fw_pool_lock(void) {
    while (_InterlockedExchange8(&fw_pool_locked, 1))
        SwitchToThread();
}
static void fw_pool_unlock(void) { _InterlockedExchange8(&fw_pool_locked, 0); }
static int fw_pool_peek_count(void) { return *(volatile int *)&fw_pool_count; }
static void fw_pool_set_count(int n) { *(volatile int *)&fw_pool_count = n; }
#else
#include <sched.h>
static void fw_pool_lock(void) {
    while (__atomic_exchange_n(&fw_pool_locked, 1, __ATOMIC_ACQUIRE))
        sched_yield();
}
static void fw_pool_unlock(void) { __atomic_store_n(&fw_pool_locked, 0, __ATOMIC_RELEASE); }
/* Unlocked, so only a hint: an empty pool costs no lock. */
static int fw_pool_peek_count(void) { return __atomic_load_n(&fw_pool_count, __ATOMIC_RELAXED); }
/* Locked writers store atomically for that unlocked reader. */
static void fw_pool_set_count(int n) { __atomic_store_n(&fw_pool_count, n, __ATOMIC_RELAXED); }
#endif

#if !defined(_WIN32)
#include <pthread.h>
/* A fork while another thread held the lock must not leave the child's pool
 * locked forever; the child owns its copy of the pooled blocks. */
static void fw_pool_after_fork(void) { fw_pool_locked = 0; }
#endif

static void fw_pool_init(void) {
#if !defined(_WIN32)
    (void)pthread_atfork(NULL, NULL, fw_pool_after_fork);
#endif
}

/* Take the pooled block best suited to a buffer of `length` bytes: of those
 * at most twice as large (a larger one would be trimmed, its pages lost), the
 * smallest that holds it, else the largest. 0 if none (or `length` is small). */
static int fw_pool_take(fw_block *out, Py_ssize_t length) {
    int i, best = -1;
    if (length < fw_map_threshold || fw_pool_peek_count() == 0)
        return 0;
    fw_pool_lock();
    for (i = 0; i < fw_pool_count; i++) {
        Py_ssize_t c = fw_pool[i].capacity;
        if (c / 2 > length)
            continue;
        if (best < 0) {
            best = i;
        } else {
            Py_ssize_t b = fw_pool[best].capacity;
            if ((c >= length && (b < length || c < b)) || (c < length && b < length && c > b))
                best = i;
        }
    }
    if (best >= 0) {
        *out = fw_pool[best];
        fw_pool_bytes -= out->capacity;
        fw_pool_set_count(fw_pool_count - 1);
        memmove(&fw_pool[best], &fw_pool[best + 1], sizeof(fw_block) * (size_t)(fw_pool_count - best));
    }
    fw_pool_unlock();
    return best >= 0;
}

/* Bring the pool within its bounds, keeping room for `incoming` more bytes in
 * one more block; the blocks dropped (oldest first) go to `dropped`. Locked. */
static int fw_pool_shed(Py_ssize_t incoming, int slots, fw_block *dropped) {
    int n = 0;
    while (fw_pool_count > 0 &&
           (fw_pool_count + slots > fw_pool_max_blocks ||
            fw_pool_bytes + incoming > fw_pool_max_bytes)) {
        dropped[n++] = fw_pool[0];
        fw_pool_bytes -= fw_pool[0].capacity;
        fw_pool_set_count(fw_pool_count - 1);
        memmove(&fw_pool[0], &fw_pool[1], sizeof(fw_block) * (size_t)fw_pool_count);
    }
    return n;
}

/* Give a block back: pooled if large and within the bounds, else freed. */
static void fw_block_release(fw_block *block) {
    fw_block dropped[FW_POOL_SLOTS];
    int i, n = 0, pooled = 0;
    if (block->data == NULL)
        return;
    if (block->capacity >= fw_map_threshold) {
        fw_pool_lock();
        if (block->capacity <= fw_pool_max_bytes && fw_pool_max_blocks > 0) {
            n = fw_pool_shed(block->capacity, 1, dropped);
            fw_pool[fw_pool_count] = *block;
            fw_pool_set_count(fw_pool_count + 1);
            fw_pool_bytes += block->capacity;
            pooled = 1;
        }
        fw_pool_unlock();
    }
    for (i = 0; i < n; i++)
        fw_block_free(&dropped[i]);
    if (pooled)
        memset(block, 0, sizeof(*block));
    else
        fw_block_free(block);
}

/* Set the bounds (a negative value keeps the current one), freeing the
 * blocks now beyond them; report the bounds and what the pool holds. */
static void fw_pool_configure(Py_ssize_t max_blocks, Py_ssize_t max_bytes, Py_ssize_t *out) {
    fw_block dropped[FW_POOL_SLOTS];
    int i, n;
    fw_pool_lock();
    if (max_blocks >= 0)
        fw_pool_max_blocks = max_blocks < FW_POOL_SLOTS ? max_blocks : FW_POOL_SLOTS;
    if (max_bytes >= 0)
        fw_pool_max_bytes = max_bytes;
    n = fw_pool_shed(0, 0, dropped);
    out[0] = fw_pool_max_blocks;
    out[1] = fw_pool_max_bytes;
    out[2] = fw_pool_count;
    out[3] = fw_pool_bytes;
    fw_pool_unlock();
    for (i = 0; i < n; i++)
        fw_block_free(&dropped[i]);
}

#endif /* FW_BLOCKS_H */
