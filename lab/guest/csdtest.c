// csdtest: the lab guest's example critical service.
// It idles, waking once a second, and with -d detaches like a daemon so the
// guest agent's guest-exec returns at once. Its pid is written to /run/csdtest.pid.
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "-d") == 0) {
    pid_t p = fork();
    if (p < 0) return 1;
    if (p > 0) return 0;
    setsid();
    if (fork() > 0) _exit(0);
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
      dup2(fd, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      if (fd > 2) close(fd);
    }
  }
  FILE* f = fopen("/run/csdtest.pid", "w");
  if (f) {
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
  }
  for (;;) {
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
  }
}
