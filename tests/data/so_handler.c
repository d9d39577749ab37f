/*
 * A shared-object sync handler for the tests of src/sync/so.rs, written for this project.
 *
 * It speaks the original clsync's handler ABI (API version 2) and records every call it
 * gets, one line per fact, in the file named by $SO_HANDLER_LOG, or else in
 * DESTINATION/so_handler.log (the tests use the latter: the environment is shared by
 * tests running in parallel).
 *
 * Build: gcc -shared -fPIC -o so_handler.so so_handler.c [-DNO_RSYNC] [-DNO_CAPS]
 *
 * Behaviour the tests rely on:
 *   - clsyncapi_init fails with 7 when the label is "fail-init";
 *   - clsyncapi_sync returns 0, or 5 when one of the paths is "fail";
 *   - clsyncapi_rsync returns 0 with an exclude list and 3 without one;
 *   - with -DNO_RSYNC there is no clsyncapi_rsync;
 *   - with -DNO_CAPS it reads the ctx layout of a build without capabilities;
 *   - in a host that exports the API it calls every host function at init (see
 *     host_calls) and logs what each did.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where the host's struct ctx keeps what we read: Linux LP64 glibc build with
 * capabilities, unshare and getmntent support; with -DNO_CAPS the same without
 * capabilities (see src/sync/so.rs). */
#ifdef NO_CAPS
#define SHIFT 8
#define TAIL_SHIFT 2072
#else
#define SHIFT 0
#define TAIL_SHIFT 0
#endif
enum {
	OFF_FLAGS = 31888 - SHIFT,
	OFF_LABEL = 44200 - SHIFT,
	OFF_WATCHDIR = 44208 - SHIFT,
	OFF_DESTDIR = 44248 - SHIFT,
	OFF_DESTPROTO = 44256 - SHIFT,
	OFF_WATCHDIRWSLASH = 44264 - SHIFT,
	OFF_DESTDIRWSLASH = 44272 - SHIFT,
	OFF_WATCHDIRLEN = 44320 - SHIFT,
	OFF_DESTDIRLEN = 44328 - SHIFT,
	OFF_DIRLEVEL = 44368 - SHIFT,
	OFF_HANDLERFPATH = 44376 - SHIFT,
	OFF_INDEXES_P = 53752 - TAIL_SHIFT,
};

/* Indexes into flags[]. */
enum {
	F_MODE = 'M',
	F_DEBUG = 'd',
	F_THREADING = 'p',
	F_RSYNCPREFERINCLUDE = 512 | 2,
};

/* api_eventinfo_t */
struct event {
	uint32_t evmask;
	uint32_t flags;
	size_t path_len;
	const char *path;
	int objtype_old;
	int objtype_new;
};

/* Host functions: weak, so that the handler also loads into a host that does not export
 * them (the test binaries). */
extern int clsyncapi_getapiversion(void) __attribute__((weak));
extern int clsyncapi_fork(void *ctx) __attribute__((weak));
extern void _critical(const char *func, const char *fmt, ...) __attribute__((weak));
extern void _error(const char *func, const char *fmt, ...) __attribute__((weak));
extern void _warning(const char *func, const char *fmt, ...) __attribute__((weak));
extern void _info(const char *func, const char *fmt, ...) __attribute__((weak));
extern void _debug(int level, const char *func, const char *fmt, ...) __attribute__((weak));
extern void *xmalloc(size_t size) __attribute__((weak));
extern void *xcalloc(size_t nmemb, size_t size) __attribute__((weak));
extern void *xrealloc(void *ptr, size_t size) __attribute__((weak));

static FILE *log_file;
static char *ctx_base;

static const char *ctx_str(size_t off)
{
	const char *s = *(const char *const *)(ctx_base + off);
	return s ? s : "(null)";
}

static size_t ctx_size(size_t off)
{
	return *(const size_t *)(ctx_base + off);
}

static int ctx_flag(int i)
{
	return ((const int *)(ctx_base + OFF_FLAGS))[i];
}

#ifndef NO_RSYNC
static void copy_file(const char *tag, const char *path)
{
	char line[4096];
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		fprintf(log_file, "  %s: cannot open\n", tag);
		return;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "\n")] = 0;
		fprintf(log_file, "  %s: %s\n", tag, line);
	}
	fclose(f);
}
#endif

/* Calls every host function the host exports, each with an effect the log shows (the
 * logging ones write to the host's log); names one it does not export. Only in a host
 * that exports the API (clsync itself, not the test binaries). */
static void host_calls(void *ctx)
{
	int missing = 0;
#define NEED(f) do { if (f == NULL) { fprintf(log_file, "  %s: not exported\n", #f); missing = 1; } } while (0)
	NEED(clsyncapi_fork); NEED(_critical); NEED(_error); NEED(_warning); NEED(_info);
	NEED(_debug); NEED(xmalloc); NEED(xcalloc); NEED(xrealloc);
#undef NEED
	if (missing)
		return;
	char *p = xmalloc(4);
	strcpy(p, "abc");
	p = xrealloc(p, 8);
	strcat(p, "de");
	int *z = xcalloc(16, sizeof *z);
	int zero = 1;
	for (int i = 0; i < 16; i++)
		zero &= z[i] == 0;
	fprintf(log_file, "  xmalloc, xrealloc: %s; xcalloc: %s\n", p, zero ? "zeroed" : "dirty");
	free(p);
	free(z);
	fflush(log_file);
	pid_t pid = clsyncapi_fork(ctx);
	if (pid == 0)
		_exit(3);
	int st = 0;
	if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st))
		fprintf(log_file, "  clsyncapi_fork: child exited %d\n", WEXITSTATUS(st));
	else
		fprintf(log_file, "  clsyncapi_fork: failed\n");
	_warning(__func__, "a warning from the handler: %d", 1);
	_error(__func__, "an error from the handler: %s", "two");
	_debug(1, __func__, "a debug line from the handler: %d", 3);
	fprintf(log_file, "  logged: warning, error, debug\n");
}

int clsyncapi_init(void *ctx, void *indexes)
{
	char fallback[4096];
	const char *path = getenv("SO_HANDLER_LOG");
	void *const *tables = indexes;
	int zeroed = 1;

	ctx_base = ctx;
	if (path == NULL) {
		snprintf(fallback, sizeof fallback, "%s/so_handler.log", ctx_str(OFF_DESTDIR));
		path = fallback;
	}
	log_file = fopen(path, "a");
	if (log_file == NULL)
		return 2;

	for (int i = 0; i < 15; i++)
		if (tables[i] != NULL)
			zeroed = 0;

	fprintf(log_file, "init\n");
	if (clsyncapi_getapiversion != NULL) {
		fprintf(log_file, "  api version: %d\n", clsyncapi_getapiversion());
		host_calls(ctx);
	} else
		fprintf(log_file, "  api version: not exported\n");
	fprintf(log_file, "  label: %s\n", ctx_str(OFF_LABEL));
	fprintf(log_file, "  watchdir: %s (%zu)\n", ctx_str(OFF_WATCHDIR), ctx_size(OFF_WATCHDIRLEN));
	fprintf(log_file, "  watchdirwslash: %s\n", ctx_str(OFF_WATCHDIRWSLASH));
	fprintf(log_file, "  dirlevel: %d\n", *(const short *)(ctx_base + OFF_DIRLEVEL));
	fprintf(log_file, "  destdir: %s (%zu)\n", ctx_str(OFF_DESTDIR), ctx_size(OFF_DESTDIRLEN));
	fprintf(log_file, "  destdirwslash: %s\n", ctx_str(OFF_DESTDIRWSLASH));
	fprintf(log_file, "  destproto: %s\n", ctx_str(OFF_DESTPROTO));
	fprintf(log_file, "  handler: %s\n", ctx_str(OFF_HANDLERFPATH));
	fprintf(log_file, "  flags: mode=%d debug=%d threading=%d rsyncpreferinclude=%d\n",
		ctx_flag(F_MODE), ctx_flag(F_DEBUG), ctx_flag(F_THREADING),
		ctx_flag(F_RSYNCPREFERINCLUDE));
	fprintf(log_file, "  indexes: %s, %s\n",
		*(void **)(ctx_base + OFF_INDEXES_P) == indexes ? "same as ctx" : "differs from ctx",
		zeroed ? "zeroed" : "not zeroed");
	fflush(log_file);

	if (_info != NULL)
		_info(__func__, "hello from %s, pid %d, %s", "so_handler", 42, "bye");

	if (strcmp(ctx_str(OFF_LABEL), "fail-init") == 0)
		return 7;
	return 0;
}

int clsyncapi_sync(int n, struct event *ei)
{
	int rc = 0;

	fprintf(log_file, "sync %d\n", n);
	for (int i = 0; i < n; i++) {
		fprintf(log_file, "  \"%s\" len=%zu mask=0x%x flags=%u type=%d->%d\n",
			ei[i].path, ei[i].path_len, ei[i].evmask, ei[i].flags,
			ei[i].objtype_old, ei[i].objtype_new);
		if (strcmp(ei[i].path, "fail") == 0)
			rc = 5;
	}
	fflush(log_file);
	return rc;
}

#ifndef NO_RSYNC
int clsyncapi_rsync(const char *inclist, const char *exclist)
{
	fprintf(log_file, "rsync\n");
	fprintf(log_file, "  inclist: %s\n", inclist);
	copy_file("inc", inclist);
	fprintf(log_file, "  exclist: %s\n", exclist ? exclist : "(null)");
	if (exclist != NULL)
		copy_file("exc", exclist);
	fflush(log_file);
	return exclist != NULL ? 0 : 3;
}
#endif

int clsyncapi_deinit(void)
{
	fprintf(log_file, "deinit\n");
	fclose(log_file);
	log_file = NULL;
	return 0;
}
