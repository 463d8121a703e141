/*
 * bakker_native: the few Linux calls Node does not expose, all synchronous and
 * all taking Buffer paths (names need not be UTF-8):
 *   getXattrs(path)            -> null | [name, value, name, value, ...]  (never follows symlinks)
 *   setXattr(path, name, value)                                          (never follows symlinks)
 *   utimens(path, atS, atNs, mtS, mtNs)                                  (never follows symlinks)
 *   mknod(path, mode, dev)
 *   syncfs(path)               flushes the whole filesystem holding path
 *   linkBatch(root, pairs, count, results)  many hard links off the main thread (see below)
 *   metaBatch(root, paths, count, meta, results)  owner, mode and times of many folders (see below)
 *   copyIn(...)                one whole file copy off the main thread (see below)
 *   scanDir(dir)               one directory, sorted and lstat'ed, in one call (see below)
 *   zstdCompress, zstdCompressSync, zstdFrame, zstdDecompressSync   zstd frames (see below)
 * Errors are thrown as Error objects with .code ("ENOENT", ...), .errno and .syscall.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <dirent.h>
#include <malloc.h>
#include <limits.h>

#define PATH_MAX_BYTES 8192

/* An Error like Node's own: "ENOENT: No such file or directory, open 'path'" with .code, .errno, .syscall. */
static napi_value errno_error(napi_env env, int err, const char *syscall, const char *path) {
  const char *name = strerrorname_np(err);
  char msg[PATH_MAX_BYTES + 256];
  snprintf(msg, sizeof msg, "%s: %s, %s '%s'", name ? name : "EUNKNOWN", strerror(err), syscall, path ? path : "");
  napi_value jmsg, jerr, jcode, jerrno, jsys;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_error(env, NULL, jmsg, &jerr);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &jcode);
  napi_create_int32(env, -err, &jerrno);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &jsys);
  napi_set_named_property(env, jerr, "code", jcode);
  napi_set_named_property(env, jerr, "errno", jerrno);
  napi_set_named_property(env, jerr, "syscall", jsys);
  return jerr;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  napi_throw(env, errno_error(env, err, syscall, path));
  return NULL;
}

/* Queues `execute` on the thread pool and returns the promise that `complete` settles. */
static napi_value queue_job(napi_env env, const char *name, napi_async_execute_callback execute,
                            napi_async_complete_callback complete, void *data, napi_deferred *deferred,
                            napi_async_work *work) {
  napi_value promise, jname;
  napi_create_promise(env, deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &jname);
  napi_create_async_work(env, NULL, jname, execute, complete, data, work);
  napi_queue_async_work(env, *work);
  return promise;
}

/* Copies a Buffer argument into a NUL-terminated C string. Returns 0 on failure (exception set). */
static int get_path(napi_env env, napi_value v, char *out, size_t cap) {
  bool is_buf = false;
  napi_is_buffer(env, v, &is_buf);
  if (is_buf) {
    void *data; size_t len;
    napi_get_buffer_info(env, v, &data, &len);
    if (len + 1 > cap || memchr(data, 0, len)) { napi_throw_type_error(env, NULL, "path too long or contains NUL"); return 0; }
    memcpy(out, data, len); out[len] = 0; return 1;
  }
  size_t len;
  if (napi_get_value_string_utf8(env, v, out, cap, &len) != napi_ok) { napi_throw_type_error(env, NULL, "path must be a Buffer or string"); return 0; }
  return 1;
}

static napi_value get_xattrs(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_MAX_BYTES];
  if (!get_path(env, argv[0], path, sizeof path)) return NULL;
  char stackbuf[4096]; char *names = stackbuf; ssize_t n;
  n = llistxattr(path, names, sizeof stackbuf);
  if (n < 0 && errno == ERANGE) {
    ssize_t want = llistxattr(path, NULL, 0);
    if (want < 0) return throw_errno(env, errno, "llistxattr", path);
    names = malloc(want + 1);
    n = llistxattr(path, names, want);
  }
  napi_value result;
  if (n < 0) {
    int e = errno;
    if (names != stackbuf) free(names);
    if (e == ENOTSUP) { napi_get_null(env, &result); return result; }
    return throw_errno(env, e, "llistxattr", path);
  }
  if (n == 0) { napi_get_null(env, &result); return result; }
  napi_create_array(env, &result);
  uint32_t idx = 0;
  char vstack[4096];
  for (char *p = names; p < names + n; p += strlen(p) + 1) {
    char *val = vstack; ssize_t vn = lgetxattr(path, p, vstack, sizeof vstack);
    if (vn < 0 && errno == ERANGE) {
      ssize_t want = lgetxattr(path, p, NULL, 0);
      if (want >= 0) { val = malloc(want + 1); vn = lgetxattr(path, p, val, want); }
    }
    if (vn < 0) {
      int e = errno;
      if (val != vstack) free(val);
      if (e == ENODATA) continue; /* removed between list and get */
      if (names != stackbuf) free(names);
      return throw_errno(env, e, "lgetxattr", path);
    }
    napi_value jname, jval;
    napi_create_string_utf8(env, p, NAPI_AUTO_LENGTH, &jname);
    void *dst;
    napi_create_buffer_copy(env, (size_t)vn, val, &dst, &jval);
    if (val != vstack) free(val);
    napi_set_element(env, result, idx++, jname);
    napi_set_element(env, result, idx++, jval);
  }
  if (names != stackbuf) free(names);
  return result;
}

static napi_value set_xattr(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_MAX_BYTES], name[1024];
  if (!get_path(env, argv[0], path, sizeof path)) return NULL;
  if (!get_path(env, argv[1], name, sizeof name)) return NULL;
  void *data; size_t len;
  napi_get_buffer_info(env, argv[2], &data, &len);
  if (lsetxattr(path, name, data, len, 0) != 0) return throw_errno(env, errno, "lsetxattr", path);
  return NULL;
}

static int64_t get_i64(napi_env env, napi_value v) { int64_t x = 0; napi_get_value_int64(env, v, &x); return x; }

static napi_value utimens(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_MAX_BYTES];
  if (!get_path(env, argv[0], path, sizeof path)) return NULL;
  struct timespec ts[2];
  ts[0].tv_sec = get_i64(env, argv[1]); ts[0].tv_nsec = get_i64(env, argv[2]);
  ts[1].tv_sec = get_i64(env, argv[3]); ts[1].tv_nsec = get_i64(env, argv[4]);
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) return throw_errno(env, errno, "utimensat", path);
  return NULL;
}

static napi_value do_mknod(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_MAX_BYTES];
  if (!get_path(env, argv[0], path, sizeof path)) return NULL;
  int64_t mode = get_i64(env, argv[1]), dev = get_i64(env, argv[2]);
  if (mknod(path, (mode_t)mode, (dev_t)dev) != 0) return throw_errno(env, errno, "mknod", path);
  return NULL;
}

static napi_value do_syncfs(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_MAX_BYTES];
  if (!get_path(env, argv[0], path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  int rc = syncfs(fd); int e = errno;
  close(fd);
  if (rc != 0) return throw_errno(env, e, "syncfs", path);
  return NULL;
}

/*
 * removeTree(path) -> Promise<void>: removes `path` and everything under it on the thread pool
 * (rm -rf without following symlinks: they are unlinked, directories opened with O_NOFOLLOW,
 * entry types from readdir's d_type). Missing is not an error. Rejects with the first errno.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char path[PATH_MAX_BYTES];
  int err; char failed[PATH_MAX_BYTES];
} rm_job_t;

static int rm_dir_at(int dfd, const char *name, rm_job_t *j);

static int rm_entry_at(int dfd, const char *name, unsigned char type, rm_job_t *j) {
  if (type != DT_DIR && type != DT_UNKNOWN) {
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT) return 0;
    if (errno != EISDIR) { snprintf(j->failed, sizeof j->failed, "%s", name); return errno; }
  } else if (type == DT_UNKNOWN) {
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : errno;
    if (!S_ISDIR(st.st_mode)) {
      if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT) return 0;
      snprintf(j->failed, sizeof j->failed, "%s", name);
      return errno;
    }
  }
  return rm_dir_at(dfd, name, j);
}

static int rm_dir_at(int dfd, const char *name, rm_job_t *j) {
  for (int pass = 0; pass < 3; pass++) {
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : errno;
    DIR *d = fdopendir(fd);
    if (!d) { int e = errno; close(fd); return e; }
    int err = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      if (de->d_name[0] == '.' && (de->d_name[1] == 0 || (de->d_name[1] == '.' && de->d_name[2] == 0))) continue;
      int e = rm_entry_at(dirfd(d), de->d_name, de->d_type, j);
      if (e && !err) err = e;
    }
    closedir(d);
    if (err) return err;
    if (unlinkat(dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
    if (errno != ENOTEMPTY) { snprintf(j->failed, sizeof j->failed, "%s", name); return errno; }
    /* entries seen late by readdir: another pass */
  }
  return ENOTEMPTY;
}

static void rm_execute(napi_env env, void *data) {
  (void)env;
  rm_job_t *j = data;
  j->err = rm_entry_at(AT_FDCWD, j->path, DT_UNKNOWN, j);
}

static void rm_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  rm_job_t *j = data;
  if (j->err) napi_reject_deferred(env, j->deferred, errno_error(env, j->err, "remove", j->failed[0] ? j->failed : j->path));
  else {
    napi_value u; napi_get_undefined(env, &u);
    napi_resolve_deferred(env, j->deferred, u);
  }
  napi_delete_async_work(env, j->work);
  free(j);
}

/* A job on one path (rm_job_t) whose promise rm_complete settles: rejected when j->err is set. */
static napi_value queue_path_job(napi_env env, napi_callback_info info, const char *name, napi_async_execute_callback execute) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  rm_job_t *j = calloc(1, sizeof *j);
  if (!get_path(env, argv[0], j->path, sizeof j->path)) { free(j); return NULL; }
  return queue_job(env, name, execute, rm_complete, j, &j->deferred, &j->work);
}

static napi_value remove_tree(napi_env env, napi_callback_info info) {
  return queue_path_job(env, info, "bakker.removeTree", rm_execute);
}

/*
 * syncfsSoon(path) -> Promise<void>: syncfs on the thread pool (a backup starts one now and then
 * while it writes, so the disk works during the walk and the sync before publishing finds
 * little left). Never rejects: the sync that matters is the one the run waits for.
 */
static void syncfs_execute(napi_env env, void *data) {
  (void)env;
  rm_job_t *j = data;
  int fd = open(j->path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) { syncfs(fd); close(fd); }
}

static napi_value syncfs_soon(napi_env env, napi_callback_info info) {
  return queue_path_job(env, info, "bakker.syncfsSoon", syncfs_execute);
}

/*
 * linkBatch(root, pairs, count, results) -> Promise<void>
 * Hard-links `count` pairs on the libuv thread pool, so the caller's thread keeps walking.
 * `pairs` holds "from\0to\0" for each pair, both relative to the directory `root`;
 * results[i] receives 0 or the errno of pair i. The caller must not touch `pairs` or
 * `results` until the promise settles (both are referenced until then).
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref pairs_ref, results_ref;
  char root[PATH_MAX_BYTES];
  const char *pairs;
  size_t pairs_len;
  int32_t *results;
  uint32_t count;
  int open_errno;
} link_batch_t;

/*
 * Thread-pool threads running bulk work (links, copies) yield the CPU to the main thread, which
 * walks the source and feeds them: on a machine with few cores the walk is the critical path.
 */
static void thread_nice(int nice) {
  static __thread int current = 0, batch = 0;
  if (!batch) {
    /* SCHED_BATCH: a woken pool thread does not preempt the main thread, which has just queued
       its work and has more to queue (on two cores that preemption cost the walk ~0.1 ms a call:
       0.3 s of a 100k-file incremental run; docs/PERFORMANCE.md). */
    struct sched_param sp = {0};
    sched_setscheduler(0, SCHED_BATCH, &sp);
    batch = 1;
    current = 0;
  }
  if (current != nice && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) == 0) current = nice;
}
static void lower_priority_once(void) { thread_nice(5); }

/* An open directory, reused while consecutive pairs stay in it (saves a path walk per link). */
typedef struct { int fd; size_t len; char path[PATH_MAX_BYTES]; } dir_cache_t;

static int cached_dir(int root, dir_cache_t *c, const char *p, size_t len) {
  if (len == 0) return root;
  if (c->fd >= 0 && c->len == len && memcmp(c->path, p, len) == 0) return c->fd;
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  if (len >= sizeof c->path) { errno = ENAMETOOLONG; return -1; }
  memcpy(c->path, p, len); c->path[len] = 0; c->len = len;
  c->fd = openat(root, c->path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  return c->fd;
}

static int link_one(int root, dir_cache_t *from_dir, dir_cache_t *to_dir, const char *from, const char *to) {
  const char *fs = strrchr(from, '/'), *ts = strrchr(to, '/');
  int fd = cached_dir(root, from_dir, from, fs ? (size_t)(fs - from) : 0);
  if (fd < 0) return errno;
  int td = cached_dir(root, to_dir, to, ts ? (size_t)(ts - to) : 0);
  if (td < 0) return errno;
  return linkat(fd, fs ? fs + 1 : from, td, ts ? ts + 1 : to, 0) == 0 ? 0 : errno;
}

static void link_batch_execute(napi_env env, void *data) {
  (void)env;
  link_batch_t *b = data;
  lower_priority_once();
  int dfd = open(b->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) { b->open_errno = errno; return; }
  dir_cache_t *from_dir = malloc(sizeof *from_dir), *to_dir = malloc(sizeof *to_dir);
  from_dir->fd = to_dir->fd = -1;
  const char *p = b->pairs, *end = b->pairs + b->pairs_len;
  for (uint32_t i = 0; i < b->count; i++) {
    const char *from = p;
    const char *to = memchr(from, 0, end - from);
    if (!to) { b->results[i] = EINVAL; break; }
    to++;
    const char *next = memchr(to, 0, end - to);
    if (!next) { b->results[i] = EINVAL; break; }
    b->results[i] = link_one(dfd, from_dir, to_dir, from, to);
    p = next + 1;
  }
  if (from_dir->fd >= 0) close(from_dir->fd);
  if (to_dir->fd >= 0) close(to_dir->fd);
  free(from_dir); free(to_dir);
  close(dfd);
}

/* Settles a batch job's promise: the root could not be opened, the job failed, or done. */
static void settle_batch(napi_env env, napi_status status, napi_deferred deferred, int open_errno, const char *root, const char *what) {
  if (open_errno) {
    napi_reject_deferred(env, deferred, errno_error(env, open_errno, "open", root));
  } else if (status != napi_ok) {
    napi_value msg, err;
    napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, deferred, err);
  } else {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, deferred, undef);
  }
}

static void link_batch_complete(napi_env env, napi_status status, void *data) {
  link_batch_t *b = data;
  settle_batch(env, status, b->deferred, b->open_errno, b->root, "linkBatch failed");
  napi_delete_reference(env, b->pairs_ref);
  napi_delete_reference(env, b->results_ref);
  napi_delete_async_work(env, b->work);
  free(b);
}

/* A typed array argument of `type` with at least `min` elements (its length into *len_out when
 * asked); throws a TypeError naming `what` otherwise. */
static bool get_typed(napi_env env, napi_value v, napi_typedarray_type type, size_t min, void **data, const char *what, size_t *len_out) {
  napi_typedarray_type tt; size_t len; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &tt, &len, data, &ab, &off) != napi_ok || tt != type || len < min) {
    napi_throw_type_error(env, NULL, what);
    return false;
  }
  if (len_out) *len_out = len;
  return true;
}

static napi_value link_batch(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  link_batch_t *b = calloc(1, sizeof *b);
  if (!get_path(env, argv[0], b->root, sizeof b->root)) { free(b); return NULL; }
  void *pairs; size_t plen;
  if (napi_get_buffer_info(env, argv[1], &pairs, &plen) != napi_ok) { free(b); napi_throw_type_error(env, NULL, "pairs must be a Buffer"); return NULL; }
  uint32_t count; napi_get_value_uint32(env, argv[2], &count);
  void *tdata;
  if (!get_typed(env, argv[3], napi_int32_array, count, &tdata, "results must be an Int32Array of at least count", NULL)) { free(b); return NULL; }
  b->pairs = pairs; b->pairs_len = plen; b->results = tdata; b->count = count;
  napi_create_reference(env, argv[1], 1, &b->pairs_ref);
  napi_create_reference(env, argv[3], 1, &b->results_ref);
  return queue_job(env, "bakker.linkBatch", link_batch_execute, link_batch_complete, b, &b->deferred, &b->work);
}

/*
 * metaBatch(root, paths, count, meta, results) -> Promise<void>
 * Sets owner, mode and times of `count` paths (relative to `root`, "p\0" each, in the order
 * given) on the thread pool. meta holds 5 doubles per path: mode, uid (-1: keep owner), gid,
 * mtime s, mtime ns. results[i] receives 0 or the errno of path i. Never follows a symlink for
 * owner and times; meant for directories the caller made.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref paths_ref, meta_ref, results_ref;
  char root[PATH_MAX_BYTES];
  const char *paths; size_t paths_len;
  const double *meta;
  int32_t *results;
  uint32_t count;
  int open_errno;
} meta_batch_t;

static void meta_batch_execute(napi_env env, void *data) {
  (void)env;
  meta_batch_t *b = data;
  lower_priority_once();
  int dfd = open(b->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) { b->open_errno = errno; return; }
  const char *p = b->paths, *end = b->paths + b->paths_len;
  for (uint32_t i = 0; i < b->count; i++) {
    const char *next = memchr(p, 0, end - p);
    if (!next) { b->results[i] = EINVAL; break; }
    const double *m = b->meta + 5 * (size_t)i;
    int err = 0;
    if (m[1] >= 0 && fchownat(dfd, p, (uid_t)m[1], (gid_t)m[2], AT_SYMLINK_NOFOLLOW) != 0) err = errno;
    if (!err && fchmodat(dfd, p, (mode_t)m[0], 0) != 0) err = errno;
    if (!err) {
      struct timespec ts[2];
      ts[0].tv_sec = ts[1].tv_sec = (time_t)m[3];
      ts[0].tv_nsec = ts[1].tv_nsec = (long)m[4];
      if (utimensat(dfd, p, ts, AT_SYMLINK_NOFOLLOW) != 0) err = errno;
    }
    b->results[i] = err;
    p = next + 1;
  }
  close(dfd);
}

static void meta_batch_complete(napi_env env, napi_status status, void *data) {
  meta_batch_t *b = data;
  settle_batch(env, status, b->deferred, b->open_errno, b->root, "metaBatch failed");
  napi_delete_reference(env, b->paths_ref);
  napi_delete_reference(env, b->meta_ref);
  napi_delete_reference(env, b->results_ref);
  napi_delete_async_work(env, b->work);
  free(b);
}

static napi_value meta_batch(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  meta_batch_t *b = calloc(1, sizeof *b);
  if (!get_path(env, argv[0], b->root, sizeof b->root)) { free(b); return NULL; }
  void *paths; size_t plen;
  if (napi_get_buffer_info(env, argv[1], &paths, &plen) != napi_ok) { free(b); napi_throw_type_error(env, NULL, "paths must be a Buffer"); return NULL; }
  uint32_t count; napi_get_value_uint32(env, argv[2], &count);
  void *mdata, *rdata;
  if (!get_typed(env, argv[3], napi_float64_array, 5 * (size_t)count, &mdata, "meta must be a Float64Array of 5 per path", NULL) ||
      !get_typed(env, argv[4], napi_int32_array, count, &rdata, "results must be an Int32Array of at least count", NULL)) { free(b); return NULL; }
  b->paths = paths; b->paths_len = plen; b->meta = mdata; b->results = rdata; b->count = count;
  napi_create_reference(env, argv[1], 1, &b->paths_ref);
  napi_create_reference(env, argv[3], 1, &b->meta_ref);
  napi_create_reference(env, argv[4], 1, &b->results_ref);
  return queue_job(env, "bakker.metaBatch", meta_batch_execute, meta_batch_complete, b, &b->deferred, &b->work);
}

/*
 * copyIn(src, dest, flags, mode, uid, gid, mtimeSec, mtimeNsec) -> Promise<Float64Array>
 * One whole file copy on the thread pool: open `src` (O_NOFOLLOW, O_NOATIME when allowed),
 * create `dest` (O_EXCL), copy with copy_file_range (read/write when the kernel cannot),
 * skipping holes with SEEK_DATA/SEEK_HOLE when flags&1 (sparse), then fchown (flags&2), fchmod,
 * futimens. The source's fstat once all of it was read is the state the caller compares with
 * what the walk saw (equal: the file did not change from the walk to the end of the copy); it
 * also tells where the end is, so no last copy_file_range has to return 0.
 * Result: [stage, errno, bytes, <state: size, mtS, mtNs, ctS, ctNs, ino, isReg>, <the same again>]
 * (the two states were "before" and "after" the copy; one fstat says as much: 2 system calls
 * of 11 less per file). stage 0 ok; 1 the source could not be opened or read (EINVAL: not a
 * regular file); 2 the destination failed.
 * On failure the destination is removed.
 */
#define COPY_FIELDS 17
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char src[PATH_MAX_BYTES], dest[PATH_MAX_BYTES];
  int flags; int64_t mode, uid, gid, mts, mtns;
  double out[COPY_FIELDS];
} copy_job_t;

static void put_stat(double *o, const struct stat *st) {
  o[0] = (double)st->st_size; o[1] = (double)st->st_mtim.tv_sec; o[2] = (double)st->st_mtim.tv_nsec;
  o[3] = (double)st->st_ctim.tv_sec; o[4] = (double)st->st_ctim.tv_nsec; o[5] = (double)st->st_ino;
  o[6] = S_ISREG(st->st_mode) ? 1 : 0;
}

static int copy_plain(int in, int out, off_t start, off_t end, double *bytes) {
  static __thread char *buf = NULL;
  if (!buf) buf = malloc(1 << 20);
  off_t pos = start;
  while (end < 0 || pos < end) {
    size_t want = 1 << 20;
    if (end >= 0 && (off_t)want > end - pos) want = end - pos;
    ssize_t n = pread(in, buf, want, pos);
    if (n < 0) { if (errno == EINTR) continue; return -1; }
    if (n == 0) break;
    ssize_t off = 0;
    while (off < n) {
      ssize_t w = pwrite(out, buf + off, n - off, pos + off);
      if (w < 0) { if (errno == EINTR) continue; return -2; }
      off += w;
    }
    pos += n; *bytes += n;
  }
  return 0;
}

/*
 * Copies [start, end) (end < 0: to EOF). Returns 0, -1 (read side failed) or -2 (write side).
 * With `st` (to EOF only), the source's fstat after each piece says where the end is, so no last
 * copy_file_range has to return 0; *st is then the source's state at the end (*have_st = 1).
 */
static int copy_range(int in, int out, off_t start, off_t end, double *bytes, int *use_cfr, struct stat *st, int *have_st) {
  off_t pos = start;
  while (*use_cfr && (end < 0 || pos < end)) {
    size_t want = end < 0 ? (1 << 30) : (size_t)(end - pos);
    if (want > (1 << 30)) want = 1 << 30;
    loff_t ip = pos, op = pos;
    ssize_t n = copy_file_range(in, &ip, out, &op, want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP || errno == EBADF) { *use_cfr = 0; break; }
      if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG) return -2;
      return -1;
    }
    if (n == 0) {
      if (have_st) *have_st = 0; /* shrunk since the last fstat: the caller takes it again */
      return 0;
    }
    pos += n; *bytes += n;
    if (st) {
      if (fstat(in, st) != 0) return -1;
      *have_st = 1;
      if (pos >= st->st_size) return 0;
    }
  }
  if (end >= 0 && pos >= end) return 0;
  /* copy_file_range refuses what is not a regular file (a FIFO or a device swapped in since
   * the walk): read() must not copy those either (a device could fill the store). */
  struct stat now;
  if (fstat(in, &now) != 0) return -1;
  if (!S_ISREG(now.st_mode)) { errno = EINVAL; return -1; }
  if (have_st) *have_st = 0; /* the state is taken again after the plain copy */
  return copy_plain(in, out, pos, end, bytes);
}

#define EARLY_WRITEBACK (1 << 20)

/* One file (see copyIn above): results into o[0..COPY_FIELDS). */
static void copy_one(const char *src, const char *dest, int flags, int64_t mode, int64_t uid, int64_t gid, int64_t mts, int64_t mtns, double *o) {
  int in = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOATIME);
  if (in < 0 && errno == EPERM) in = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (in < 0) { o[0] = 1; o[1] = errno; return; }
  int out = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) { o[0] = 2; o[1] = errno; close(in); return; }
  struct stat st;
  int rc = 0, use_cfr = 1, have_st = 0;
  double bytes = 0;
  if (flags & 1) {
    off_t pos = 0;
    for (;;) {
      off_t d = lseek(in, pos, SEEK_DATA);
      if (d < 0) { if (errno == ENXIO) break; rc = copy_range(in, out, pos, -1, &bytes, &use_cfr, NULL, NULL); break; }
      off_t h = lseek(in, d, SEEK_HOLE);
      if (h < 0) { rc = -1; break; }
      rc = copy_range(in, out, d, h, &bytes, &use_cfr, NULL, NULL);
      if (rc) break;
      pos = h;
    }
    if (!rc) {
      if (fstat(in, &st) != 0) rc = -1;
      else if (!S_ISREG(st.st_mode)) { rc = -1; errno = EINVAL; }
      else if (ftruncate(out, st.st_size) != 0) rc = -2;
      else have_st = 1;
    }
  } else {
    rc = copy_range(in, out, 0, -1, &bytes, &use_cfr, &st, &have_st);
  }
  int e = errno;
  if (!rc && !have_st) {
    if (fstat(in, &st) != 0) { rc = -1; e = errno; }
    else have_st = 1;
  }
  if (!rc && (flags & 2) && fchown(out, (uid_t)uid, (gid_t)gid) != 0) { rc = -2; e = errno; }
  if (!rc && fchmod(out, (mode_t)mode) != 0) { rc = -2; e = errno; }
  if (!rc) {
    struct timespec ts[2] = {{mts, mtns}, {mts, mtns}};
    if (futimens(out, ts) != 0) { rc = -2; e = errno; }
  }
  /* Writeback of a large copy starts now, not at the run's syncfs before it publishes: the
   * disk works while the walk goes on instead of all of it at the end (sync_file_range only
   * queues the pages; nothing waits for them here). */
  if (!rc && bytes >= EARLY_WRITEBACK) sync_file_range(out, 0, 0, SYNC_FILE_RANGE_WRITE);
  if (close(out) != 0 && !rc) { rc = -2; e = errno; }
  close(in);
  if (rc) {
    unlink(dest);
    o[0] = rc == -1 ? 1 : 2; o[1] = e; return;
  }
  put_stat(o + 3, &st);
  put_stat(o + 10, &st);
  o[2] = bytes;
}

static void copy_execute(napi_env env, void *data) {
  (void)env;
  copy_job_t *j = data;
  lower_priority_once();
  copy_one(j->src, j->dest, j->flags, j->mode, j->uid, j->gid, j->mts, j->mtns, j->out);
}

static void copy_complete(napi_env env, napi_status status, void *data) {
  copy_job_t *j = data;
  (void)status;
  napi_value ab, arr;
  void *mem;
  napi_create_arraybuffer(env, sizeof j->out, &mem, &ab);
  memcpy(mem, j->out, sizeof j->out);
  napi_create_typedarray(env, napi_float64_array, COPY_FIELDS, ab, 0, &arr);
  napi_resolve_deferred(env, j->deferred, arr);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value copy_in(napi_env env, napi_callback_info info) {
  size_t argc = 8; napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  copy_job_t *j = calloc(1, sizeof *j);
  if (!get_path(env, argv[0], j->src, sizeof j->src) || !get_path(env, argv[1], j->dest, sizeof j->dest)) { free(j); return NULL; }
  int32_t flags = 0; napi_get_value_int32(env, argv[2], &flags); j->flags = flags;
  j->mode = get_i64(env, argv[3]); j->uid = get_i64(env, argv[4]); j->gid = get_i64(env, argv[5]);
  j->mts = get_i64(env, argv[6]); j->mtns = get_i64(env, argv[7]);
  return queue_job(env, "bakker.copyIn", copy_execute, copy_complete, j, &j->deferred, &j->work);
}

/*
 * copyMany(paths, params) -> Promise<Float64Array>: copyIn for several (small) files in one
 * thread-pool job, one after the other. paths holds "src\0dest\0" per file; params 6 doubles per
 * file: flags, mode, uid, gid, mtimeSec, mtimeNsec. The result holds COPY_FIELDS doubles per
 * file, as copyIn's. One job per file cost ~16 us of the main thread each (async work, promise,
 * a thread wake-up and an event-loop wake-up per file: 1.6 s of a 100k-file full backup).
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *paths; size_t paths_len;
  double *params; size_t count;
  double *out;
} copy_many_t;

static void copy_many_execute(napi_env env, void *data) {
  (void)env;
  copy_many_t *j = data;
  lower_priority_once();
  const char *p = j->paths, *end = j->paths + j->paths_len;
  for (size_t i = 0; i < j->count; i++) {
    double *o = j->out + i * COPY_FIELDS;
    const char *src = p;
    const char *dest = memchr(src, 0, end - src);
    const char *next = dest ? memchr(dest + 1, 0, end - dest - 1) : NULL;
    if (!next) {
      /* fewer paths than params: this file and every later one failed (never 0, "copied") */
      for (; i < j->count; i++) { j->out[i * COPY_FIELDS] = 2; j->out[i * COPY_FIELDS + 1] = EINVAL; }
      break;
    }
    dest++;
    const double *q = j->params + i * 6;
    copy_one(src, dest, (int)q[0], (int64_t)q[1], (int64_t)q[2], (int64_t)q[3], (int64_t)q[4], (int64_t)q[5], o);
    p = next + 1;
  }
}

static void copy_many_complete(napi_env env, napi_status status, void *data) {
  copy_many_t *j = data;
  (void)status;
  napi_value ab, arr;
  void *mem;
  size_t n = j->count * COPY_FIELDS;
  napi_create_arraybuffer(env, (n ? n : 1) * sizeof(double), &mem, &ab);
  memcpy(mem, j->out, n * sizeof(double));
  napi_create_typedarray(env, napi_float64_array, n, ab, 0, &arr);
  napi_resolve_deferred(env, j->deferred, arr);
  napi_delete_async_work(env, j->work);
  free(j->paths); free(j->params); free(j->out); free(j);
}

static napi_value copy_many(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *paths; size_t paths_len;
  if (napi_get_buffer_info(env, argv[0], &paths, &paths_len) != napi_ok) { napi_throw_type_error(env, NULL, "copyMany: paths must be a Buffer"); return NULL; }
  double *params; size_t len;
  if (!get_typed(env, argv[1], napi_float64_array, 0, (void **)&params, "copyMany: params must be a Float64Array", &len)) return NULL;
  size_t count = len / 6;
  copy_many_t *j = calloc(1, sizeof *j);
  j->paths = malloc(paths_len ? paths_len : 1);
  memcpy(j->paths, paths, paths_len);
  j->paths_len = paths_len;
  j->params = malloc((count ? count : 1) * 6 * sizeof(double));
  memcpy(j->params, params, count * 6 * sizeof(double));
  j->count = count;
  j->out = calloc(count ? count : 1, COPY_FIELDS * sizeof(double));
  return queue_job(env, "bakker.copyMany", copy_many_execute, copy_many_complete, j, &j->deferred, &j->work);
}

/*
 * scanDir(dir, probeXattrs = true, fast = undefined) -> Promise<[names, stats, block]>: one
 * directory's entries, sorted by name bytes, lstat'ed with fstatat, all on the thread pool (the
 * caller keeps working meanwhile).
 * `names` holds "name\0" for each; `stats` SCAN_FIELDS doubles per entry:
 * mode uid gid size blocks ino dev nlink rdev mtS mtNs ctS ctNs xattrListBytes statErrno
 * fast prevOrdinal recordOffset.
 * xattrListBytes is llistxattr's size (0: none; -1: could not tell; -2: not asked, when
 * probeXattrs is false). Rejects (with .code) when the directory cannot be read.
 *
 * The fast path (docs/DESIGN.md, "Previous index"): `fast` is [prevBlock|null, prevDir, newDir].
 * With newDir null (a remote store), the job only compares: nothing is made or linked, and
 * fast = 1 marks the children the caller is to link itself.
 * prevBlock holds the previous snapshot's index records of this directory's children (sorted by
 * name, format below); prevDir and newDir are this directory in the previous snapshot and in the
 * one being written. The job makes newDir first (and missing parents, mode 0700; also when the
 * directory then cannot be listed), then hard-links each
 * child whose record is reusable and whose type (file or symlink), mode, owner, size, mtime,
 * ctime and sparseness are all unchanged, with one link count: those get fast = 1 and need no
 * more work from the caller. prevOrdinal is the child's entry number in the previous impl (-1:
 * not there). `block` is this directory's records for the next index, one per child that could
 * be stat'ed (recordOffset; -1 for none), with ordinal unset; the caller sets ordinals (and
 * rewrites records of entries it handled itself) as it writes the impl.
 *
 * Index record, little-endian, REC_FIXED bytes then the name:
 *   0 u32 record length  4 u8 type (1 file, 2 symlink, 3 dir, 4 other)  5 u8 flags (1 reusable,
 *   2 sparse)  6 u16 name length  8 u32 mode (07777 bits)  12 u32 uid  16 u32 gid  20 u32 ordinal
 *   (0xffffffff: not in the impl)  24 f64 size  32 i64 mtime s  40 u32 mtime ns  44 u32 ctime ns
 *   48 i64 ctime s
 */
#define SCAN_FIELDS 18
#define REC_FIXED 56
#define REC_REUSABLE 1
#define REC_SPARSE 2
#define NO_ORDINAL 0xffffffffu

typedef struct {
  uint8_t type, flags; uint16_t name_len;
  uint32_t mode, uid, gid, ordinal;
  double size; int64_t mts; uint32_t mtns, ctns; int64_t cts;
  const char *name;
} rec_t;

static int rec_type(mode_t m) {
  if (S_ISREG(m)) return 1;
  if (S_ISLNK(m)) return 2;
  if (S_ISDIR(m)) return 3;
  return 4;
}

/* Reads the record at `p` (with `left` bytes from there); 0 when it is malformed. */
static size_t rec_read(const unsigned char *p, size_t left, rec_t *r) {
  if (left < REC_FIXED) return 0;
  uint32_t len; memcpy(&len, p, 4);
  r->type = p[4]; r->flags = p[5]; memcpy(&r->name_len, p + 6, 2);
  if (len < REC_FIXED || len > left || (size_t)REC_FIXED + r->name_len != len) return 0;
  memcpy(&r->mode, p + 8, 4); memcpy(&r->uid, p + 12, 4); memcpy(&r->gid, p + 16, 4); memcpy(&r->ordinal, p + 20, 4);
  memcpy(&r->size, p + 24, 8); memcpy(&r->mts, p + 32, 8); memcpy(&r->mtns, p + 40, 4); memcpy(&r->ctns, p + 44, 4);
  memcpy(&r->cts, p + 48, 8);
  r->name = (const char *)p + REC_FIXED;
  return len;
}

static size_t rec_write(unsigned char *p, const char *name, size_t name_len, const struct stat *st, int flags) {
  uint32_t len = REC_FIXED + (uint32_t)name_len, mode = st->st_mode & 07777, uid = st->st_uid, gid = st->st_gid, ord = NO_ORDINAL;
  uint16_t nl = (uint16_t)name_len;
  double size = (double)st->st_size;
  int64_t mts = st->st_mtim.tv_sec, cts = st->st_ctim.tv_sec;
  uint32_t mtns = (uint32_t)st->st_mtim.tv_nsec, ctns = (uint32_t)st->st_ctim.tv_nsec;
  memcpy(p, &len, 4); p[4] = (unsigned char)rec_type(st->st_mode); p[5] = (unsigned char)flags; memcpy(p + 6, &nl, 2);
  memcpy(p + 8, &mode, 4); memcpy(p + 12, &uid, 4); memcpy(p + 16, &gid, 4); memcpy(p + 20, &ord, 4);
  memcpy(p + 24, &size, 8); memcpy(p + 32, &mts, 8); memcpy(p + 40, &mtns, 4); memcpy(p + 44, &ctns, 4); memcpy(p + 48, &cts, 8);
  memcpy(p + REC_FIXED, name, name_len);
  return len;
}

/* Compares a name with a record's name as bytes (the listing's order). */
static int rec_cmp(const char *name, size_t len, const rec_t *r) {
  size_t m = len < r->name_len ? len : r->name_len;
  int c = memcmp(name, r->name, m);
  if (c) return c;
  return len < r->name_len ? -1 : len > r->name_len ? 1 : 0;
}

/* mkdir -p with mode 0700 (the run's folders are private until published). */
static int mkdir_p(char *path) {
  if (mkdir(path, 0700) == 0 || errno == EEXIST) return 0;
  if (errno != ENOENT) return errno;
  char *slash = strrchr(path, '/');
  if (!slash || slash == path) return ENOENT;
  *slash = 0;
  int err = mkdir_p(path);
  *slash = '/';
  if (err) return err;
  return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : errno;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char path[PATH_MAX_BYTES];
  char *names; size_t names_len;
  double *stats; size_t count;
  int err; const char *syscall;
  int probe_xattrs;
  int fast; /* the fast path was asked for */
  int compare_only; /* ... for a remote store: compare only, the caller links */
  unsigned char *prev; size_t prev_len; /* the previous block (may be empty) */
  char prev_dir[PATH_MAX_BYTES], new_dir[PATH_MAX_BYTES];
  unsigned char *block; size_t block_len;
} scan_job_t;

static void scan_execute(napi_env env, void *data) {
  (void)env;
  scan_job_t *j = data;
  thread_nice(0); /* the walk waits for scans: they are the critical path (needs root to undo a nice) */
  if (j->fast && !j->compare_only) {
    /* made first, so the folder is in the new snapshot even when it cannot be listed */
    int err = mkdir_p(j->new_dir);
    if (err) { j->err = err; j->syscall = "mkdir"; strcpy(j->path, j->new_dir); return; }
  }
  DIR *d = opendir(j->path);
  if (!d) { j->err = errno; j->syscall = "opendir"; return; }
  size_t cap = 64, n = 0, bytes = 0;
  char **names = malloc(cap * sizeof *names);
  struct dirent *de;
  errno = 0;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' && (de->d_name[1] == 0 || (de->d_name[1] == '.' && de->d_name[2] == 0))) continue;
    if (n == cap) { cap *= 2; names = realloc(names, cap * sizeof *names); }
    names[n++] = strdup(de->d_name);
    bytes += strlen(de->d_name) + 1;
  }
  if (errno) {
    j->err = errno; j->syscall = "readdir";
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names); closedir(d);
    return;
  }
  qsort(names, n, sizeof *names, cmp_names);
  j->names = malloc(bytes ? bytes : 1);
  j->names_len = bytes;
  j->stats = calloc(n ? n : 1, SCAN_FIELDS * sizeof(double));
  j->count = n;
  int dfd = dirfd(d);
  int prev_fd = -1, new_fd = -1;
  size_t block_cap = 0;
  if (j->fast && !j->compare_only) {
    new_fd = open(j->new_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (j->prev_len) prev_fd = open(j->prev_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }
  if (j->fast) {
    block_cap = n * REC_FIXED + bytes;
    j->block = malloc(block_cap ? block_cap : 1);
  }
  size_t prev_off = 0;
  rec_t pr; int have_pr = 0;
  size_t plen = strlen(j->path);
  char full[PATH_MAX_BYTES];
  memcpy(full, j->path, plen);
  full[plen] = '/';
  char *np = j->names;
  double *o = j->stats;
  for (size_t i = 0; i < n; i++, o += SCAN_FIELDS) {
    size_t len = strlen(names[i]);
    memcpy(np, names[i], len + 1);
    np += len + 1;
    struct stat st;
    o[16] = -1; o[17] = -1;
    if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) { o[14] = errno; free(names[i]); continue; }
    o[0] = st.st_mode; o[1] = st.st_uid; o[2] = st.st_gid; o[3] = (double)st.st_size; o[4] = (double)st.st_blocks;
    o[5] = (double)st.st_ino; o[6] = (double)st.st_dev; o[7] = (double)st.st_nlink; o[8] = (double)st.st_rdev;
    o[9] = (double)st.st_mtim.tv_sec; o[10] = (double)st.st_mtim.tv_nsec; o[11] = (double)st.st_ctim.tv_sec; o[12] = (double)st.st_ctim.tv_nsec;
    if (!j->probe_xattrs) o[13] = -2;
    else if (plen + 1 + len + 1 <= sizeof full) {
      memcpy(full + plen + 1, names[i], len + 1);
      ssize_t x = llistxattr(full, NULL, 0);
      o[13] = x < 0 ? (errno == ENOTSUP ? 0 : -1) : (double)x;
    } else o[13] = -1;
    if (j->fast) {
      int sparse = S_ISREG(st.st_mode) && st.st_blocks * 512 < st.st_size;
      /* the previous record of this name, if any (both sides sorted by name bytes) */
      int found = 0;
      for (;;) {
        if (!have_pr) {
          if (prev_off >= j->prev_len) break;
          size_t got = rec_read(j->prev + prev_off, j->prev_len - prev_off, &pr);
          if (!got) { prev_off = j->prev_len; break; } /* malformed: no fast path for the rest */
          prev_off += got;
          if (pr.ordinal == NO_ORDINAL) continue;
          have_pr = 1;
        }
        int c = rec_cmp(names[i], len, &pr);
        if (c > 0) { have_pr = 0; continue; }
        if (c == 0) { found = 1; have_pr = 0; }
        break;
      }
      int fast = 0;
      if (found) {
        o[16] = pr.ordinal;
        int t = rec_type(st.st_mode);
        if ((pr.flags & REC_REUSABLE) && (t == 1 || t == 2) && pr.type == t && st.st_nlink == 1 &&
            pr.mode == (uint32_t)(st.st_mode & 07777) && pr.uid == st.st_uid && pr.gid == st.st_gid &&
            pr.size == (double)st.st_size && pr.mts == st.st_mtim.tv_sec && pr.mtns == (uint32_t)st.st_mtim.tv_nsec &&
            pr.cts == st.st_ctim.tv_sec && pr.ctns == (uint32_t)st.st_ctim.tv_nsec && ((pr.flags & REC_SPARSE) != 0) == sparse &&
            (j->compare_only || (prev_fd >= 0 && new_fd >= 0 && linkat(prev_fd, names[i], new_fd, names[i], 0) == 0)))
          fast = 1;
      }
      o[15] = fast;
      o[17] = (double)j->block_len;
      j->block_len += rec_write(j->block + j->block_len, names[i], len, &st, (fast ? REC_REUSABLE : 0) | (sparse ? REC_SPARSE : 0));
    }
    free(names[i]);
  }
  free(names);
  closedir(d);
  if (prev_fd >= 0) close(prev_fd);
  if (new_fd >= 0) close(new_fd);
}

static void scan_complete(napi_env env, napi_status status, void *data) {
  scan_job_t *j = data;
  (void)status;
  if (j->err) {
    napi_reject_deferred(env, j->deferred, errno_error(env, j->err, j->syscall, j->path));
  } else {
    napi_value jnames, ab, jstats, result;
    void *nbuf, *sbuf;
    napi_create_buffer_copy(env, j->names_len, j->names_len ? j->names : "", &nbuf, &jnames);
    napi_create_arraybuffer(env, (j->count ? j->count : 1) * SCAN_FIELDS * sizeof(double), &sbuf, &ab);
    memcpy(sbuf, j->stats, j->count * SCAN_FIELDS * sizeof(double));
    napi_create_typedarray(env, napi_float64_array, j->count * SCAN_FIELDS, ab, 0, &jstats);
    napi_create_array_with_length(env, 3, &result);
    napi_set_element(env, result, 0, jnames);
    napi_set_element(env, result, 1, jstats);
    if (j->fast) {
      napi_value jblock; void *bbuf;
      napi_create_buffer_copy(env, j->block_len, j->block_len ? (void *)j->block : "", &bbuf, &jblock);
      napi_set_element(env, result, 2, jblock);
    }
    napi_resolve_deferred(env, j->deferred, result);
  }
  free(j->names); free(j->stats); free(j->prev); free(j->block);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value scan_dir(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  scan_job_t *j = calloc(1, sizeof *j);
  if (!get_path(env, argv[0], j->path, sizeof j->path)) { free(j); return NULL; }
  bool probe = true;
  if (argc > 1) napi_get_value_bool(env, argv[1], &probe);
  j->probe_xattrs = probe;
  napi_valuetype ft = napi_undefined;
  if (argc > 2) napi_typeof(env, argv[2], &ft);
  if (ft == napi_object) {
    napi_value jprev, jpd, jnd;
    napi_get_element(env, argv[2], 0, &jprev);
    napi_get_element(env, argv[2], 1, &jpd);
    napi_get_element(env, argv[2], 2, &jnd);
    napi_valuetype dt = napi_undefined;
    napi_typeof(env, jnd, &dt);
    if (dt == napi_null) j->compare_only = 1;
    else if (!get_path(env, jpd, j->prev_dir, sizeof j->prev_dir) || !get_path(env, jnd, j->new_dir, sizeof j->new_dir)) { free(j); return NULL; }
    bool is_buf = false;
    napi_is_buffer(env, jprev, &is_buf);
    if (is_buf) {
      void *data; size_t len;
      napi_get_buffer_info(env, jprev, &data, &len);
      j->prev = malloc(len ? len : 1);
      memcpy(j->prev, data, len);
      j->prev_len = len;
    }
    j->fast = 1;
  }
  return queue_job(env, "bakker.scanDir", scan_execute, scan_complete, j, &j->deferred, &j->work);
}

/* ---- zstd (libzstd.so.1, which every Debian system has; declared here so no -dev package is needed) ----
 *   zstdCompress(src, level)      -> Promise<Buffer>: one zstd frame (with its content size and checksum), on the thread pool
 *   zstdCompressSync(src, level)  -> Buffer: the same, on this thread (small inputs)
 *   zstdFrame(buf)                -> [compressed size, content size] of the first frame in buf, or null
 *                                    when buf does not yet hold all of it; throws on a malformed frame
 *   zstdDecompressSync(frame, n)  -> Buffer of the frame's n content bytes
 * Contexts are kept per thread and reused (making one costs more than compressing a small file). */
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
extern ZSTD_CCtx *ZSTD_createCCtx(void);
extern ZSTD_DCtx *ZSTD_createDCtx(void);
extern size_t ZSTD_compress2(ZSTD_CCtx *, void *, size_t, const void *, size_t);
extern size_t ZSTD_CCtx_setParameter(ZSTD_CCtx *, int, int);
#define ZSTD_c_compressionLevel 100
#define ZSTD_c_checksumFlag 201
extern size_t ZSTD_decompressDCtx(ZSTD_DCtx *, void *, size_t, const void *, size_t);
extern size_t ZSTD_compressBound(size_t);
extern unsigned ZSTD_isError(size_t);
extern const char *ZSTD_getErrorName(size_t);
extern size_t ZSTD_findFrameCompressedSize(const void *, size_t);
extern unsigned long long ZSTD_getFrameContentSize(const void *, size_t);
#define ZSTD_CONTENTSIZE_UNKNOWN (0ULL - 1)
#define ZSTD_CONTENTSIZE_ERROR (0ULL - 2)
/* A frame header is at most 18 bytes; a frame's content, as bakker writes them, at most 4 MiB. */
#define ZSTD_MAX_CONTENT (64u << 20)

static __thread ZSTD_CCtx *tl_cctx;
static __thread ZSTD_DCtx *tl_dctx;

/* One frame with its content size and a content checksum (zstd -d and our reader check it). */
static size_t zstd_compress_into(void *dst, size_t cap, const void *src, size_t len, int level) {
  if (!tl_cctx) tl_cctx = ZSTD_createCCtx();
  if (!tl_cctx) return (size_t)-1;
  size_t r = ZSTD_CCtx_setParameter(tl_cctx, ZSTD_c_compressionLevel, level);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(tl_cctx, ZSTD_c_checksumFlag, 1);
  if (ZSTD_isError(r)) return r;
  return ZSTD_compress2(tl_cctx, dst, cap, src, len);
}

static void free_buf(napi_env env, void *data, void *hint) { (void)env; (void)hint; free(data); }

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref src_ref;
  const void *src;
  size_t len;
  int level;
  void *out;
  size_t out_len;
  const char *err;
} ZJob;

static void zcomp_execute(napi_env env, void *data) {
  (void)env;
  ZJob *j = data;
  size_t cap = ZSTD_compressBound(j->len);
  j->out = malloc(cap ? cap : 1);
  if (!j->out) { j->err = "out of memory"; return; }
  size_t r = zstd_compress_into(j->out, cap, j->src, j->len, j->level);
  if (r == (size_t)-1 || ZSTD_isError(r)) { j->err = r == (size_t)-1 ? "no zstd context" : ZSTD_getErrorName(r); free(j->out); j->out = NULL; return; }
  j->out_len = r;
}

static void zcomp_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  ZJob *j = data;
  napi_delete_reference(env, j->src_ref);
  if (j->err) {
    napi_value msg, err;
    napi_create_string_utf8(env, j->err, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  } else {
    napi_value buf;
    napi_create_external_buffer(env, j->out_len, j->out, free_buf, NULL, &buf);
    napi_resolve_deferred(env, j->deferred, buf);
  }
  napi_delete_async_work(env, j->work);
  free(j);
}

/* The zstd functions' arguments: a Buffer, then a number (a level or a size; 0 when absent). */
static int buffer_and_number(napi_env env, napi_callback_info info, napi_value *jbuf, void **src, size_t *len, double *num) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_buf = false;
  if (argc >= 1) napi_is_buffer(env, argv[0], &is_buf);
  if (!is_buf) { napi_throw_type_error(env, NULL, "expected a Buffer"); return 0; }
  napi_get_buffer_info(env, argv[0], src, len);
  *jbuf = argv[0];
  *num = 0;
  if (argc >= 2) napi_get_value_double(env, argv[1], num);
  return 1;
}

static napi_value zstd_compress(napi_env env, napi_callback_info info) {
  napi_value jsrc;
  double level;
  ZJob *j = calloc(1, sizeof *j);
  if (!buffer_and_number(env, info, &jsrc, (void **)&j->src, &j->len, &level)) { free(j); return NULL; }
  j->level = (int)level;
  napi_create_reference(env, jsrc, 1, &j->src_ref); /* the input stays alive while the job reads it */
  return queue_job(env, "bakker.zstdCompress", zcomp_execute, zcomp_complete, j, &j->deferred, &j->work);
}

static napi_value zstd_compress_sync(napi_env env, napi_callback_info info) {
  napi_value jsrc, buf;
  void *src; size_t len; double level;
  if (!buffer_and_number(env, info, &jsrc, &src, &len, &level)) return NULL;
  size_t cap = ZSTD_compressBound(len);
  void *out = malloc(cap ? cap : 1);
  if (!out) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  size_t r = zstd_compress_into(out, cap, src, len, (int)level);
  if (r == (size_t)-1 || ZSTD_isError(r)) { free(out); napi_throw_error(env, NULL, r == (size_t)-1 ? "no zstd context" : ZSTD_getErrorName(r)); return NULL; }
  napi_create_external_buffer(env, r, out, free_buf, NULL, &buf);
  return buf;
}

static napi_value zstd_frame(napi_env env, napi_callback_info info) {
  napi_value jbuf, out, a, b;
  void *src; size_t len; double unused;
  if (!buffer_and_number(env, info, &jbuf, &src, &len, &unused)) return NULL;
  unsigned long long content = ZSTD_getFrameContentSize(src, len);
  if (content == ZSTD_CONTENTSIZE_ERROR) {
    if (len < 18) { napi_get_null(env, &out); return out; } /* maybe only a partial header so far */
    napi_throw_error(env, NULL, "not a zstd frame");
    return NULL;
  }
  if (content == ZSTD_CONTENTSIZE_UNKNOWN || content > ZSTD_MAX_CONTENT) { napi_throw_error(env, NULL, "a zstd frame without a usable content size"); return NULL; }
  size_t csize = ZSTD_findFrameCompressedSize(src, len);
  if (ZSTD_isError(csize)) { napi_get_null(env, &out); return out; } /* incomplete (or damaged: the decompression says) */
  napi_create_array_with_length(env, 2, &out);
  napi_create_double(env, (double)csize, &a);
  napi_create_double(env, (double)content, &b);
  napi_set_element(env, out, 0, a);
  napi_set_element(env, out, 1, b);
  return out;
}

static napi_value zstd_decompress_sync(napi_env env, napi_callback_info info) {
  napi_value jbuf, buf;
  void *src; size_t len; double n;
  if (!buffer_and_number(env, info, &jbuf, &src, &len, &n)) return NULL;
  if (n < 0 || n > ZSTD_MAX_CONTENT) { napi_throw_range_error(env, NULL, "content size out of range"); return NULL; }
  void *out = malloc(n > 0 ? (size_t)n : 1);
  if (!out) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  if (!tl_dctx) tl_dctx = ZSTD_createDCtx();
  size_t r = tl_dctx ? ZSTD_decompressDCtx(tl_dctx, out, (size_t)n, src, len) : (size_t)-1;
  if (r == (size_t)-1 || ZSTD_isError(r) || r != (size_t)n) {
    free(out);
    napi_throw_error(env, NULL, r == (size_t)-1 ? "no zstd context" : ZSTD_isError(r) ? ZSTD_getErrorName(r) : "a zstd frame shorter than its content size");
    return NULL;
  }
  napi_create_external_buffer(env, r, out, free_buf, NULL, &buf);
  return buf;
}

static napi_value init(napi_env env, napi_value exports) {
  /* The thread pool starts after this: two malloc arenas instead of one per thread keep memory
     flat (each arena holds on to what its thread once used). */
  mallopt(M_ARENA_MAX, 2);
  /* Give freed memory back early: scans allocate and free a directory's worth at a time. */
  mallopt(M_TRIM_THRESHOLD, 64 * 1024);
  napi_property_descriptor props[] = {
    {"getXattrs", NULL, get_xattrs, NULL, NULL, NULL, napi_default, NULL},
    {"setXattr", NULL, set_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"utimens", NULL, utimens, NULL, NULL, NULL, napi_default, NULL},
    {"mknod", NULL, do_mknod, NULL, NULL, NULL, napi_default, NULL},
    {"syncfs", NULL, do_syncfs, NULL, NULL, NULL, napi_default, NULL},
    {"syncfsSoon", NULL, syncfs_soon, NULL, NULL, NULL, napi_default, NULL},
    {"linkBatch", NULL, link_batch, NULL, NULL, NULL, napi_default, NULL},
    {"metaBatch", NULL, meta_batch, NULL, NULL, NULL, napi_default, NULL},
    {"copyIn", NULL, copy_in, NULL, NULL, NULL, napi_default, NULL},
    {"copyMany", NULL, copy_many, NULL, NULL, NULL, napi_default, NULL},
    {"scanDir", NULL, scan_dir, NULL, NULL, NULL, napi_default, NULL},
    {"removeTree", NULL, remove_tree, NULL, NULL, NULL, napi_default, NULL},
    {"zstdCompress", NULL, zstd_compress, NULL, NULL, NULL, napi_default, NULL},
    {"zstdCompressSync", NULL, zstd_compress_sync, NULL, NULL, NULL, napi_default, NULL},
    {"zstdFrame", NULL, zstd_frame, NULL, NULL, NULL, napi_default, NULL},
    {"zstdDecompressSync", NULL, zstd_decompress_sync, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
