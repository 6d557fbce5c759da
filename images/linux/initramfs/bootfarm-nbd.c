/*
 * bootfarm-nbd: attaches a bootfarm vDisk export to /dev/nbdN and keeps it
 * attached across an appliance failover.
 *
 *   bootfarm-nbd [-t timeout] [-d dead-timeout] [-w stay] [-b block-size] -e EXPORT /dev/nbdN HOST:PORT [HOST:PORT...]
 *
 * Why not nbd-client: Debian 12's nbd-client 3.24 either configures the
 * device through netlink and exits (no dead-connection timeout, no reconnect:
 * I/O fails with EIO the moment the connection drops), or, with -nonetlink
 * -persist, loses the requests queued while it reconnects and cannot
 * re-attach a device that is still mounted ("Device being setup by another
 * task"). The kernel (since 4.12) has what a root disk needs: a
 * dead-connection timeout during which I/O waits instead of failing
 * (NBD_ATTR_DEAD_CONN_TIMEOUT), a multicast NBD_CMD_LINK_DEAD when a
 * connection dies, and NBD_CMD_RECONFIGURE to hand it a new socket
 * (drivers/block/nbd.c: wait_for_reconnect, nbd_reconnect_socket). This
 * program does the handshake (fixed newstyle, NBD_OPT_GO; the protocol as in
 * NetworkBlockDevice/nbd doc/proto.md) and those three netlink steps, and
 * nothing else.
 *
 * It connects to the first server that answers, in the order given (the
 * chosen appliance's floating address first), configures the device, forks
 * and stays in the background as "@bootfarm-nbd" (systemd leaves processes
 * whose argv[0] starts with '@' alone at shutdown: they hold the root disk).
 * When the kernel reports the connection dead it connects again every 250 ms
 * and hands the new socket over: for the first -w seconds to the same server
 * only (a floating address moves to a surviving appliance within the site's
 * peer timeout; staying on it keeps the site's balance, and the target goes
 * home when the address is handed back), then to every server in order. Requests in flight on the dead
 * connection are sent again by the kernel once their timeout (-t) expires;
 * new requests wait for the new socket, up to the dead-connection timeout (-d).
 *
 * Messages go to the kernel log (/dev/kmsg), so they reach the console with
 * the kernel's own NBD messages.
 *
 * Static, libc only (no libnl): built by images/linux/build.ts with
 * `gcc -static -Os`. Exit status: 0 attached, 1 usage, 2 no server accepted
 * the export, 3 the kernel refused the device.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/nbd.h>
#include <linux/netlink.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NBD_MAGIC_INIT 0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_MAGIC_OPTS 0x49484156454F5054ULL /* "IHAVEOPT" */
#define NBD_MAGIC_REPLY 0x0003e889045565a9ULL
#define NBD_FLAG_FIXED_NEWSTYLE (1 << 0)
#define NBD_FLAG_NO_ZEROES (1 << 1)
#define NBD_OPT_GO 7
#define NBD_REP_ACK 1
#define NBD_REP_INFO 3
#define NBD_REP_FLAG_ERROR (1U << 31)
#define NBD_INFO_EXPORT 0
#define MAX_SERVERS 8
#define MAX_REPLY 65536

static const char *prog = "bootfarm-nbd";
static int kmsg = -1;

/* One line to the kernel log (console) and, before daemonising, stderr. */
static void say(int level, const char *fmt, ...) {
	char line[600];
	va_list ap;
	int n = snprintf(line, sizeof line, "<%d>%s: ", level, prog);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	/* The newline ends the record: without it the kernel keeps it open for a continuation and readers of the log never see it. */
	strcat(line, "\n");
	if (kmsg < 0 || write(kmsg, line, strlen(line)) < 0) fputs(line + 3, stderr);
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void nap(int ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

/* ------------------------------------------------------------ NBD handshake */

struct server {
	char host[64];
	char port[8];
};

struct export_info {
	uint64_t size;
	uint16_t flags;
};

static int read_full(int fd, void *buf, size_t len) {
	uint8_t *p = buf;
	while (len) {
		ssize_t r = read(fd, p, len);
		if (r < 0 && errno == EINTR) continue;
		if (r <= 0) return -1;
		p += r;
		len -= r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
	const uint8_t *p = buf;
	while (len) {
		ssize_t r = write(fd, p, len);
		if (r < 0 && errno == EINTR) continue;
		if (r <= 0) return -1;
		p += r;
		len -= r;
	}
	return 0;
}

static uint64_t be64(const uint8_t *p) {
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
	return v;
}
static uint32_t be32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static void put64(uint8_t *p, uint64_t v) {
	for (int i = 7; i >= 0; i--, v >>= 8) p[i] = v & 0xff;
}
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v; }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8, p[1] = v & 0xff; }

static void set_timeouts(int fd, int seconds) {
	struct timeval tv = {seconds, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* A TCP connection within `ms`, or -1. Servers are addresses (boot scripts name them so): no resolver in the initramfs. */
static int dial(const struct server *s, int ms, char *why, size_t whylen) {
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, s->host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(atoi(s->port));
		sl = sizeof *v4;
	} else if (inet_pton(AF_INET6, s->host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(atoi(s->port));
		sl = sizeof *v6;
	} else {
		snprintf(why, whylen, "not an IP address");
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	int r = connect(fd, (struct sockaddr *)&ss, sl);
	if (r < 0 && errno == EINPROGRESS) {
		struct pollfd p = {fd, POLLOUT, 0};
		r = poll(&p, 1, ms);
		if (r == 0) {
			snprintf(why, whylen, "no answer within %d ms", ms);
			close(fd);
			return -1;
		}
		int err = 0;
		socklen_t len = sizeof err;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (r < 0 || err) {
			snprintf(why, whylen, "%s", strerror(r < 0 ? errno : err));
			close(fd);
			return -1;
		}
	} else if (r < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	int one = 1, idle = 10, intvl = 3, cnt = 3;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* A server that vanishes without a FIN (power loss, cut link) is noticed while the disk is idle too. */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
	return fd;
}

/*
 * Fixed newstyle handshake with NBD_OPT_GO (doc/proto.md, "Fixed newstyle
 * negotiation"): on success the socket is ready for transmission and `info`
 * holds the export's size and flags. On failure `why` says what the server said.
 */
static int handshake(int fd, const char *name, struct export_info *info, char *why, size_t whylen) {
	uint8_t b[32];
	set_timeouts(fd, 5);
	if (read_full(fd, b, 18)) return snprintf(why, whylen, "no greeting"), -1;
	if (be64(b) != NBD_MAGIC_INIT || be64(b + 8) != NBD_MAGIC_OPTS) return snprintf(why, whylen, "not a newstyle NBD server"), -1;
	uint16_t hflags = be16(b + 16);
	if (!(hflags & NBD_FLAG_FIXED_NEWSTYLE)) return snprintf(why, whylen, "server is not fixed newstyle"), -1;
	uint32_t cflags = NBD_FLAG_FIXED_NEWSTYLE | (hflags & NBD_FLAG_NO_ZEROES);
	size_t nlen = strlen(name);
	uint8_t opt[16 + 4 + 4096 + 2];
	if (nlen > 4096) return snprintf(why, whylen, "export name too long"), -1;
	put32(b, cflags);
	put64(opt, NBD_MAGIC_OPTS);
	put32(opt + 8, NBD_OPT_GO);
	put32(opt + 12, 4 + nlen + 2);
	put32(opt + 16, nlen);
	memcpy(opt + 20, name, nlen);
	put16(opt + 20 + nlen, 0); /* no NBD_INFO requests: NBD_INFO_EXPORT always comes */
	if (write_full(fd, b, 4) || write_full(fd, opt, 20 + nlen + 2)) return snprintf(why, whylen, "send failed: %s", strerror(errno)), -1;
	int have_export = 0;
	for (int replies = 0; replies < 64; replies++) {
		if (read_full(fd, b, 20)) return snprintf(why, whylen, "connection closed during negotiation"), -1;
		if (be64(b) != NBD_MAGIC_REPLY) return snprintf(why, whylen, "bad option reply magic"), -1;
		uint32_t type = be32(b + 12), len = be32(b + 16);
		if (len > MAX_REPLY) return snprintf(why, whylen, "option reply of %u bytes", len), -1;
		char *data = malloc(len + 1);
		if (!data) return snprintf(why, whylen, "out of memory"), -1;
		if (len && read_full(fd, data, len)) return free(data), snprintf(why, whylen, "connection closed during negotiation"), -1;
		data[len] = 0;
		if (type & NBD_REP_FLAG_ERROR) {
			/* The server's message says why (bootfarm names the reason: version not held, target disabled, ...). */
			snprintf(why, whylen, "export refused (reply 0x%x): %.400s", type, data);
			free(data);
			return -1;
		}
		if (type == NBD_REP_INFO && len >= 12 && be16((uint8_t *)data) == NBD_INFO_EXPORT) {
			info->size = be64((uint8_t *)data + 2);
			info->flags = be16((uint8_t *)data + 10);
			have_export = 1;
		}
		free(data);
		if (type == NBD_REP_ACK) {
			if (!have_export) return snprintf(why, whylen, "server sent no NBD_INFO_EXPORT"), -1;
			set_timeouts(fd, 0); /* the kernel reads this socket from now on: no timeout of ours may cut it */
			return 0;
		}
	}
	return snprintf(why, whylen, "too many option replies"), -1;
}

/* The first server in order that accepts the export (with the expected size when `want_size`), each given `ms` to answer. */
static int connect_any(const struct server *servers, int n, const char *name, uint64_t want_size, struct export_info *info, int quiet, int *which, int ms) {
	char why[512];
	for (int i = 0; i < n; i++) {
		int fd = dial(&servers[i], ms, why, sizeof why);
		if (fd >= 0 && handshake(fd, name, info, why, sizeof why) == 0) {
			if (want_size && info->size != want_size) {
				snprintf(why, sizeof why, "export is %llu bytes, the attached disk %llu", (unsigned long long)info->size, (unsigned long long)want_size);
			} else {
				*which = i;
				return fd;
			}
		}
		if (fd >= 0) close(fd);
		if (!quiet) say(4, "%s:%s: %s", servers[i].host, servers[i].port, why);
	}
	return -1;
}

/* -------------------------------------------------------- generic netlink */

struct nl {
	int fd;
	uint32_t seq;
	uint8_t buf[8192];
	size_t len;
};

static struct nlattr *attr_put(struct nl *m, uint16_t type, const void *data, size_t len) {
	struct nlattr *a = (struct nlattr *)(m->buf + m->len);
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	if (len) memcpy((uint8_t *)a + NLA_HDRLEN, data, len);
	m->len += NLA_ALIGN(a->nla_len);
	return a;
}
static void attr_u32(struct nl *m, uint16_t type, uint32_t v) { attr_put(m, type, &v, 4); }
static void attr_u64(struct nl *m, uint16_t type, uint64_t v) { attr_put(m, type, &v, 8); }
static void attr_end(struct nl *m, struct nlattr *a) { a->nla_len = (uint8_t *)(m->buf + m->len) - (uint8_t *)a; }

static void msg_start(struct nl *m, uint16_t family, uint8_t cmd, uint8_t version) {
	memset(m->buf, 0, NLMSG_HDRLEN + GENL_HDRLEN);
	struct nlmsghdr *h = (struct nlmsghdr *)m->buf;
	h->nlmsg_type = family;
	h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	h->nlmsg_seq = ++m->seq;
	struct genlmsghdr *g = (struct genlmsghdr *)(m->buf + NLMSG_HDRLEN);
	g->cmd = cmd;
	g->version = version;
	m->len = NLMSG_HDRLEN + GENL_HDRLEN;
}

/* Sends the message; 0 or the kernel's negative errno. Replies other than the ACK go to `on_reply`. */
static int msg_send(struct nl *m, void (*on_reply)(struct nlmsghdr *, void *), void *ctx) {
	((struct nlmsghdr *)m->buf)->nlmsg_len = m->len;
	struct sockaddr_nl to = {.nl_family = AF_NETLINK};
	if (sendto(m->fd, m->buf, m->len, 0, (struct sockaddr *)&to, sizeof to) < 0) return -errno;
	for (;;) {
		uint8_t in[16384];
		ssize_t r = recv(m->fd, in, sizeof in, 0);
		if (r < 0 && errno == EINTR) continue;
		if (r < 0) return -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)in; NLMSG_OK(h, (size_t)r); h = NLMSG_NEXT(h, r)) {
			if (h->nlmsg_seq != m->seq) continue;
			if (h->nlmsg_type == NLMSG_ERROR) return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
			if (on_reply) on_reply(h, ctx);
		}
	}
}

struct family {
	uint16_t id;
	uint32_t mcast;
};

static void on_family(struct nlmsghdr *h, void *ctx) {
	struct family *f = ctx;
	struct nlattr *a = (struct nlattr *)((uint8_t *)NLMSG_DATA(h) + GENL_HDRLEN);
	int left = h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;
	for (; left >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= left; left -= NLA_ALIGN(a->nla_len), a = (struct nlattr *)((uint8_t *)a + NLA_ALIGN(a->nla_len))) {
		if ((a->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_FAMILY_ID) f->id = *(uint16_t *)((uint8_t *)a + NLA_HDRLEN);
		if ((a->nla_type & NLA_TYPE_MASK) != CTRL_ATTR_MCAST_GROUPS) continue;
		/* [CTRL_ATTR_MCAST_GROUPS] [n] [CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_MCAST_GRP_ID] */
		struct nlattr *grp = (struct nlattr *)((uint8_t *)a + NLA_HDRLEN);
		int gl = a->nla_len - NLA_HDRLEN;
		for (; gl >= NLA_HDRLEN && grp->nla_len >= NLA_HDRLEN && grp->nla_len <= gl; gl -= NLA_ALIGN(grp->nla_len), grp = (struct nlattr *)((uint8_t *)grp + NLA_ALIGN(grp->nla_len))) {
			struct nlattr *x = (struct nlattr *)((uint8_t *)grp + NLA_HDRLEN);
			int xl = grp->nla_len - NLA_HDRLEN;
			const char *gname = NULL;
			uint32_t gid = 0;
			for (; xl >= NLA_HDRLEN && x->nla_len >= NLA_HDRLEN && x->nla_len <= xl; xl -= NLA_ALIGN(x->nla_len), x = (struct nlattr *)((uint8_t *)x + NLA_ALIGN(x->nla_len))) {
				if ((x->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_MCAST_GRP_NAME) gname = (const char *)x + NLA_HDRLEN;
				if ((x->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_MCAST_GRP_ID) gid = *(uint32_t *)((uint8_t *)x + NLA_HDRLEN);
			}
			if (gname && !strcmp(gname, NBD_GENL_MCAST_GROUP_NAME)) f->mcast = gid;
		}
	}
}

static int nl_open(struct nl *m) {
	m->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (m->fd < 0) return -errno;
	struct sockaddr_nl me = {.nl_family = AF_NETLINK};
	if (bind(m->fd, (struct sockaddr *)&me, sizeof me) < 0) return -errno;
	m->seq = (uint32_t)time(NULL);
	return 0;
}

static int nbd_family(struct nl *m, struct family *f) {
	msg_start(m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
	attr_put(m, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, strlen(NBD_GENL_FAMILY_NAME) + 1);
	memset(f, 0, sizeof *f);
	int r = msg_send(m, on_family, f);
	return r ? r : (f->id ? 0 : -ENOENT);
}

static void put_socket(struct nl *m, int sock) {
	struct nlattr *socks = attr_put(m, NBD_ATTR_SOCKETS, NULL, 0);
	struct nlattr *item = attr_put(m, NBD_SOCK_ITEM, NULL, 0);
	attr_u32(m, NBD_SOCK_FD, sock);
	attr_end(m, item);
	attr_end(m, socks);
}

/* ---------------------------------------------------------------- main */

static void usage(void) {
	fprintf(stderr, "usage: %s [-t timeout] [-d dead-timeout] [-w stay] [-b block-size] -e EXPORT /dev/nbdN HOST:PORT [HOST:PORT...]\n", prog);
	exit(1);
}

static int parse_server(const char *s, struct server *out) {
	const char *colon = strrchr(s, ':');
	size_t hl = colon ? (size_t)(colon - s) : strlen(s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') s++, hl -= 2; /* [IPv6]:port */
	if (hl == 0 || hl >= sizeof out->host) return -1;
	memcpy(out->host, s, hl);
	out->host[hl] = 0;
	snprintf(out->port, sizeof out->port, "%s", colon ? colon + 1 : "10809");
	return strspn(out->port, "0123456789") == strlen(out->port) && *out->port ? 0 : -1;
}

int main(int argc, char **argv) {
	const char *export_name = NULL;
	long timeout = 10, dead = 300, block = 512, stay = 0;
	int opt;
	while ((opt = getopt(argc, argv, "e:t:d:b:w:")) != -1) {
		switch (opt) {
		case 'e': export_name = optarg; break;
		case 't': timeout = strtol(optarg, NULL, 10); break;
		case 'd': dead = strtol(optarg, NULL, 10); break;
		case 'b': block = strtol(optarg, NULL, 10); break;
		case 'w': stay = strtol(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (!export_name || argc - optind < 2 || timeout < 1 || dead < 1 || stay < 0 || (block != 512 && block != 1024 && block != 2048 && block != 4096)) usage();
	const char *dev = argv[optind];
	unsigned index;
	if (sscanf(dev, "/dev/nbd%u", &index) != 1) usage();
	struct server servers[MAX_SERVERS];
	int n = 0;
	for (int i = optind + 1; i < argc && n < MAX_SERVERS; i++)
		if (parse_server(argv[i], &servers[n++])) usage();
	kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

	struct nl m;
	struct family fam;
	int r = nl_open(&m);
	if (!r) r = nbd_family(&m, &fam);
	if (r) {
		say(3, "the kernel's NBD netlink family is missing (load the nbd module): %s", strerror(-r));
		return 3;
	}

	struct export_info info;
	int which = 0, sock = -1;
	double start = now();
	/* The site may still be settling (an appliance adopting an address): keep trying for a minute. */
	for (int round = 0; sock < 0; round++) {
		/* The first answer decides where the target reads (the site's balance): a first ARP or SYN lost is worth waiting for. */
		sock = connect_any(servers, n, export_name, 0, &info, round > 0 && round % 8, &which, 3000);
		if (sock >= 0) break;
		if (now() - start > 60) {
			say(3, "no server accepted export %s within 60 s", export_name);
			return 2;
		}
		nap(500);
	}

	msg_start(&m, fam.id, NBD_CMD_CONNECT, NBD_GENL_VERSION);
	attr_u32(&m, NBD_ATTR_INDEX, index);
	attr_u64(&m, NBD_ATTR_SIZE_BYTES, info.size);
	attr_u64(&m, NBD_ATTR_BLOCK_SIZE_BYTES, block);
	attr_u64(&m, NBD_ATTR_SERVER_FLAGS, info.flags);
	attr_u64(&m, NBD_ATTR_TIMEOUT, timeout);
	attr_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, dead);
	put_socket(&m, sock);
	r = msg_send(&m, NULL, NULL);
	if (r) {
		say(3, "the kernel refused to set up %s: %s", dev, strerror(-r));
		return 3;
	}
	close(sock); /* the kernel holds its own reference */
	say(5, "%s attached to %s:%s (%llu bytes, %s), request timeout %ld s, dead-connection timeout %ld s", dev, servers[which].host, servers[which].port,
	    (unsigned long long)info.size, info.flags & NBD_FLAG_READ_ONLY ? "read-only" : "read-write", timeout, dead);

	/* Listen before detaching: a connection that dies right away is not missed. */
	struct nl ev;
	if (nl_open(&ev) || setsockopt(ev.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &fam.mcast, sizeof fam.mcast) < 0) {
		say(3, "cannot listen for NBD link events: %s; %s stays attached without failover", strerror(errno), dev);
		return 0;
	}
	pid_t child = fork();
	if (child < 0) {
		say(3, "fork: %s; %s stays attached without failover", strerror(errno), dev);
		return 0;
	}
	if (child > 0) return 0;
	setsid();
	if (chdir("/")) {
	}
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) dup2(null, 0), dup2(null, 1), dup2(null, 2);
	argv[0][0] = '@';
	signal(SIGHUP, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* The root disk depends on this process: it must never wait for a page of it to be read from that disk. */
	mlockall(MCL_CURRENT | MCL_FUTURE);

	for (;;) {
		uint8_t in[8192];
		ssize_t len = recv(ev.fd, in, sizeof in, 0);
		int dead_link = 0;
		if (len < 0 && errno == EINTR) continue;
		if (len < 0 && errno == ENOBUFS) dead_link = 1; /* events were dropped: one of them may have been ours */
		else if (len < 0) {
			say(3, "link events: %s", strerror(errno));
			nap(1000);
			continue;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)in; len > 0 && NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
			struct genlmsghdr *g = NLMSG_DATA(h);
			if (h->nlmsg_type != fam.id || g->cmd != NBD_CMD_LINK_DEAD) continue;
			struct nlattr *a = (struct nlattr *)((uint8_t *)g + GENL_HDRLEN);
			if ((a->nla_type & NLA_TYPE_MASK) == NBD_ATTR_INDEX && *(uint32_t *)((uint8_t *)a + NLA_HDRLEN) == index) dead_link = 1;
		}
		if (!dead_link) continue;
		double lost = now();
		int home = which;
		if (stay > 0 && n > 1)
			say(4, "connection of %s to %s:%s lost: reconnecting to it (its address may move to another appliance), to the others after %ld s", dev, servers[home].host, servers[home].port, stay);
		else
			say(4, "connection of %s to %s:%s lost: reconnecting", dev, servers[home].host, servers[home].port);
		for (int round = 0;; round++) {
			struct export_info again;
			int prev = which;
			if (now() - lost < stay) {
				/* Short tries, often: the address answers again the moment a survivor adopts it (a lost SYN would be resent only after 1 s). */
				sock = connect_any(&servers[home], 1, export_name, info.size, &again, round % 20 != 0, &which, 500);
				which = home;
			} else
				sock = connect_any(servers, n, export_name, info.size, &again, round % 20 != 0, &which, 1000);
			if (sock >= 0) {
				msg_start(&m, fam.id, NBD_CMD_RECONFIGURE, NBD_GENL_VERSION);
				attr_u32(&m, NBD_ATTR_INDEX, index);
				put_socket(&m, sock);
				r = msg_send(&m, NULL, NULL);
				close(sock);
				if (!r) {
					say(4, "%s reconnected to %s:%s after %.2f s", dev, servers[which].host, servers[which].port, now() - lost);
					break;
				}
				say(3, "the kernel refused the new connection to %s:%s: %s", servers[which].host, servers[which].port, strerror(-r));
				which = prev;
			}
			nap(250);
		}
	}
}
