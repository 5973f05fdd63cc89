/* test_run.c - the pure parts of `agentfs run`: the environment allowlist,
 * the proxy's allowlist and request parsing, the /etc secret names. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/netproxy.h"
#include "cli/runenv.h"
#include "cli/sandbox.h"

static bool has(const struct strvec *sv, const char *s)
{
	for (size_t i = 0; i < sv->n; i++)
		if (strcmp(sv->v[i], s) == 0)
			return true;
	return false;
}

START_TEST(env_allowlist_and_named)
{
	char *environ_[] = {"PATH=/usr/bin",
			    "HOME=/home/p",
			    "GITHUB_TOKEN=t",
			    "AWS_REGION=eu",
			    "AWS_CA_BUNDLE=/etc/ssl/ca.pem",
			    "AWS_SESSION_TOKEN=s",
			    "AWS_ACCESS_KEY_ID=a",
			    "MY_API_KEY=k",
			    "PLAIN=p",
			    "LC_ALL=C",
			    "LC_DEPLOY_TOKEN=ghp_x",
			    "SSH_AUTH_SOCK=/s",
			    "GIT_AUTHOR_NAME=n",
			    "OPENAI_API_KEY=o",
			    NULL};
	char *opts[] = {"OPENAI_API_KEY", "EXTRA=1"};
	struct runenv e;
	char err[256];
	ck_assert_int_eq(runenv_build(environ_, opts, 2, "/home/p", &e, err, sizeof(err)), 0);
	ck_assert(has(&e.envp, "PATH=/usr/bin"));
	ck_assert(has(&e.envp, "LC_ALL=C"));
	ck_assert(has(&e.envp, "HOME=/home/p"));
	ck_assert(has(&e.envp, "OPENAI_API_KEY=o"));
	ck_assert(has(&e.envp, "EXTRA=1"));
	ck_assert_uint_eq(e.envp.n, 5);
	ck_assert(has(&e.dropped, "GITHUB_TOKEN"));
	ck_assert(has(&e.dropped, "AWS_SESSION_TOKEN"));
	ck_assert(has(&e.dropped, "AWS_ACCESS_KEY_ID"));
	/* dropped, but no credential: not named as one */
	ck_assert(!has(&e.dropped, "AWS_REGION"));
	ck_assert(!has(&e.dropped, "AWS_CA_BUNDLE"));
	ck_assert(has(&e.dropped, "MY_API_KEY"));
	ck_assert(has(&e.dropped, "SSH_AUTH_SOCK"));
	/* allowed by its LC_ prefix, but named like a credential: dropped */
	ck_assert(has(&e.dropped, "LC_DEPLOY_TOKEN"));
	ck_assert(!has(&e.dropped, "PLAIN"));
	ck_assert(!has(&e.dropped, "GIT_AUTHOR_NAME"));
	ck_assert(!has(&e.dropped, "OPENAI_API_KEY")); /* named: passed, not dropped */
	runenv_clear(&e);

	char *unset[] = {"NOPE"};
	ck_assert_int_eq(runenv_build(environ_, unset, 1, "/h", &e, err, sizeof(err)), -ENOENT);
	char *bad[] = {"1X=2"};
	ck_assert_int_eq(runenv_build(environ_, bad, 1, "/h", &e, err, sizeof(err)), -EINVAL);
	char *home[] = {"HOME=/x"};
	ck_assert_int_eq(runenv_build(environ_, home, 1, "/h", &e, err, sizeof(err)), -EINVAL);
}
END_TEST

/* The exemptions are exact names: near misses and real AWS secrets still count. */
START_TEST(env_credential_exemptions)
{
	static const char *const not_secret[] = {
	    "AWS_CA_BUNDLE", "aws_ca_bundle",	   "AWS_REGION", "AWS_DEFAULT_REGION",
	    "AWS_PROFILE",   "AWS_DEFAULT_OUTPUT", "AWS_PAGER"};
	for (size_t i = 0; i < sizeof(not_secret) / sizeof(*not_secret); i++)
		ck_assert_msg(!runenv_credential_like(not_secret[i]), "%s", not_secret[i]);
	static const char *const secret[] = {
	    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
	    "AWS_CA_BUNDLE_TOKEN",   "MY_AWS_REGION_KEY", "AWS_WEB_IDENTITY_TOKEN_FILE"};
	for (size_t i = 0; i < sizeof(secret) / sizeof(*secret); i++)
		ck_assert_msg(runenv_credential_like(secret[i]), "%s", secret[i]);
}
END_TEST

START_TEST(allowlist_matching)
{
	struct netallow a = {0};
	char err[256];
	ck_assert_int_eq(
	    netallow_parse("api.example.com,Host.Test:8080,*.cdn.net,[::1]:443,any.org:*", &a, err,
			   sizeof(err)),
	    0);
	ck_assert(netallow_permits(&a, "api.example.com", 443));
	ck_assert(netallow_permits(&a, "API.example.com.", 80));
	ck_assert(!netallow_permits(&a, "api.example.com", 22));
	ck_assert(!netallow_permits(&a, "evil-api.example.com", 443));
	ck_assert(netallow_permits(&a, "host.test", 8080));
	ck_assert(!netallow_permits(&a, "host.test", 443));
	ck_assert(netallow_permits(&a, "a.cdn.net", 443));
	ck_assert(!netallow_permits(&a, "cdn.net", 443));
	ck_assert(!netallow_permits(&a, "xcdn.net", 443));
	ck_assert(netallow_permits(&a, "::1", 443));
	ck_assert(netallow_permits(&a, "any.org", 5432));
	netallow_clear(&a);
	ck_assert_int_eq(netallow_parse("a b", &a, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(netallow_parse("h:0", &a, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(netallow_parse("h:70000", &a, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(netallow_parse("", &a, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(netallow_parse("a.*.com", &a, err, sizeof(err)), -EINVAL);
	netallow_clear(&a);
}
END_TEST

START_TEST(request_parsing)
{
	struct netproxy_request r;
	const char *c = "CONNECT Api.Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\nTLS";
	ck_assert_int_eq(netproxy_parse_request(c, strlen(c), &r), 0);
	ck_assert(r.connect);
	ck_assert_str_eq(r.host, "api.example.com");
	ck_assert_int_eq(r.port, 443);
	ck_assert_uint_eq(r.head_len, strlen(c) - 3);

	const char *g = "GET http://h.test:8080/a/b?c HTTP/1.1\r\nHost: h.test\r\n\r\n";
	ck_assert_int_eq(netproxy_parse_request(g, strlen(g), &r), 0);
	ck_assert(!r.connect);
	ck_assert_str_eq(r.host, "h.test");
	ck_assert_int_eq(r.port, 8080);
	ck_assert_int_eq(strncmp(g + r.path_off, "/a/b?c", r.path_len), 0);
	ck_assert_uint_eq(r.path_len, 6);

	const char *d = "GET http://h.test HTTP/1.0\r\n\r\n";
	ck_assert_int_eq(netproxy_parse_request(d, strlen(d), &r), 0);
	ck_assert_int_eq(r.port, 80);

	const char *partial = "CONNECT a:1 HTTP/1.1\r\n";
	ck_assert_int_eq(netproxy_parse_request(partial, strlen(partial), &r), -EAGAIN);
	const char *bad[] = {
	    "GET /origin HTTP/1.1\r\n\r\n",	  /* not a proxy request */
	    "GET https://h/ HTTP/1.1\r\n\r\n",	  /* TLS is CONNECT's */
	    "CONNECT h HTTP/1.1\r\n\r\n",	  /* no port */
	    "CONNECT h:1 SPDY/3\r\n\r\n",	  /* not HTTP/1.x */
	    "GET http://u:p@h/ HTTP/1.1\r\n\r\n", /* userinfo */
	    "get http://h/ HTTP/1.1\r\n\r\n",	  /* methods are upper-case */
	    "CONNECT h/x:1 HTTP/1.1\r\n\r\n",	  /* not a host */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(netproxy_parse_request(bad[i], strlen(bad[i]), &r) == -EINVAL, "%s",
			      bad[i]);
}
END_TEST

START_TEST(etc_secrets_by_name)
{
	ck_assert(sandbox_etc_secret("shadow"));
	ck_assert(sandbox_etc_secret("ssh/ssh_host_ed25519_key"));
	ck_assert(!sandbox_etc_secret("ssh/ssh_host_ed25519_key.pub"));
	ck_assert(sandbox_etc_secret("ssl/private"));
	ck_assert(!sandbox_etc_secret("passwd"));
	ck_assert(!sandbox_etc_secret("ssl/certs"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("run");
	TCase *tc = tcase_create("run");
	tcase_add_test(tc, env_allowlist_and_named);
	tcase_add_test(tc, env_credential_exemptions);
	tcase_add_test(tc, allowlist_matching);
	tcase_add_test(tc, request_parsing);
	tcase_add_test(tc, etc_secrets_by_name);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
