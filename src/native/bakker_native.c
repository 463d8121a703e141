/*
 * bakker_native: the few Linux calls Node does not expose, all synchronous and
 * all taking Buffer paths (names need not be UTF-8):
 *   getXattrs(path)            -> null | [name, value, name, value, ...]  (never follows symlinks)
 *   setXattr(path, name, value)                                          (never follows symlinks)
 *   utimens(path, atS, atNs, mtS, mtNs)                                  (never follows symlinks)
 *   mknod(path, mode, dev)
 *   syncfs(path)               flushes the whole filesystem holding path
 * Errors are thrown as Error objects with .code ("ENOENT", ...), .errno and .syscall.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PATH_MAX_BYTES 8192

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
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
  napi_throw(env, jerr);
  return NULL;
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"getXattrs", NULL, get_xattrs, NULL, NULL, NULL, napi_default, NULL},
    {"setXattr", NULL, set_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"utimens", NULL, utimens, NULL, NULL, NULL, napi_default, NULL},
    {"mknod", NULL, do_mknod, NULL, NULL, NULL, napi_default, NULL},
    {"syncfs", NULL, do_syncfs, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
