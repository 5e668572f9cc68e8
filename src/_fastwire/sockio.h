/* Socket I/O straight on a blocking file descriptor: fastwire.net's
 * per-message path.
 *
 * For a small message Python's socket methods cost more than the system call
 * (a bound method, argument parsing, a memoryview, the timeout machinery, a
 * GIL release and re-acquire). A Connection whose socket has no timeout (so
 * its descriptor is in blocking mode) calls these instead. Each first tries
 * without blocking, holding the GIL: a message to a socket with room, or from
 * one with data waiting, then costs exactly one system call. Only when the
 * kernel would block is the GIL released for a blocking call. EINTR is retried
 * after running signal handlers (PEP 475), as the socket module does.
 *
 * The descriptor is passed by address and read afresh before every system
 * call, holding the GIL: Python code that runs in between (a signal handler
 * on EINTR, another thread while the GIL was released for a blocking call)
 * may have closed the connection, and a closed descriptor's number is soon
 * reused by an unrelated socket. The owner stores -1 there before it closes
 * the socket, so a stale number is never written to or read from.
 *
 * POSIX only: on Windows FW_FAST_SOCKETS is 0 and fastwire.net keeps using
 * the socket methods (a SOCKET is not a file descriptor there).
 */
#ifndef FW_SOCKIO_H
#define FW_SOCKIO_H

#include <Python.h>

/* The owner's copy of the descriptor number: written by close() and
 * settimeout() while another thread's call may read it, so every access is
 * atomic (free-threaded builds have no GIL to order them). */
#if defined(_MSC_VER)
static int fw_fd_load(const int *fdp) { return *(const volatile int *)fdp; }
static void fw_fd_store(int *fdp, int fd) { *(volatile int *)fdp = fd; }
#else
static int fw_fd_load(const int *fdp) { return __atomic_load_n(fdp, __ATOMIC_ACQUIRE); }
static void fw_fd_store(int *fdp, int fd) { __atomic_store_n(fdp, fd, __ATOMIC_RELEASE); }
#endif

/* Pieces in one scatter-gather read: enough for the frames of a message of
 * many buffers to arrive in few system calls, within IOV_MAX (1024 on Linux,
 * macOS and the BSDs; POSIX promises only 16). */
#include <limits.h>
#if defined(IOV_MAX) && IOV_MAX < 128
#define FW_IOV_BATCH IOV_MAX
#else
#define FW_IOV_BATCH 128
#endif
/* Pieces in one scatter-gather write: as many as the platform takes. */
#if defined(IOV_MAX) && IOV_MAX < 1024
#define FW_IOV_SEND IOV_MAX
#else
#define FW_IOV_SEND 1024
#endif

#ifdef _WIN32

#define FW_FAST_SOCKETS 0
/* No MSG_DONTWAIT there: a receive with a deadline has waited for readability
 * first, so a plain recv returns at once. */
#define FW_MSG_DONTWAIT 0

static int fw_fd_send_all(const int *fdp, const char *buf, Py_ssize_t n, Py_ssize_t *sent)
{
    (void)fdp; (void)buf; (void)n;
    *sent = 0;
    PyErr_SetString(PyExc_OSError, "fastwire: no descriptor I/O on Windows");
    return -1;
}

static Py_ssize_t fw_fd_recv(const int *fdp, char *buf, Py_ssize_t n)
{
    (void)fdp; (void)buf; (void)n;
    PyErr_SetString(PyExc_OSError, "fastwire: no descriptor I/O on Windows");
    return -1;
}

typedef struct { void *iov_base; size_t iov_len; } fw_iovec;

static Py_ssize_t fw_fd_recv_vector(const int *fdp, fw_iovec *iov, int count)
{
    (void)fdp; (void)iov; (void)count;
    PyErr_SetString(PyExc_OSError, "fastwire: no descriptor I/O on Windows");
    return -1;
}

static int fw_fd_send_vector(const int *fdp, fw_iovec *iov, Py_ssize_t count, Py_ssize_t *sent)
{
    (void)fdp; (void)iov; (void)count;
    *sent = 0;
    PyErr_SetString(PyExc_OSError, "fastwire: no descriptor I/O on Windows");
    return -1;
}

/* Windows keeps TCP_NODELAY on for good: the descriptor is not one there. */
static void fw_tcp_nodelay(const int *fdp, int on)
{
    (void)fdp; (void)on;
}

#else

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define FW_FAST_SOCKETS 1
#define FW_MSG_DONTWAIT MSG_DONTWAIT

static int fw_would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

/* The descriptor at *fdp, or -1 with multiprocessing.connection's OSError
 * for a closed connection set. */
static int fw_fd_current(const int *fdp)
{
    int fd = fw_fd_load(fdp);
    if (fd < 0)
        PyErr_SetString(PyExc_OSError, "handle is closed");
    return fd;
}

/* A scatter-gather vector: struct iovec (one type on both platforms for the
 * callers; Windows has no descriptor I/O, see above). */
#include <sys/uio.h>
typedef struct iovec fw_iovec;

/* One system call: send(2) or recv(2) of buf[:n] (`writing` chooses), or,
 * when `iov` is given, sendmsg(2) or recvmsg(2) over its `count` pieces. */
static ssize_t fw_sys(int fd, char *buf, Py_ssize_t n, fw_iovec *iov, int count, int writing, int flags)
{
    if (iov != NULL) {
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)count;
        return writing ? sendmsg(fd, &msg, flags) : recvmsg(fd, &msg, flags);
    }
    return writing ? send(fd, buf, (size_t)n, flags) : recv(fd, buf, (size_t)n, flags);
}

/* One fw_sys() call: first without blocking, holding the GIL, then, if the
 * kernel would block, blocking without it. How many bytes moved (0 from a
 * read: end of stream), or -1 with an exception set. */
static Py_ssize_t fw_fd_io(const int *fdp, char *buf, Py_ssize_t n, fw_iovec *iov, int count, int writing)
{
    for (;;) {
        int fd = fw_fd_current(fdp);
        if (fd < 0)
            return -1;
        ssize_t k = fw_sys(fd, buf, n, iov, count, writing, MSG_DONTWAIT);
        int err = k < 0 ? errno : 0;
        if (k < 0 && fw_would_block(err)) {
            Py_BEGIN_ALLOW_THREADS
            k = fw_sys(fd, buf, n, iov, count, writing, 0);
            err = k < 0 ? errno : 0;
            Py_END_ALLOW_THREADS
        }
        if (k >= 0)
            return (Py_ssize_t)k;
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
}

/* Write all n bytes; 0, or -1 with an exception set. *sent counts the bytes
 * written either way (a caller must not reuse a stream cut mid-message). */
static int fw_fd_send_all(const int *fdp, const char *buf, Py_ssize_t n, Py_ssize_t *sent)
{
    *sent = 0;
    while (n > 0) {
        Py_ssize_t k = fw_fd_io(fdp, (char *)buf, n, NULL, 0, 1);
        if (k < 0)
            return -1;
        buf += k;
        n -= k;
        *sent += k;
    }
    return 0;
}

/* One read of up to n bytes: how many arrived, 0 at end of stream, or -1 with
 * an exception set. */
static Py_ssize_t fw_fd_recv(const int *fdp, char *buf, Py_ssize_t n)
{
    return fw_fd_io(fdp, buf, n, NULL, 0, 0);
}

/* Write the `count` pieces of `iov` in order (any count: in batches the
 * platform takes); 0, or -1 with an exception set. *sent counts the bytes
 * written either way. `iov` is consumed: its pieces are advanced past what
 * was written. */
static int fw_fd_send_vector(const int *fdp, fw_iovec *iov, Py_ssize_t count, Py_ssize_t *sent)
{
    *sent = 0;
    while (count > 0) {
        int batch = count < FW_IOV_SEND ? (int)count : FW_IOV_SEND;
        Py_ssize_t k = fw_fd_io(fdp, NULL, 0, iov, batch, 1);
        if (k < 0)
            return -1;
        *sent += k;
        while (count > 0 && (size_t)k >= iov->iov_len) {
            k -= (Py_ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (k > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

/* One read scattered over the `count` pieces of `iov` (count <= IOV_MAX):
 * how many bytes arrived, 0 at end of stream, or -1 with an exception set. */
static Py_ssize_t fw_fd_recv_vector(const int *fdp, fw_iovec *iov, int count)
{
    return fw_fd_io(fdp, NULL, 0, iov, count, 0);
}

/* Turn TCP_NODELAY on or off on the descriptor at *fdp, if it is still open.
 * Turning it on also sends at once whatever Nagle's algorithm was holding
 * back (Linux's tcp_sock_set_nodelay pushes the pending segments). A failure
 * is ignored: it changes when bytes leave, never which, and the next send or
 * receive on a broken socket reports the error. */
static void fw_tcp_nodelay(const int *fdp, int on)
{
    int fd = fw_fd_load(fdp);
    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

#endif /* _WIN32 */
#endif /* FW_SOCKIO_H */
