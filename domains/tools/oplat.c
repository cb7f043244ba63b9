/* oplat: per-operation latency of create, stat and unlink in one directory.
 *
 * Usage: oplat DIR N   -> prints "create <ns>", "stat <ns>", "unlink <ns>" lines, N each.
 * Built statically on the host and copied into the guest (busybox has no ns clock),
 * so every sample is one syscall timed with CLOCK_MONOTONIC, not a process spawn.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s DIR N\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	int n = atoi(argv[2]);
	char path[4096];
	struct stat st;

	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		long long t0 = now_ns();
		int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
		long long t1 = now_ns();
		if (fd < 0) {
			fprintf(stderr, "create %s: %s\n", path, strerror(errno));
			return 1;
		}
		close(fd);
		printf("create %lld\n", t1 - t0);
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		long long t0 = now_ns();
		int rc = stat(path, &st);
		long long t1 = now_ns();
		if (rc) {
			fprintf(stderr, "stat %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("stat %lld\n", t1 - t0);
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		long long t0 = now_ns();
		int rc = unlink(path);
		long long t1 = now_ns();
		if (rc) {
			fprintf(stderr, "unlink %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("unlink %lld\n", t1 - t0);
	}
	return 0;
}
