# The memory blocks received out-of-band buffers live in (blocks.h): heap
# blocks everywhere, reserved-then-committed mappings on Linux.

cdef extern from "blocks.h":
    ctypedef struct fw_block:
        char* data
        Py_ssize_t capacity
        Py_ssize_t reserved
        int kind
        int strategy
    int FW_BLOCK_MAPPED
    int FW_ALLOC_COUNT
    int fw_alloc_strategy
    int fw_block_new(fw_block* block, Py_ssize_t size, Py_ssize_t length) noexcept
    int fw_block_grow(fw_block* block, Py_ssize_t size) noexcept
    void fw_block_trim(fw_block* block, Py_ssize_t size) noexcept
    void fw_block_free(fw_block* block) noexcept
