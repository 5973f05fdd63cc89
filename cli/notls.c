/*
 * notls.c - agentfs makes no TLS connection, so it loads no CA certificates.
 *
 * libgit2 as Debian 12 builds it (1.5, HTTPS through mbed TLS, configured with
 * GIT_DEFAULT_CERT_LOCATION=/etc/ssl/certs/ca-certificates.crt) parses that
 * whole bundle inside git_libgit2_init(), before any repository is opened:
 * 3.7 ms of every agentfs command measured here, most of it base64 and ASN.1
 * decoding in libmbedcrypto (perf), and a quarter of the time from
 * `agentfs mount` until the first `ls` of the mount (tests/bench/RESULTS.md).
 * agentfs never talks to a remote: it fetches, pushes and clones nothing, and
 * the proxy of `agentfs run` forwards bytes without terminating TLS.
 *
 * So the executable defines the one mbed TLS function libgit2 loads a CA file
 * with, and exports it (cli/meson.build: --export-dynamic-symbol): the dynamic
 * linker binds libgit2's call to the executable's definition before the
 * library's (symbol interposition: the executable comes first in the lookup
 * scope, ld.so(8)).  It loads nothing and reports success, so libgit2 does not
 * go on to try the certificate directory either.
 *
 * Fails closed: were a TLS connection ever made, its chain of trusted CAs would
 * be empty and every peer certificate would fail verification.  That holds for
 * git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS) too, which loads its file
 * through this function: it succeeds and trusts nothing, so code that ever
 * needs TLS in this process must remove this file first.  With a libgit2
 * built against OpenSSL, or with mbed TLS linked into it statically, nothing
 * calls this and libgit2 loads its CAs as before.  Only the executable has it:
 * the unit tests, which link cli_lib, keep libgit2's own behaviour.
 */
struct mbedtls_x509_crt;

/* mbed TLS 2.28 x509_crt.h: returns 0 if all certificates parsed, a positive
 * number of certificates that did not, or a negative error code. */
int mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path);

int mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path)
{
	(void)chain;
	(void)path;
	return 0;
}
