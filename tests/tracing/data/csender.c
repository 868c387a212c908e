// A plain C UDP sender/receiver for the lab test of `bench trace -- ./prog`:
// N datagrams of S bytes over loopback, each received and checked before the next.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[1]) : 0, size = argc > 2 ? atoi(argv[2]) : 0, i;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	char *out = malloc(size + 1), *in = malloc(size + 1);
	int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (n <= 0 || size <= 0 || !out || !in || rx < 0 || tx < 0 ||
	    bind(rx, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(rx, (struct sockaddr *)&a, &alen)) {
		perror("sender: setup");
		return 2;
	}
	memset(out, 'c', size);
	for (i = 0; i < n; i++) {
		if (sendto(tx, out, size, 0, (struct sockaddr *)&a, sizeof(a)) != size ||
		    recv(rx, in, size + 1, 0) != size || memcmp(in, out, size)) {
			perror("sender: datagram");
			return 1;
		}
	}
	printf("sent %d x %d B\n", n, size);
	return 0;
}
