/* netproxy.c - the allowlisting HTTP(S) proxy of `agentfs run` (netproxy.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/netproxy.h"

#define HEAD_MAX	   16384
#define HEAD_TIMEOUT_MS	   30000
#define CONNECT_TIMEOUT_MS 15000
#define RELAY_BUF	   65536
#define STOP_WAIT_S	   3

/* ---- the allowlist ---- */

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static bool host_chars_ok(const char *h)
{
	if (!*h)
		return false;
	for (; *h; h++)
		if (!(isalnum((unsigned char)*h) || *h == '.' || *h == '-' || *h == '_' ||
		      *h == ':'))
			return false;
	return true;
}

/* Split "HOST[:PORT]" / "[V6][:PORT]" (@s is modified).  *port -2 when absent. */
static int split_host_port(char *s, char **host, int *port, bool star_port_ok)
{
	char *p = NULL;
	if (*s == '[') {
		char *rb = strchr(s, ']');
		if (!rb || (rb[1] && rb[1] != ':'))
			return -EINVAL;
		*rb = 0;
		*host = s + 1;
		p = rb[1] == ':' ? rb + 2 : NULL;
	} else {
		char *c = strrchr(s, ':');
		if (c && strchr(s, ':') != c)
			return -EINVAL; /* a bare IPv6 address needs brackets */
		*host = s;
		if (c) {
			*c = 0;
			p = c + 1;
		}
	}
	if (!p) {
		*port = -2;
		return 0;
	}
	if (star_port_ok && strcmp(p, "*") == 0) {
		*port = -1;
		return 0;
	}
	char *end;
	long v = strtol(p, &end, 10);
	if (!*p || *end || v < 1 || v > 65535 || !isdigit((unsigned char)*p))
		return -EINVAL;
	*port = (int)v;
	return 0;
}

static void strip_dot(char *h)
{
	size_t n = strlen(h);
	if (n > 1 && h[n - 1] == '.')
		h[n - 1] = 0;
}

int netallow_parse(const char *list, struct netallow *a, char *err, size_t errlen)
{
	char *copy = strdup(list);
	if (!copy)
		return -ENOMEM;
	int rc = 0;
	char *save = NULL;
	bool any = false;
	for (char *item = strtok_r(copy, ",", &save); item && rc == 0;
	     item = strtok_r(NULL, ",", &save)) {
		any = true;
		char *orig = strdup(item), *host;
		int port;
		if (!orig) {
			rc = -ENOMEM;
			break;
		}
		if (split_host_port(item, &host, &port, true) != 0 ||
		    !host_chars_ok(host + (strncmp(host, "*.", 2) == 0 ? 2 : 0)) ||
		    strchr(host + 1, '*')) {
			snprintf(err, errlen,
				 "--net allow: '%s': not HOST, HOST:PORT, HOST:*, [IPV6]:PORT or "
				 "*.DOMAIN",
				 orig);
			rc = -EINVAL;
		} else {
			struct netallow_rule *r = realloc(a->rules, (a->n + 1) * sizeof(*r));
			char *h = strdup(host);
			if (!r || !h) {
				free(h);
				if (r)
					a->rules = r;
				rc = -ENOMEM;
			} else {
				lower(h);
				strip_dot(h);
				a->rules = r;
				a->rules[a->n++] = (struct netallow_rule){h, port == -2 ? 0 : port};
			}
		}
		free(orig);
	}
	free(copy);
	if (rc == 0 && !any) {
		snprintf(err, errlen, "--net allow=: name at least one HOST");
		rc = -EINVAL;
	}
	return rc;
}

static bool host_matches(const char *rule, const char *host)
{
	if (strncmp(rule, "*.", 2) == 0) {
		size_t rn = strlen(rule + 1), hn = strlen(host); /* ".example.com" */
		return hn > rn && strcmp(host + hn - rn, rule + 1) == 0;
	}
	return strcmp(rule, host) == 0;
}

bool netallow_permits(const struct netallow *a, const char *host, int port)
{
	char h[256];
	if (strlen(host) >= sizeof(h))
		return false;
	strcpy(h, host);
	lower(h);
	strip_dot(h);
	for (size_t i = 0; i < a->n; i++) {
		const struct netallow_rule *r = &a->rules[i];
		if (!host_matches(r->host, h))
			continue;
		if (r->port == -1 || r->port == port ||
		    (r->port == 0 && (port == 80 || port == 443)))
			return true;
	}
	return false;
}

void netallow_clear(struct netallow *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->rules[i].host);
	free(a->rules);
	a->rules = NULL;
	a->n = 0;
}

/* ---- request heads ---- */

static const char *find_crlfcrlf(const char *buf, size_t len)
{
	return memmem(buf, len, "\r\n\r\n", 4);
}

int netproxy_parse_request(const char *buf, size_t len, struct netproxy_request *r)
{
	memset(r, 0, sizeof(*r));
	const char *end = find_crlfcrlf(buf, len);
	if (!end)
		return -EAGAIN;
	r->head_len = (size_t)(end - buf) + 4;
	const char *eol = memmem(buf, r->head_len, "\r\n", 2);
	r->line_end = (size_t)(eol - buf) + 2;

	/* METHOD SP TARGET SP HTTP/1.x */
	const char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
	if (!sp1 || sp1 == buf || (size_t)(sp1 - buf) >= sizeof(r->method))
		return -EINVAL;
	const char *tgt = sp1 + 1;
	const char *sp2 = memchr(tgt, ' ', (size_t)(eol - tgt));
	if (!sp2 || sp2 == tgt || (size_t)(eol - sp2) != 9 || strncmp(sp2, " HTTP/1.", 8) != 0)
		return -EINVAL;
	memcpy(r->method, buf, (size_t)(sp1 - buf));
	for (char *m = r->method; *m; m++)
		if (!isupper((unsigned char)*m))
			return -EINVAL;
	r->ver_off = (size_t)(sp2 - buf);

	char authority[300];
	size_t tlen = (size_t)(sp2 - tgt);
	if (strcmp(r->method, "CONNECT") == 0) {
		r->connect = true;
		if (tlen >= sizeof(authority))
			return -EINVAL;
		memcpy(authority, tgt, tlen);
		authority[tlen] = 0;
	} else {
		if (tlen < 8 || strncasecmp(tgt, "http://", 7) != 0)
			return -EINVAL; /* origin-form or https://: not a proxy request we serve */
		const char *a = tgt + 7;
		const char *slash = memchr(a, '/', (size_t)(sp2 - a));
		const char *aend = slash ? slash : sp2;
		if ((size_t)(aend - a) >= sizeof(authority) || memchr(a, '@', (size_t)(aend - a)))
			return -EINVAL;
		memcpy(authority, a, (size_t)(aend - a));
		authority[aend - a] = 0;
		r->path_off = slash ? (size_t)(slash - buf) : 0;
		r->path_len = slash ? (size_t)(sp2 - slash) : 0;
	}
	char *host;
	int port;
	if (split_host_port(authority, &host, &port, false) != 0 || !host_chars_ok(host) ||
	    strlen(host) >= sizeof(r->host))
		return -EINVAL;
	if (port == -2) {
		if (r->connect)
			return -EINVAL; /* CONNECT names its port */
		port = 80;
	}
	strcpy(r->host, host);
	lower(r->host);
	strip_dot(r->host);
	r->port = port;
	return 0;
}

/* ---- serving ---- */

struct conn {
	struct netproxy *p;
	int fd, up;
	struct conn *next;
};

struct netproxy {
	int listen_fd;
	int stop_pipe[2];
	const struct netallow *allow;
	netproxy_log_fn log;
	void *arg;
	pthread_t acceptor;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct conn *conns; /* live connections, so stop can cut them */
	size_t n_conns;
	bool stopping;
};

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static void reply(int fd, const char *status, const char *body)
{
	char buf[1024];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n%s",
			 status, strlen(body), body);
	if (n > 0)
		(void)write_all(fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Connect to @host:@port with a timeout.  The socket, or -errno. */
static int dial(struct conn *c, const char *host, int port)
{
	char ps[8];
	snprintf(ps, sizeof(ps), "%d", port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	int g = getaddrinfo(host, ps, &hints, &res);
	if (g != 0)
		return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	int err = -EHOSTUNREACH;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			       ai->ai_protocol);
		if (s < 0) {
			err = -errno;
			continue;
		}
		pthread_mutex_lock(&c->p->lock);
		c->up = s;
		pthread_mutex_unlock(&c->p->lock);
		int rc = connect(s, ai->ai_addr, ai->ai_addrlen);
		if (rc != 0 && errno == EINPROGRESS) {
			struct pollfd pf = {.fd = s, .events = POLLOUT};
			int pr = poll(&pf, 1, CONNECT_TIMEOUT_MS);
			int soerr = ETIMEDOUT;
			socklen_t sl = sizeof(soerr);
			if (pr == 1)
				getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl);
			rc = soerr ? -1 : 0;
			errno = soerr;
		}
		if (rc == 0) {
			fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK);
			freeaddrinfo(res);
			return s;
		}
		err = -errno;
		pthread_mutex_lock(&c->p->lock);
		c->up = -1;
		pthread_mutex_unlock(&c->p->lock);
		close(s);
	}
	freeaddrinfo(res);
	return err;
}

/* Copy both ways until both sides have finished (or one fails). */
static void relay(int a, int b)
{
	char *buf = malloc(RELAY_BUF);
	if (!buf)
		return;
	struct pollfd pf[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
	int open_dirs = 2;
	while (open_dirs > 0) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		bool failed = false;
		for (int i = 0; i < 2 && !failed; i++) {
			if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			int to = i == 0 ? b : a;
			ssize_t n = recv(pf[i].fd, buf, RELAY_BUF, 0);
			if (n > 0) {
				failed = write_all(to, buf, (size_t)n) < 0;
			} else if (n == 0) {
				shutdown(to, SHUT_WR);
				pf[i].fd = -1;
				open_dirs--;
			} else if (errno != EINTR) {
				failed = true;
			}
		}
		if (failed)
			break;
	}
	free(buf);
}

/* Is @name (with its ':') the header at the start of @line? */
static bool header_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* Send the absolute-form request in origin-form, without hop-by-hop proxy
 * headers, with "Connection: close"; then what followed the head. */
static int forward_http(int up, const char *buf, size_t len, const struct netproxy_request *r)
{
	size_t cap = len + 64;
	char *out = malloc(cap);
	if (!out)
		return -ENOMEM;
	size_t o = 0;
	size_t ml = strlen(r->method);
	memcpy(out + o, r->method, ml);
	o += ml;
	out[o++] = ' ';
	if (r->path_len) {
		memcpy(out + o, buf + r->path_off, r->path_len);
		o += r->path_len;
	} else {
		out[o++] = '/';
	}
	memcpy(out + o, buf + r->ver_off, r->line_end - r->ver_off);
	o += r->line_end - r->ver_off;
	size_t pos = r->line_end;
	while (pos < r->head_len - 2) {
		const char *l = buf + pos;
		const char *e = memmem(l, r->head_len - pos, "\r\n", 2);
		size_t ll = (size_t)(e - l) + 2;
		if (!header_is(l, ll, "Proxy-Connection") &&
		    !header_is(l, ll, "Proxy-Authorization") && !header_is(l, ll, "Connection") &&
		    !header_is(l, ll, "Keep-Alive")) {
			memcpy(out + o, l, ll);
			o += ll;
		}
		pos += ll;
	}
	static const char close_hdr[] = "Connection: close\r\n\r\n";
	memcpy(out + o, close_hdr, sizeof(close_hdr) - 1);
	o += sizeof(close_hdr) - 1;
	int rc = write_all(up, out, o);
	free(out);
	if (rc == 0 && len > r->head_len)
		rc = write_all(up, buf + r->head_len, len - r->head_len);
	return rc;
}

/* Report a decision unless the proxy is stopping (its log's journal may be
 * closing). */
static void plog(struct conn *c, const struct netproxy_event *ev)
{
	pthread_mutex_lock(&c->p->lock);
	if (!c->p->stopping)
		c->p->log(c->p->arg, ev);
	pthread_mutex_unlock(&c->p->lock);
}

static void serve(struct conn *c)
{
	char *buf = malloc(HEAD_MAX);
	if (!buf)
		return;
	size_t len = 0;
	struct netproxy_request r;
	int rc = -EAGAIN;
	while (rc == -EAGAIN && len < HEAD_MAX) {
		struct pollfd pf = {.fd = c->fd, .events = POLLIN};
		if (poll(&pf, 1, HEAD_TIMEOUT_MS) != 1)
			break;
		ssize_t n = recv(c->fd, buf + len, HEAD_MAX - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
		rc = netproxy_parse_request(buf, len, &r);
	}
	if (rc != 0) {
		if (rc == -EINVAL || len == HEAD_MAX)
			reply(
			    c->fd, "400 Bad Request",
			    "agentfs: this proxy serves CONNECT host:port and http:// requests\n");
		free(buf);
		return;
	}
	struct netproxy_event ev = {.method = r.method, .host = r.host, .port = r.port};
	ev.allowed = netallow_permits(c->p->allow, r.host, r.port);
	if (!ev.allowed) {
		plog(c, &ev);
		char body[400];
		snprintf(body, sizeof(body), "agentfs: %s:%d is not allowed (--net allow=...)\n",
			 r.host, r.port);
		reply(c->fd, "403 Forbidden", body);
		free(buf);
		return;
	}
	int up = dial(c, r.host, r.port);
	ev.err = up < 0 ? -up : 0;
	plog(c, &ev);
	if (up < 0) {
		char body[400];
		snprintf(body, sizeof(body), "agentfs: %s:%d: %s\n", r.host, r.port, strerror(-up));
		reply(c->fd, "502 Bad Gateway", body);
		free(buf);
		return;
	}
	if (r.connect) {
		static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
		rc = write_all(c->fd, ok, sizeof(ok) - 1);
		if (rc == 0 && len > r.head_len)
			rc = write_all(up, buf + r.head_len, len - r.head_len);
	} else {
		rc = forward_http(up, buf, len, &r);
	}
	free(buf);
	if (rc == 0)
		relay(c->fd, up);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct netproxy *p = c->p;
	serve(c);
	pthread_mutex_lock(&p->lock);
	for (struct conn **pp = &p->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->up >= 0)
		close(c->up);
	close(c->fd);
	p->n_conns--;
	pthread_cond_broadcast(&p->idle);
	pthread_mutex_unlock(&p->lock);
	free(c);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct netproxy *p = arg;
	for (;;) {
		struct pollfd pf[2] = {{.fd = p->listen_fd, .events = POLLIN},
				       {.fd = p->stop_pipe[0], .events = POLLIN}};
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents)
			break;
		if (!(pf[0].revents & POLLIN))
			continue;
		int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		struct conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		*c = (struct conn){.p = p, .fd = fd, .up = -1};
		pthread_mutex_lock(&p->lock);
		c->next = p->conns;
		p->conns = c;
		p->n_conns++;
		pthread_mutex_unlock(&p->lock);
		pthread_t t;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &at, conn_main, c) != 0)
			conn_main(c); /* closes it */
		pthread_attr_destroy(&at);
	}
	return NULL;
}

int netproxy_start(struct netproxy **out, int listen_fd, const struct netallow *allow,
		   netproxy_log_fn log, void *arg)
{
	struct netproxy *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (pipe2(p->stop_pipe, O_CLOEXEC) != 0) {
		int e = errno;
		free(p);
		return -e;
	}
	p->listen_fd = listen_fd;
	p->allow = allow;
	p->log = log;
	p->arg = arg;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->idle, NULL);
	int rc = pthread_create(&p->acceptor, NULL, accept_main, p);
	if (rc != 0) {
		close(p->stop_pipe[0]);
		close(p->stop_pipe[1]);
		free(p);
		return -rc;
	}
	*out = p;
	return 0;
}

void netproxy_stop(struct netproxy *p)
{
	if (!p)
		return;
	if (write(p->stop_pipe[1], "x", 1) < 0) {
		/* the acceptor also stops when the pipe is closed */
	}
	pthread_join(p->acceptor, NULL);
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	for (struct conn *c = p->conns; c; c = c->next) {
		shutdown(c->fd, SHUT_RDWR);
		if (c->up >= 0)
			shutdown(c->up, SHUT_RDWR);
	}
	/* A connection still resolving or dialing notices within
	 * CONNECT_TIMEOUT_MS; past STOP_WAIT_S the process is leaving anyway and
	 * @p stays allocated for the threads that remain. */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STOP_WAIT_S;
	while (p->n_conns > 0)
		if (pthread_cond_timedwait(&p->idle, &p->lock, &until) == ETIMEDOUT)
			break;
	bool busy = p->n_conns > 0;
	pthread_mutex_unlock(&p->lock);
	if (busy)
		return;
	close(p->listen_fd);
	close(p->stop_pipe[0]);
	close(p->stop_pipe[1]);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->idle);
	free(p);
}
