/* nodelay.c: an LD_PRELOAD shim for the tests only, never part of chute. It sets
 * TCP_NODELAY on every TCP socket Garage 2.5.0 accepts or connects: Garage does not,
 * so each small answer on a keep-alive connection, and each inter-node RPC round,
 * waits ~40 ms for a delayed ACK (Nagle). Measured on the S3 client tests: the
 * kill-and-restart test 11.6 s without it, 3.4 s with it. tests/test-deps.sh builds
 * it into ~/.cache/chute-test; tests/util/s3.rs preloads it into Garage unless
 * CHUTE_TEST_GARAGE_NODELAY=0 (stock Garage, as a real client sees it). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static void nd(int fd) {
  int one = 1, type = 0; socklen_t l = sizeof type; struct sockaddr_storage ss; socklen_t sl = sizeof ss;
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) || type != SOCK_STREAM) return;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) return;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}
int accept4(int s, struct sockaddr *a, socklen_t *l, int f) {
  static int (*r)(int, struct sockaddr *, socklen_t *, int); if (!r) r = dlsym(RTLD_NEXT, "accept4");
  int fd = r(s, a, l, f); nd(fd); return fd;
}
int accept(int s, struct sockaddr *a, socklen_t *l) {
  static int (*r)(int, struct sockaddr *, socklen_t *); if (!r) r = dlsym(RTLD_NEXT, "accept");
  int fd = r(s, a, l); nd(fd); return fd;
}
int connect(int s, const struct sockaddr *a, socklen_t l) {
  static int (*r)(int, const struct sockaddr *, socklen_t); if (!r) r = dlsym(RTLD_NEXT, "connect");
  if (a && (a->sa_family == AF_INET || a->sa_family == AF_INET6)) { int one = 1; setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }
  return r(s, a, l);
}
