/* The resource handlers httpd.c routes to, one file per resource, and the
 * event streams' lifecycle. Each handler answers through reply.h and
 * returns what it returns. */
#pragma once
#include <microhttpd.h>

struct request;
struct httpd;

/* /v1/jobs (jobs.c) */
enum MHD_Result jobs_create(struct request *rq);
enum MHD_Result jobs_list(struct request *rq);
enum MHD_Result jobs_get(struct request *rq);
enum MHD_Result jobs_items(struct request *rq);
enum MHD_Result jobs_sources(struct request *rq);
enum MHD_Result jobs_cancel(struct request *rq);
enum MHD_Result jobs_retry(struct request *rq);
enum MHD_Result jobs_pause(struct request *rq);
enum MHD_Result jobs_resume(struct request *rq);
enum MHD_Result jobs_delete(struct request *rq);

/* A job's downloaded files (files.c): one item's file, every file as a tar */
enum MHD_Result files_item(struct request *rq);
enum MHD_Result files_archive(struct request *rq);

/* The daemon's own resources (system.c) */
enum MHD_Result system_health(struct request *rq);
enum MHD_Result system_config(struct request *rq);
enum MHD_Result system_circuits(struct request *rq);
enum MHD_Result system_circuit_reset(struct request *rq);
enum MHD_Result system_stats(struct request *rq);
enum MHD_Result system_stats_reset(struct request *rq);
enum MHD_Result system_metrics(struct request *rq);
enum MHD_Result system_sources(struct request *rq);

/* GET /, /app.js, /app.css, /favicon.svg, /v1/openapi.yaml: the files
 * built into the daemon (dashboard.c) */
enum MHD_Result dashboard_page(struct request *rq);
enum MHD_Result dashboard_script(struct request *rq);
enum MHD_Result dashboard_style(struct request *rq);
enum MHD_Result dashboard_icon(struct request *rq);
enum MHD_Result dashboard_openapi(struct request *rq);

/* The event streams (sse.c). sse_start after the struct httpd is filled
 * in and before microhttpd starts; sse_stop before MHD_stop_daemon (it
 * ends every stream); sse_free after it. */
enum MHD_Result sse_job(struct request *rq);
enum MHD_Result sse_all(struct request *rq);
int sse_start(struct httpd *h);
void sse_stop(struct httpd *h);
void sse_free(struct httpd *h);
