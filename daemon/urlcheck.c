/* urlcheck: the gate every job URL passes, and the source it belongs to.
 *
 * libcurl's URL API does the parsing; this file adds what hauld needs on
 * top: http and https only (libcurl itself also takes ftp, file, ...), no
 * blank or control byte anywhere (older libcurl lets some through), a port
 * other than 0, and a host that is safe as the <source> directory of
 * DOWNLOAD_DIR/<job>/<source>/<name>: not "." or "..", no leading dot or
 * empty label, at most SOURCE_NAME_MAX bytes. The source is the host with
 * ASCII lower-cased (IPv6 keeps its brackets, loses its zone id) plus
 * ":port" when the port is not the scheme's default. */
#include "autoconfig.h" /* autoconf's; "config.h" would find daemon/config.h */

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/job.h"
#include "daemon/urlcheck.h"

static bool has_blank_or_control(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s <= 0x20 || *s == 0x7f)
                        return true;
        return false;
}

static int curl_error(CURLUcode rc)
{
        switch (rc) {
        case CURLUE_OK:
                return 0;
        case CURLUE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLUE_UNSUPPORTED_SCHEME:
                return -EPROTONOSUPPORT;
        default:
                return -EINVAL;
        }
}

/* libcurl decodes and checks host names; the separators are refused here
 * too, so the <source> directory never depends on its version. */
static bool host_usable(const char *host)
{
        return host[0] != '.' && !strstr(host, "..") && !strpbrk(host, "/\\");
}

/* "host" or "host:port", ASCII lower-cased, malloc'd in *ret. */
static int make_source(CURLU *u, char **ret)
{
        char *host = NULL, *port = NULL, *src = NULL;
        CURLUcode rc;
        int r;

        r = curl_error(curl_url_get(u, CURLUPART_HOST, &host, 0));
        if (r < 0)
                goto fail;
        rc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
        if (rc != CURLUE_OK && rc != CURLUE_NO_PORT) {
                r = curl_error(rc);
                goto fail;
        }
        r = -EINVAL;
        if (!host_usable(host) || (port && strcmp(port, "0") == 0))
                goto fail;
        if (asprintf(&src, port ? "%s:%s" : "%s", host, port) < 0) {
                src = NULL;
                r = -ENOMEM;
                goto fail;
        }
        if (strlen(src) > SOURCE_NAME_MAX) {
                free(src);
                goto fail;
        }
        for (char *p = src; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p - 'A' + 'a');
        *ret = src;
        r = 0;
fail:
        curl_free(port);
        curl_free(host);
        return r;
}

static bool scheme_ok(CURLU *u)
{
        char *scheme = NULL;
        bool ok;

        if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
                return false;
        /* libcurl hands the scheme back lower-cased. */
        ok = strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0;
        curl_free(scheme);
        return ok;
}

int urlcheck_validate(const char *url, char **ret_source, char **ret_normalized)
{
        CURLU *u;
        char *source = NULL, *norm = NULL, *copy = NULL;
        int r;

        if (!url || !*url)
                return -EINVAL;
        if (strnlen(url, JOB_URL_MAX + 1) > JOB_URL_MAX)
                return -E2BIG;
        if (has_blank_or_control(url))
                return -EINVAL;
        u = curl_url();
        if (!u)
                return -ENOMEM;
        /* Without CURLU_NON_SUPPORT_SCHEME, javascript:, data: and other
         * schemes libcurl lacks fail here as CURLUE_UNSUPPORTED_SCHEME. */
        r = curl_error(curl_url_set(u, CURLUPART_URL, url, 0));
        if (r < 0)
                goto fail;
        if (!scheme_ok(u)) {
                r = -EPROTONOSUPPORT;
                goto fail;
        }
        r = make_source(u, &source);
        if (r < 0)
                goto fail;
        r = curl_error(curl_url_get(u, CURLUPART_URL, &norm, 0));
        if (r < 0)
                goto fail;
        /* Callers free() what they get; curl's memory goes to curl_free(). */
        copy = strdup(norm);
        if (!copy) {
                r = -ENOMEM;
                goto fail;
        }
        if (ret_source) {
                *ret_source = source;
                source = NULL;
        }
        if (ret_normalized) {
                *ret_normalized = copy;
                copy = NULL;
        }
fail:
        free(copy);
        curl_free(norm);
        free(source);
        curl_url_cleanup(u);
        return r;
}
