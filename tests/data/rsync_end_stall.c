/*
 * Preloaded into rsync by tests/it/stall.rs: makes rsync (3.5) miss the end of its run
 * every time instead of now and then.
 *
 * At the end of a local run the generator sends the receiver SIGUSR2 and waits for it to
 * exit; the receiver's handler only sets a flag, checked before each poll() of its I/O
 * loop. A signal that lands between the check and the poll() is noticed only when the
 * poll() times out (60 s). Here every blocking poll() of the receiver waits 200 ms first
 * (inside that window) and the SIGUSR2 is sent 50 ms late, so that it lands there.
 * RSYNC_END_STALL_LOG names a file that is told of each (see note_hit).
 *
 * Build: gcc -shared -fPIC -o rsync_end_stall.so rsync_end_stall.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* The parent of process `pid`, and its name into `comm`; -1 when unreadable. */
static int parent_of(int pid, char *comm, size_t len)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *l = strchr(buf, '('), *r = strrchr(buf, ')');
	if (!l || !r)
		return -1;
	snprintf(comm, len, "%.*s", (int)(r - l - 1), l + 1);
	int ppid = -1;
	char state;
	if (sscanf(r + 2, "%c %d", &state, &ppid) != 2)
		return -1;
	return ppid;
}

/* The receiver is the rsync whose parent and grandparent are rsync (asked again after a
 * fork: the generator forks it). */
static int is_receiver(void)
{
	static int known = -1;
	static pid_t asked_by;
	if (known < 0 || asked_by != getpid()) {
		char c1[64] = "", c2[64] = "";
		int gp = parent_of(getppid(), c1, sizeof c1);
		asked_by = getpid();
		known = gp > 0 && parent_of(gp, c2, sizeof c2) >= 0 && !strcmp(c1, "rsync") &&
			!strcmp(c2, "rsync");
	}
	return known;
}

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* With RSYNC_END_STALL_LOG set: a line "hit MS" in that file each time a signal landed
 * in the window, MS being how long the poll() after it slept. An rsync with the race
 * sleeps there until the poll() times out or someone signals it again; a fixed one
 * would return at once. */
static void note_hit(long ms)
{
	const char *log = getenv("RSYNC_END_STALL_LOG");
	if (!log)
		return;
	int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	dprintf(fd, "hit %ld\n", ms);
	close(fd);
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	static int (*real)(struct pollfd *, nfds_t, int);
	if (!real)
		real = (int (*)(struct pollfd *, nfds_t, int))dlsym(RTLD_NEXT, "poll");
	if (timeout == 0 || !is_receiver())
		return real(fds, n, timeout);
	int e = errno;
	int hit = usleep(200000) < 0 && errno == EINTR;
	errno = e;
	long began = now_ms();
	int r = real(fds, n, timeout);
	e = errno;
	long slept = now_ms() - began;
	if (hit)
		note_hit(slept);
	errno = e;
	return r;
}

int kill(pid_t pid, int sig)
{
	static int (*real)(pid_t, int);
	if (!real)
		real = (int (*)(pid_t, int))dlsym(RTLD_NEXT, "kill");
	if (sig == SIGUSR2)
		usleep(50000);
	return real(pid, sig);
}
