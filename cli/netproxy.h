/*
 * netproxy.h - the HTTP(S) proxy that is the only way out of a sandbox run
 * with `--net allow=HOST[:PORT],...`.
 *
 * The sandbox has a network namespace of its own with loopback only.  Its
 * listening socket (127.0.0.1:SANDBOX_PROXY_PORT inside, made by
 * sandbox_spawn()) is accepted on here, outside the sandbox, in the host's
 * network namespace; HTTPS_PROXY and HTTP_PROXY point the command at it.
 *
 * What it speaks (RFC 9110 9.3.6, RFC 9112 3.2.2):
 *   CONNECT host:port HTTP/1.1   a tunnel (HTTPS, or any TCP): "200" then bytes
 *   METHOD http://host[:port]/path HTTP/1.x   plain HTTP, forwarded in
 *                                origin-form with "Connection: close"
 * Anything else gets 400; a host the allowlist does not name gets 403; a
 * failed resolution or connection 502.  Each decision (allowed or refused,
 * and for allowed ones whether the connection succeeded) is reported to the
 * caller's log function, which journals it.  Names are matched as the client
 * sent them (no DNS in the decision); resolution happens here, outside.
 *
 * Functions return 0 or a negative errno.
 */
#ifndef AGENTFS_NETPROXY_H
#define AGENTFS_NETPROXY_H

#include <stdbool.h>
#include <stddef.h>

/* One allowlist entry.  @host is lower-case, without brackets for IPv6, and
 * "*.example.com" matches every name below example.com (not itself). */
struct netallow_rule {
	char *host;
	int port; /* > 0: that port; 0: 80 and 443 (HOST alone); -1: any (HOST:*) */
};

struct netallow {
	struct netallow_rule *rules;
	size_t n;
};

/* Parse "HOST[:PORT],..." (HOST a name, an IPv4 address, [IPv6] or *.DOMAIN;
 * PORT 1-65535 or *).  Appends to @a.  -EINVAL with the reason in @err. */
int netallow_parse(const char *list, struct netallow *a, char *err, size_t errlen);

/* Does @a allow @host (as the client sent it; compared case-insensitively,
 * a trailing dot ignored) on @port? */
bool netallow_permits(const struct netallow *a, const char *host, int port);

void netallow_clear(struct netallow *a);

/* A parsed proxy request head. */
struct netproxy_request {
	char method[24];
	char host[256]; /* lower-case, no brackets, no trailing dot */
	int port;
	bool connect;	 /* CONNECT; else an absolute-form http:// request */
	size_t path_off; /* absolute-form: the origin-form path "/..." in the head */
	size_t path_len;
	size_t ver_off;	 /* offset of " HTTP/1.x" after the target */
	size_t line_end; /* offset just after the request line's CRLF */
	size_t head_len; /* offset just after the blank line ending the head */
};

/* Parse the request head at the start of @buf (@len bytes, which must hold
 * the whole head through "\r\n\r\n").  -EAGAIN when the head is incomplete,
 * -EINVAL when it is not a request this proxy serves. */
int netproxy_parse_request(const char *buf, size_t len, struct netproxy_request *r);

/* One decision, for the journal.  Strings are borrowed for the call. */
struct netproxy_event {
	const char *method;
	const char *host;
	int port;
	bool allowed;
	int err; /* allowed: 0 when connected, else the positive errno of the
		  * connection (EHOSTUNREACH for a name that did not resolve) */
};

typedef void (*netproxy_log_fn)(void *arg, const struct netproxy_event *ev);

struct netproxy;

/* Serve connections accepted on @listen_fd (taken over) in threads of this
 * process, deciding with @allow (borrowed; must outlive the proxy) and
 * reporting to @log (called from those threads). */
int netproxy_start(struct netproxy **out, int listen_fd, const struct netallow *allow,
		   netproxy_log_fn log, void *arg);

/* Stop accepting, cut every open connection, wait for the threads, free. */
void netproxy_stop(struct netproxy *p);

#endif
