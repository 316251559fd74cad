/*
 * tinyhttp: a static HTTP server for the emulator's docker-mode self-test (FROM scratch image).
 *
 *   tinyhttp            serve on $PORT (default 3000); every request gets
 *                       {"swagger":"2.0","greeting":"$GREETING","boots":N}
 *   tinyhttp --check    exit 0 when http://127.0.0.1:$PORT/ answers 200 (healthcheck)
 *
 * When $DATA_DIR is set, a boot counter is kept in $DATA_DIR/boots (proves the volume persists).
 * SIGTERM/SIGINT exit immediately (PID 1 has no default signal handlers).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static int port_from_env(void) {
    const char *p = getenv("PORT");
    return p && *p ? atoi(p) : 3000;
}

static int check(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    char buf[64] = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return 1;
    const char *req = "GET /health HTTP/1.0\r\n\r\n";
    if (write(fd, req, strlen(req)) < 0) return 1;
    if (read(fd, buf, sizeof buf - 1) <= 0) return 1;
    close(fd);
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : 1;
}

static long count_boot(void) {
    const char *dir = getenv("DATA_DIR");
    char path[512];
    long boots = 0;
    if (!dir || !*dir) return 0;
    snprintf(path, sizeof path, "%s/boots", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &boots) != 1) boots = 0;
        fclose(f);
    }
    boots++;
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "%ld\n", boots);
        fclose(f);
    }
    return boots;
}

int main(int argc, char **argv) {
    int port = port_from_env();
    if (argc > 1 && strcmp(argv[1], "--check") == 0) return check(port);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    const char *greeting = getenv("GREETING");
    if (!greeting) greeting = "";
    long boots = count_boot();

    int srv = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(srv, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(srv, 16) != 0) {
        perror("bind/listen");
        return 1;
    }
    printf("tinyhttp listening on %d (boot %ld)\n", port, boots);
    fflush(stdout);

    for (;;) {
        int c = accept(srv, NULL, NULL);
        if (c < 0) continue;
        char req[4096] = {0};
        ssize_t n = read(c, req, sizeof req - 1);
        char method[16] = {0}, path[256] = {0};
        if (n > 0) sscanf(req, "%15s %255s", method, path);
        char body[1024];
        int len = snprintf(body, sizeof body, "{\"swagger\":\"2.0\",\"greeting\":\"%s\",\"boots\":%ld,\"path\":\"%s\"}",
                           greeting, boots, path);
        char head[256];
        int hlen = snprintf(head, sizeof head,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                            "Connection: close\r\n\r\n", len);
        if (write(c, head, (size_t)hlen) < 0 || write(c, body, (size_t)len) < 0) { /* client went away */ }
        close(c);
        if (strcmp(path, "/health") != 0) {
            printf("%s %s\n", method, path);
            fflush(stdout);
        }
    }
}
