/* dashboard: GET / — one self-contained page over the public API.
 *
 * The page holds no data of its own: it reads /v1/stats, /v1/circuits,
 * /v1/sources and /v1/jobs like any client, follows /v1/events (or polls
 * every 2 s when a token is in use, since EventSource cannot send one),
 * and submits jobs with POST /v1/jobs. Everything it shows comes from the
 * API and is written with textContent, never as HTML, and the CSP lets the
 * page talk to this daemon only. */
#include "autoconfig.h"

#include <microhttpd.h>

#include "api/handlers.h"
#include "api/reply.h"

static const char page[] =
        "<!doctype html>\n"
        "<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        "<title>hauld</title>\n"
        "<style>\n"
        "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\n"
        "h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\n"
        "table{border-collapse:collapse;width:100%;background:#fff}\n"
        "th,td{border-bottom:1px solid #e4e4e4;padding:.3em .5em;text-align:left;vertical-align:top}\n"
        "th{background:#f0f0f0;font-weight:600}\n"
        ".bar{background:#e8e8e8;width:10em;height:.8em;display:inline-block}\n"
        ".bar i{display:block;height:100%;background:#3a7}\n"
        ".open{color:#b00;font-weight:600}.half_open{color:#a60}.closed{color:#370}\n"
        ".failed,.timed_out,.cancelled{color:#b00}.partial{color:#a60}.succeeded{color:#370}\n"
        "textarea{width:100%;height:5em}input,select,textarea,button{font:inherit}\n"
        "#err{color:#b00}.muted{color:#777}\n"
        "</style></head><body>\n"
        "<h1>hauld</h1><div class=muted id=summary>loading…</div><div id=err></div>\n"
        "<p><label>API token (if one is configured): <input id=token type=password size=30></label></p>\n"
        "<h2>New job</h2>\n"
        "<form id=submit><textarea id=urls placeholder='one URL per line'></textarea><br>\n"
        "or query <input id=query size=30> from sources <select id=sources multiple></select>\n"
        "max <input id=max type=number min=1 max=10000 value=50 style='width:6em'>\n"
        "label <input id=label size=20> <button>Submit</button></form>\n"
        "<h2>Jobs</h2><table><thead><tr><th>id</th><th>state</th><th>progress</th><th>items</th>"
        "<th>label</th><th>created</th><th></th></tr></thead><tbody id=jobs></tbody></table>\n"
        "<h2>Sources and circuits</h2><table><thead><tr><th>source</th><th>circuit</th>"
        "<th>attempts</th><th>successes</th><th>failures</th><th>retries</th><th>bytes</th>"
        "<th>last error</th><th></th></tr></thead><tbody id=circuits></tbody></table>\n"
        "<script>\n"
        "'use strict';\n"
        "const $=id=>document.getElementById(id);\n"
        "const tok=$('token');tok.value=sessionStorage.getItem('hauld-token')||'';\n"
        "tok.onchange=()=>{sessionStorage.setItem('hauld-token',tok.value);listen();refresh();};\n"
        "async function api(method,path,body){\n"
        " const h={};if(tok.value)h.Authorization='Bearer '+tok.value;\n"
        " if(body)h['Content-Type']='application/json';\n"
        " const r=await fetch(path,{method,headers:h,body:body?JSON.stringify(body):undefined});\n"
        " const t=await r.text();const d=t?JSON.parse(t):null;\n"
        " if(!r.ok)throw new Error((d&&(d.detail||d.title))||r.status);return d;}\n"
        "function cell(tr,text,cls){const td=document.createElement('td');td.textContent=text;"
        "if(cls)td.className=cls;tr.appendChild(td);return td;}\n"
        "function button(td,label,fn){const b=document.createElement('button');b.textContent=label;"
        "b.onclick=()=>fn().then(refresh,e=>$('err').textContent=e.message);td.appendChild(b);}\n"
        "function size(n){const u=['B','KiB','MiB','GiB','TiB'];let i=0;"
        "while(n>=1024&&i<4){n/=1024;i++;}return (i?n.toFixed(1):n)+' '+u[i];}\n"
        "function jobRow(j){const tr=document.createElement('tr');const p=j.progress;\n"
        " cell(tr,j.id);cell(tr,j.state,j.state);\n"
        " const bar=cell(tr,'');const b=document.createElement('span');b.className='bar';\n"
        " const "
        "i=document.createElement('i');i.style.width=p.percent+'%';b.appendChild(i);bar.appendChild(b);\n"
        " bar.appendChild(document.createTextNode(' '+p.percent+'% '+size(p.bytes)));\n"
        " cell(tr,p.succeeded+' ok, '+p.failed+' failed, '+p.skipped+' skipped of '+p.total);\n"
        " cell(tr,j.label||(j.query?'\\u201c'+j.query+'\\u201d':''));cell(tr,j.created_at);\n"
        " const act=cell(tr,'');\n"
        " if(j.state==='queued'||j.state==='running')button(act,'cancel',()=>api('POST','/v1/jobs/'+j.id+'/"
        "cancel'));\n"
        " else button(act,'retry',()=>api('POST','/v1/jobs/'+j.id+'/retry'));\n"
        " return tr;}\n"
        "async function refresh(){try{\n"
        " const [st,ci,jobs]=await Promise.all([api('GET','/v1/stats'),api('GET','/v1/circuits'),"
        "api('GET','/v1/jobs?limit=50')]);\n"
        " $('err').textContent='';\n"
        " $('summary').textContent='up '+Math.round(st.uptime_s)+' s · '+st.total_successes+' downloads, '+"
        "st.total_failures+' failures, '+st.total_retries+' retries, '+size(st.total_bytes)+' · jobs '+"
        "Object.entries(st.jobs).map(([k,v])=>k+' '+v).join(', ');\n"
        " const tb=$('jobs');tb.replaceChildren(...jobs.jobs.map(jobRow));\n"
        " const cb=$('circuits');cb.replaceChildren(...ci.circuits.map(c=>{const "
        "tr=document.createElement('tr');\n"
        "  const s=st.sources[c.source]||{};cell(tr,c.source);cell(tr,c.state,c.state);\n"
        "  cell(tr,s.attempts||0);cell(tr,s.successes||0);cell(tr,s.failures||0);cell(tr,s.retries||0);\n"
        "  cell(tr,size(s.bytes||0));cell(tr,c.last_error||'');const a=cell(tr,'');\n"
        "  "
        "if(c.state!=='closed')button(a,'reset',()=>api('POST','/v1/circuits/"
        "'+encodeURIComponent(c.source)+'/reset'));\n"
        "  return tr;}));\n"
        "}catch(e){$('err').textContent=e.message;}}\n"
        "async function loadSources(){try{const d=await api('GET','/v1/sources');\n"
        " $('sources').replaceChildren(...d.sources.map(s=>{const o=document.createElement('option');\n"
        " o.value=s.name;o.textContent=s.name+(s.available?'':' "
        "(unavailable)');o.disabled=!s.available;return o;}));\n"
        "}catch(e){}}\n"
        "$('submit').onsubmit=ev=>{ev.preventDefault();const body={max:+$('max').value};\n"
        " const "
        "urls=$('urls').value.split('\\n').map(s=>s.trim()).filter(Boolean);if(urls.length)body.urls=urls;\n"
        " const srcs=[...$('sources').selectedOptions].map(o=>o.value);\n"
        " if($('query').value){body.query=$('query').value;body.sources=srcs;}\n"
        " if($('label').value)body.label=$('label').value;\n"
        " api('POST','/v1/"
        "jobs',body).then(()=>{$('urls').value='';refresh();},e=>$('err').textContent=e.message);};\n"
        "let es=null,timer=null,pending=false;\n"
        "function soon(){if(!pending){pending=true;setTimeout(()=>{pending=false;refresh();},250);}}\n"
        "function listen(){if(es){es.close();es=null;}if(timer){clearInterval(timer);timer=null;}\n"
        " if(tok.value||!window.EventSource){timer=setInterval(refresh,2000);return;}\n"
        " es=new "
        "EventSource('/v1/"
        "events');['job','item','progress','circuit'].forEach(t=>es.addEventListener(t,soon));\n"
        " es.onerror=()=>{if(!timer)timer=setInterval(refresh,2000);};}\n"
        "loadSources();refresh();listen();\n"
        "</script></body></html>\n";

enum MHD_Result dashboard_page(struct request *rq)
{
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(sizeof(page) - 1, (void *)page, MHD_RESPMEM_PERSISTENT);
        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        MHD_add_response_header(resp, "Content-Security-Policy",
                                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; form-action 'none'; frame-ancestors 'none'");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        return reply_queue(rq, 200, resp);
}
