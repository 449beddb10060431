/* dashboard: GET / and its assets (/app.js, /app.css, /favicon.svg), the
 * files of api/dashboard/ built into the binary (api/dashboard_assets.h,
 * made by Makefile.am), and GET /v1/openapi.yaml, the API's contract
 * (docs/openapi.yaml) built in the same way, byte for byte.
 *
 * The page holds no data of its own, so these routes are public: it reads
 * and changes everything through the API like any client, with the token
 * the user gives it; the contract describes the API and holds nothing
 * either. Every answer carries a strict Content-Security-Policy:
 * scripts, styles, fetches and images from this daemon only (images also
 * from blob: URLs, for thumbnails fetched with the token), no inline script
 * or style, no plugins, no framing, forms posted nowhere else. */
#include "autoconfig.h"

#include <microhttpd.h>

#include "api/dashboard_assets.h"
#include "api/handlers.h"
#include "api/reply.h"

#define OPENAPI_CONTENT_TYPE "application/yaml" /* RFC 9512; YAML is UTF-8 here */
#define DASHBOARD_CSP                                                                                       \
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "                   \
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "                      \
        "frame-ancestors 'none'"

static enum MHD_Result serve(struct request *rq, const unsigned char *data, size_t len, const char *type)
{
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        MHD_add_response_header(resp, "Content-Security-Policy", DASHBOARD_CSP);
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
        return reply_queue(rq, 200, resp);
}

enum MHD_Result dashboard_page(struct request *rq)
{
        return serve(rq, asset_index_html, sizeof(asset_index_html), "text/html; charset=utf-8");
}

enum MHD_Result dashboard_script(struct request *rq)
{
        return serve(rq, asset_app_js, sizeof(asset_app_js), "text/javascript; charset=utf-8");
}

enum MHD_Result dashboard_style(struct request *rq)
{
        return serve(rq, asset_app_css, sizeof(asset_app_css), "text/css; charset=utf-8");
}

enum MHD_Result dashboard_icon(struct request *rq)
{
        return serve(rq, asset_favicon_svg, sizeof(asset_favicon_svg), "image/svg+xml");
}

enum MHD_Result dashboard_openapi(struct request *rq)
{
        return serve(rq, asset_openapi_yaml, sizeof(asset_openapi_yaml), OPENAPI_CONTENT_TYPE);
}
