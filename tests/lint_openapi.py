#!/usr/bin/env python3
"""Structural check of an OpenAPI 3.1 document (docs/openapi.yaml), run by
`make lint`:

    python3 tests/lint_openapi.py docs/openapi.yaml [--schema OAS-SCHEMA.json]

It checks what the OpenAPI 3.1 specification requires of a document and
what a client generator relies on, without the specification's own JSON
schema (which is not shipped here):

- the top level (`openapi: 3.1.x`, `info` with `title` and `version`,
  `paths`) and the fields each object may have (Path Item, Operation,
  Parameter, Request Body, Response, Header, Media Type, Components, ...),
  so a misspelt field is an error; `x-` extensions are allowed anywhere;
- every `$ref` is a local JSON pointer that resolves;
- every path starts with `/`; each `{name}` in a path has a required path
  parameter, and each path parameter appears in the path; no parameter is
  declared twice (name and location) for one operation;
- every operation has responses, keyed by a status (`200`, `4XX`) or
  `default`, each with a description; operationIds are unique; tags are
  declared; security requirements name declared schemes;
- every schema (components, parameters, headers, media types, the event
  streams' `x-events`) is a valid JSON Schema 2020-12 schema
  (Draft202012Validator.check_schema), and every example fits its schema.

With --schema, the document is also validated against that JSON schema
(the OpenAPI Initiative publishes one for 3.1, schemas/v3.1/schema.json).
Exit status 0 when clean, 1 with one line per problem."""

import argparse
import json
import re
import sys

import jsonschema
import yaml

EXT = re.compile(r"^x-")
STATUS = re.compile(r"^([1-5][0-9][0-9]|[1-5]XX|default)$")
COMPONENT_KEY = re.compile(r"^[a-zA-Z0-9.\-_]+$")
MEDIA = re.compile(r"^([a-z0-9!#$&^_.+-]+|\*)/([a-z0-9!#$&^_.+-]+|\*)(\s*;\s*[a-z0-9_-]+=[^;]+)*$", re.I)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

FIELDS = {
    "document": {"openapi", "info", "jsonSchemaDialect", "servers", "paths", "webhooks", "components",
                 "security", "tags", "externalDocs"},
    "info": {"title", "summary", "description", "termsOfService", "contact", "license", "version"},
    "path item": {"$ref", "summary", "description", "servers", "parameters"} | set(METHODS),
    "operation": {"tags", "summary", "description", "externalDocs", "operationId", "parameters",
                  "requestBody", "responses", "callbacks", "deprecated", "security", "servers"},
    "parameter": {"name", "in", "description", "required", "deprecated", "allowEmptyValue", "style",
                  "explode", "allowReserved", "schema", "example", "examples", "content"},
    "request body": {"description", "content", "required"},
    "media type": {"schema", "example", "examples", "encoding"},
    "response": {"description", "headers", "content", "links"},
    "header": {"description", "required", "deprecated", "style", "explode", "schema", "example",
               "examples", "content"},
    "example": {"summary", "description", "value", "externalValue"},
    "components": {"schemas", "responses", "parameters", "examples", "requestBodies", "headers",
                   "securitySchemes", "links", "callbacks", "pathItems"},
    "security scheme": {"type", "description", "name", "in", "scheme", "bearerFormat", "flows",
                        "openIdConnectUrl"},
    "tag": {"name", "description", "externalDocs"},
    "server": {"url", "description", "variables"},
    "reference": {"$ref", "summary", "description"},
}
JSON_MEDIA = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")


class Lint:
    def __init__(self, doc):
        self.doc = doc
        self.problems = []
        self.operation_ids = {}
        self.tags = {t.get("name") for t in doc.get("tags") or [] if isinstance(t, dict)}

    def error(self, where, fmt, *args):
        self.problems.append("%s: %s" % (where, fmt % args))

    # -- references --

    def lookup(self, ref, where):
        if not isinstance(ref, str) or not ref.startswith("#/"):
            self.error(where, "$ref %r is not a local JSON pointer", ref)
            return None
        obj = self.doc
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(obj, dict) and token in obj:
                obj = obj[token]
            elif isinstance(obj, list) and token.isdigit() and int(token) < len(obj):
                obj = obj[int(token)]
            else:
                self.error(where, "$ref %r does not resolve", ref)
                return None
        return obj

    def all_refs(self, obj, where):
        """Every $ref anywhere in the document resolves."""
        if isinstance(obj, dict):
            if "$ref" in obj:
                self.lookup(obj["$ref"], where)
            for k, v in obj.items():
                self.all_refs(v, "%s/%s" % (where, k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                self.all_refs(v, "%s/%d" % (where, i))

    def deref(self, obj, where, kind):
        """obj, or what its $ref names; checks a Reference Object's fields."""
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj:
            self.fields(obj, where, "reference")
            obj = self.lookup(obj["$ref"], where)
            seen += 1
            if seen > 10:
                self.error(where, "$ref loop")
                return None
        if obj is not None and not isinstance(obj, dict):
            self.error(where, "a %s must be an object", kind)
            return None
        return obj

    # -- objects --

    def fields(self, obj, where, kind, required=()):
        if not isinstance(obj, dict):
            self.error(where, "a %s must be an object", kind)
            return False
        for k in obj:
            if k not in FIELDS[kind] and not EXT.match(str(k)):
                self.error(where, "%r is not a field of a %s", k, kind)
        for k in required:
            if k not in obj:
                self.error(where, "a %s needs %r", kind, k)
        return True

    def schema(self, s, where):
        if not isinstance(s, (dict, bool)):
            self.error(where, "a schema must be an object or a boolean")
            return
        try:
            jsonschema.Draft202012Validator.check_schema(s)
        except jsonschema.exceptions.SchemaError as e:
            self.error(where, "not a valid JSON Schema 2020-12 schema: %s (at %s)", e.message,
                       "/".join(str(p) for p in e.absolute_path))

    def fits(self, schema, value, where):
        """An example fits its schema (references resolved in the document)."""
        if schema is None:
            return
        root = dict(schema) if isinstance(schema, dict) else {"allOf": [schema]}
        root["components"] = self.doc.get("components", {})
        try:
            errors = list(jsonschema.Draft202012Validator(root).iter_errors(value))
        except Exception as e:  # a reference that does not resolve (reported on its own too)
            self.error(where, "the example cannot be checked: %s", str(e).splitlines()[0][:200])
            return
        for e in errors[:3]:
            self.error(where, "the example does not fit its schema: at %s: %s",
                       "/".join(str(p) for p in e.absolute_path) or "(top)", e.message)

    def examples(self, obj, schema, where, json_media=True):
        if "example" in obj and "examples" in obj:
            self.error(where, "example and examples are mutually exclusive")
        if "example" in obj and json_media:
            self.fits(schema, obj["example"], where + "/example")
        for name, ex in (obj.get("examples") or {}).items():
            ex = self.deref(ex, "%s/examples/%s" % (where, name), "example")
            if ex is None:
                continue
            self.fields(ex, "%s/examples/%s" % (where, name), "example")
            if "value" in ex and json_media:
                self.fits(schema, ex["value"], "%s/examples/%s" % (where, name))

    def content(self, content, where):
        if not isinstance(content, dict) or not content:
            self.error(where, "content must map media types to Media Type Objects")
            return
        for mt, media in content.items():
            w = "%s/content/%s" % (where, mt)
            if not MEDIA.match(mt):
                self.error(w, "%r is not a media type or range", mt)
            if not self.fields(media, w, "media type"):
                continue
            schema = media.get("schema")
            if schema is not None:
                self.schema(schema, w + "/schema")
            for ev, s in (media.get("x-events") or {}).items():
                self.schema(s, "%s/x-events/%s" % (w, ev))
            self.examples(media, schema, w, bool(JSON_MEDIA.match(mt.split(";")[0].strip())))

    def header(self, h, where):
        h = self.deref(h, where, "header")
        if h is None or not self.fields(h, where, "header"):
            return
        if ("schema" in h) == ("content" in h):
            self.error(where, "a header needs schema or content (one of them)")
        if "schema" in h:
            self.schema(h["schema"], where + "/schema")
            self.examples(h, h["schema"], where)

    def parameter(self, p, where):
        p = self.deref(p, where, "parameter")
        if p is None or not self.fields(p, where, "parameter", ("name", "in")):
            return None
        if p.get("in") not in ("query", "header", "path", "cookie"):
            self.error(where, "in must be query, header, path or cookie, not %r", p.get("in"))
        if p.get("in") == "path" and p.get("required") is not True:
            self.error(where, "a path parameter must be required: true")
        if ("schema" in p) == ("content" in p):
            self.error(where, "a parameter needs schema or content (one of them)")
        if "schema" in p:
            self.schema(p["schema"], where + "/schema")
            self.examples(p, p["schema"], where)
        return p

    def response(self, r, where):
        r = self.deref(r, where, "response")
        if r is None or not self.fields(r, where, "response", ("description",)):
            return
        for name, h in (r.get("headers") or {}).items():
            if name.lower() == "content-type":
                self.error(where, "a Content-Type header is ignored; use content")
            self.header(h, "%s/headers/%s" % (where, name))
        if "content" in r:
            self.content(r["content"], where)

    def security(self, reqs, where):
        schemes = (self.doc.get("components") or {}).get("securitySchemes") or {}
        if not isinstance(reqs, list):
            self.error(where, "security must be a list")
            return
        for req in reqs:
            for name in req or {}:
                if name not in schemes:
                    self.error(where, "security scheme %r is not declared", name)

    def operation(self, op, where, template, shared_params):
        if not self.fields(op, where, "operation", ("responses",)):
            return
        oid = op.get("operationId")
        if not oid:
            self.error(where, "no operationId")
        elif oid in self.operation_ids:
            self.error(where, "operationId %r is also %s's", oid, self.operation_ids[oid])
        else:
            self.operation_ids[oid] = where
        for t in op.get("tags") or []:
            if t not in self.tags:
                self.error(where, "tag %r is not declared in tags", t)
        params = dict(shared_params)
        seen = set()
        for i, p in enumerate(op.get("parameters") or []):
            p = self.parameter(p, "%s/parameters/%d" % (where, i))
            if p is None:
                continue
            key = (p.get("name"), p.get("in"))
            if key in seen:
                self.error(where, "parameter %s in %s is declared twice", *key)
            seen.add(key)
            params[key] = p
        names = set(re.findall(r"\{([^}/]+)\}", template))
        declared = {n for (n, loc) in params if loc == "path"}
        for n in sorted(names - declared):
            self.error(where, "the path's {%s} has no path parameter", n)
        for n in sorted(declared - names):
            self.error(where, "path parameter %r is not in the path", n)
        if "requestBody" in op:
            rb = self.deref(op["requestBody"], where + "/requestBody", "request body")
            if rb is not None and self.fields(rb, where + "/requestBody", "request body", ("content",)):
                self.content(rb["content"], where + "/requestBody")
        responses = op.get("responses")
        if not isinstance(responses, dict) or not responses:
            self.error(where, "an operation needs at least one response")
            return
        for code, r in responses.items():
            if not STATUS.match(str(code)):
                self.error(where, "response key %r is not a status code, a range or default", code)
            self.response(r, "%s/responses/%s" % (where, code))
        if "security" in op:
            self.security(op["security"], where + "/security")

    def path_item(self, template, item, where):
        if not template.startswith("/"):
            self.error(where, "a path must start with /")
        if not self.fields(item, where, "path item"):
            return
        shared = {}
        for i, p in enumerate(item.get("parameters") or []):
            p = self.parameter(p, "%s/parameters/%d" % (where, i))
            if p is not None:
                shared[(p.get("name"), p.get("in"))] = p
        ops = [m for m in METHODS if m in item]
        if not ops:
            self.error(where, "a path item needs at least one operation")
        for m in ops:
            self.operation(item[m], "%s/%s" % (where, m), template, shared)

    def components(self, comp):
        if not self.fields(comp, "#/components", "components"):
            return
        for kind, entries in comp.items():
            if EXT.match(kind):
                continue
            for name in entries or {}:
                if not COMPONENT_KEY.match(name):
                    self.error("#/components/%s" % kind, "%r is not a valid component name", name)
        for name, s in (comp.get("schemas") or {}).items():
            self.schema(s, "#/components/schemas/" + name)
            for i, ex in enumerate(s.get("examples") or [] if isinstance(s, dict) else []):
                self.fits(s, ex, "#/components/schemas/%s/examples/%d" % (name, i))
        for name, r in (comp.get("responses") or {}).items():
            self.response(r, "#/components/responses/" + name)
        for name, p in (comp.get("parameters") or {}).items():
            self.parameter(p, "#/components/parameters/" + name)
        for name, h in (comp.get("headers") or {}).items():
            self.header(h, "#/components/headers/" + name)
        for name, ex in (comp.get("examples") or {}).items():
            self.fields(ex, "#/components/examples/" + name, "example")
        for name, s in (comp.get("securitySchemes") or {}).items():
            w = "#/components/securitySchemes/" + name
            if self.fields(s, w, "security scheme", ("type",)) and s["type"] == "http" and "scheme" not in s:
                self.error(w, "an http security scheme needs scheme")

    def run(self):
        d = self.doc
        if not self.fields(d, "#", "document", ("openapi", "info")):
            return self.problems
        if not re.match(r"^3\.1\.\d+$", str(d.get("openapi"))):
            self.error("#/openapi", "%r is not 3.1.x", d.get("openapi"))
        if self.fields(d["info"], "#/info", "info", ("title", "version")):
            for k in ("title", "version"):
                if not isinstance(d["info"].get(k), str):
                    self.error("#/info/" + k, "must be a string")
        for i, s in enumerate(d.get("servers") or []):
            self.fields(s, "#/servers/%d" % i, "server", ("url",))
        for i, t in enumerate(d.get("tags") or []):
            self.fields(t, "#/tags/%d" % i, "tag", ("name",))
        if "paths" not in d and "webhooks" not in d and "components" not in d:
            self.error("#", "needs paths, webhooks or components")
        self.all_refs(d, "#")
        for template, item in (d.get("paths") or {}).items():
            self.path_item(template, item, "#/paths/" + template.replace("~", "~0").replace("/", "~1"))
        if "components" in d:
            self.components(d["components"])
        if "security" in d:
            self.security(d["security"], "#/security")
        return self.problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("document")
    ap.add_argument("--schema", help="also validate against this JSON schema (the OpenAPI 3.1 schema)")
    args = ap.parse_args()
    with open(args.document, "rb") as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as e:
            print("%s: not YAML: %s" % (args.document, e))
            return 1
    problems = Lint(doc).run()
    if args.schema:
        with open(args.schema) as f:
            oas = json.load(f)
        v = jsonschema.Draft202012Validator(oas)
        for e in sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            problems.append("#/%s: %s" % ("/".join(str(p) for p in e.absolute_path), e.message))
    for p in problems:
        print("%s: %s" % (args.document, p))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
