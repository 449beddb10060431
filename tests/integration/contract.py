"""The API's contract, docs/openapi.yaml, as the integration tests hold the
daemon to it.

    c = Contract.load()                 # $HAULD_SRCDIR/docs/openapi.yaml
    c.check_answer("GET", "/v1/jobs?limit=5", status, headers, body)
    c.check_request("POST", "/v1/jobs", body)      # a body the daemon took
    c.check_event("/v1/events", "item", data)

Each raises ContractError (an AssertionError) naming the route, the status
and the place in the document whose schema the answer broke. An answer is
looked up the way a client would: the path template that matches (else the
front door's 404), the operation of the method (HEAD: the path's `head`,
else its `get`; OPTIONS: the preflight; another method: 405), then the
response of the status, else `default`. Its required headers must be there
and fit their schemas, its Content-Type must be one of its media types, a
JSON body must fit the media type's schema, and an answer documented
without a body must have none.

Schemas are checked with jsonschema's Draft 2020-12 validator. References
(`#/components/...`) are resolved here, by JSON pointer, and written into
the schema checked (a reference with other keywords beside it becomes an
allOf of both): jsonschema then follows no reference while it validates,
which makes it about three times as fast, and behaves the same in the
Debian jsonschema 4.10 and later ones. The OpenAPI objects around the
schemas (responses, headers, parameters) are resolved the same way.

Speed: a job of 10000 hosts has 10000 `per_source` entries, and a test may
poll it ten times a second. The elements of an array of MEMO_MIN or more
are checked once per distinct element: an element seen valid before
against the same schema is not checked again. Two elements are the same
when their JSON texts are, once the values of their free strings (a
property whose schema asks nothing but a string type, such as a source's
name) are blanked: whatever such a string holds, the element's validity
is the same, so 10000 entries that differ only by name are checked once."""

import json
import os
import re

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")
MAX_ERRORS = 5  # schema errors quoted in one message
MEMO_MIN = 64  # arrays at least this long have their valid elements remembered
MEMO_MAX = 200000  # elements remembered per schema; past it the memory starts over
ANNOTATIONS = ("description", "summary", "examples", "example", "title")


class ContractError(AssertionError):
    pass


def default_path():
    """docs/openapi.yaml of $HAULD_SRCDIR, else of this tree."""
    top = os.environ.get("HAULD_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
    path = os.path.join(top, "docs", "openapi.yaml")
    if not os.path.exists(path):
        path = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "openapi.yaml")
    return path


def pointer_escape(token):
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer_join(base, *tokens):
    return base + "".join("/" + pointer_escape(t) for t in tokens)


def bare_type(ctype):
    return (ctype or "").split(";", 1)[0].strip().lower()


def _normal_type(ctype):
    return ";".join(part.strip() for part in (ctype or "").lower().split(";"))


def _json_path(error):
    out = "$"
    for p in error.absolute_path:
        out += "[%d]" % p if isinstance(p, int) else "." + str(p)
    return out


class Contract:
    def __init__(self, text, path="docs/openapi.yaml"):
        self.text = text
        self.path = path
        self.doc = yaml.safe_load(text)
        self._validators = {}
        self._routes = []
        for template, item in self.doc["paths"].items():
            rx = "^" + re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(template)) + "$"
            self._routes.append((re.compile(rx), template, item))

    @classmethod
    def load(cls, path=None):
        path = path or default_path()
        with open(path, "rb") as f:
            return cls(f.read(), path)

    # -- the document --

    def resolve(self, obj, where):
        """Follow $ref (local JSON pointers) to the object: (obj, pointer)."""
        seen = set()
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            if not ref.startswith("#/") or ref in seen:
                raise ContractError("%s: cannot resolve $ref %r" % (where, ref))
            seen.add(ref)
            obj = self.doc
            for token in ref[2:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                if not isinstance(obj, dict) or token not in obj:
                    raise ContractError("%s: $ref %r does not resolve" % (where, ref))
                obj = obj[token]
            where = ref
        return obj, where

    def route(self, path):
        """(template, path item) of a request path (without its query), or (None, None)."""
        for rx, template, item in self._routes:
            if rx.match(path):
                return template, item
        return None, None

    def operations(self):
        """Every (METHOD, template) the document describes."""
        out = set()
        for template, item in self.doc["paths"].items():
            for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                if method in item:
                    out.add((method.upper(), template))
        return out

    def _response(self, method, path, status):
        """The response object for an answer: (response, pointer, route name)."""
        template, item = self.route(path)
        comp = "#/components/responses/"
        if template is None:
            name = "%s %s (no such route)" % (method, path)
            key = "NotFound" if status == 404 else "Problem"
            return self.resolve({"$ref": comp + key}, name) + (name,)
        name = "%s %s" % (method, template)
        if method == "OPTIONS":
            key = "Preflight" if status == 204 else "Problem"
            return self.resolve({"$ref": comp + key}, name) + (name,)
        op = item.get(method.lower())
        where = pointer_join("#/paths", template, method.lower())
        if op is None and method == "HEAD" and "get" in item:
            op, where = item["get"], pointer_join("#/paths", template, "get")
        if op is None:
            key = "MethodNotAllowed" if status == 405 else "Problem"
            if status < 400:
                raise ContractError("%s answered %d, but the document has no %s operation for %s"
                                    % (name, status, method, template))
            return self.resolve({"$ref": comp + key}, name) + (name,)
        responses = op.get("responses", {})
        for key in (str(status), "%dXX" % (status // 100), "default"):
            if key in responses:
                resp, at = self.resolve(responses[key], pointer_join(where, "responses", key))
                return resp, at, name
        raise ContractError("%s answered %d, which %s does not document" % (name, status, where))

    # -- schemas --

    def inline(self, schema, where, refs=()):
        """schema with its references replaced by what they name (a
        reference that loops back into itself is left as it is)."""
        if isinstance(schema, list):
            return [self.inline(s, where, refs) for s in schema]
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema and schema["$ref"] not in refs:
            target, _ = self.resolve({"$ref": schema["$ref"]}, where)
            target = self.inline(target, where, refs + (schema["$ref"],))
            rest = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS}
            if not rest:
                return target
            return dict(self.inline(rest, where, refs), allOf=[target] + self.inline(rest.get("allOf", []), where,
                                                                                    refs))
        out = {}
        for k, v in schema.items():
            if k in ("properties", "patternProperties", "dependentSchemas", "$defs"):
                out[k] = {name: self.inline(sub, where, refs) for name, sub in v.items()}
            elif k in ANNOTATIONS or k in ("enum", "const", "required", "dependentRequired"):
                out[k] = v
            else:
                out[k] = self.inline(v, where, refs)
        return out

    def validator(self, schema, where):
        """A Draft 2020-12 validator of schema (references inlined)."""
        if where not in self._validators:
            root = self.inline(schema, where)
            root = dict(root) if isinstance(root, dict) else {"allOf": [root]}
            root["components"] = self.doc.get("components", {})  # a reference left (a loop) still resolves
            self._validators[where] = _Validator(root)
        return self._validators[where]

    def validate(self, schema, where, instance, what):
        """Raise ContractError when instance does not fit schema (at pointer where)."""
        errors = sorted(self.validator(schema, where).iter_errors(instance),
                        key=lambda e: (len(list(e.absolute_path)), list(e.absolute_schema_path)))
        if not errors:
            return
        lines = ["%s does not match docs/openapi.yaml's schema at %s:" % (what, where)]
        for e in errors[:MAX_ERRORS]:
            lines.append("  at %s: %s (schema path: %s)"
                         % (_json_path(e), e.message, "/".join(str(p) for p in e.absolute_schema_path)))
        if len(errors) > MAX_ERRORS:
            lines.append("  ... and %d more" % (len(errors) - MAX_ERRORS))
        raise ContractError("\n".join(lines))

    # -- answers --

    def _media(self, resp, where, ctype, what):
        """The media type entry of resp that an answer's Content-Type fits: (key, entry)."""
        content = resp.get("content") or {}
        want, bare = _normal_type(ctype), bare_type(ctype)
        for key in content:
            if _normal_type(key) == want:
                return key, content[key]
        for key in content:
            if bare_type(key) == bare:
                return key, content[key]
        for key in content:
            kt = bare_type(key)
            if kt == "*/*" or (kt.endswith("/*") and bare.startswith(kt[:-1])):
                return key, content[key]
        raise ContractError("%s has Content-Type %r; %s documents %s"
                            % (what, ctype, where, ", ".join(sorted(content)) or "no body"))

    def _check_headers(self, resp, where, headers, what):
        for hname, h in (resp.get("headers") or {}).items():
            h, hwhere = self.resolve(h, pointer_join(where, "headers", hname))
            value = headers.get(hname.lower())
            if value is None:
                if h.get("required"):
                    raise ContractError("%s lacks the header %s that %s requires" % (what, hname, hwhere))
                continue
            if "schema" in h:
                self.validate(h["schema"], pointer_join(hwhere, "schema"), value,
                              "%s: header %s: %r" % (what, hname, value))

    def check_answer(self, method, path, status, headers, body):
        """An answer (status, headers as a mapping, body bytes) to METHOD path."""
        path = path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in headers.items()}
        resp, where, name = self._response(method, path, status)
        ctype = headers.get("content-type")
        what = "%s answered %d%s" % (name, status, " (%s)" % ctype if ctype else "")
        self._check_headers(resp, where, headers, what)
        if method == "HEAD" or status == 304:
            if body:
                raise ContractError("%s with a body to %s" % (what, method))
            return
        if not resp.get("content"):
            if body:
                raise ContractError("%s with a body, but %s documents none: %r" % (what, where, body[:200]))
            return
        if ctype is None:
            raise ContractError("%s without a Content-Type; %s documents %s"
                                % (what, where, ", ".join(resp["content"])))
        key, media = self._media(resp, where, ctype, what)
        if not JSON_TYPE.match(bare_type(key)) or "schema" not in media:
            return
        try:
            data = json.loads(body)
        except ValueError as e:
            raise ContractError("%s: the body is not JSON (%s): %r" % (what, e, body[:200]))
        self.validate(media["schema"], pointer_join(where, "content", key, "schema"), data, what)

    def check_request(self, method, path, body):
        """A JSON request body the daemon accepted must fit the operation's requestBody."""
        template, item = self.route(path.split("?", 1)[0])
        op = item.get(method.lower()) if item else None
        if not op or "requestBody" not in op:
            return
        where = pointer_join("#/paths", template, method.lower(), "requestBody")
        rb, where = self.resolve(op["requestBody"], where)
        media = (rb.get("content") or {}).get("application/json")
        if media and "schema" in media:
            self.validate(media["schema"], pointer_join(where, "content", "application/json", "schema"), body,
                          "the %s %s request the daemon accepted" % (method, template))

    def event_schemas(self, path):
        """{event name: (schema, pointer)} of an event stream's 200 answer."""
        path = path.split("?", 1)[0]
        resp, where, name = self._response("GET", path, 200)
        for key, media in (resp.get("content") or {}).items():
            if bare_type(key) == "text/event-stream":
                base = pointer_join(where, "content", key, "x-events")
                return {ev: (s, pointer_join(base, ev)) for ev, s in (media.get("x-events") or {}).items()}
        raise ContractError("%s is not an event stream in docs/openapi.yaml" % name)

    def check_event(self, path, event, data, event_id=None):
        """One event of a stream: its id a decimal, its name documented, its
        data (decoded JSON) fitting."""
        schemas = self.event_schemas(path)
        template = self.route(path.split("?", 1)[0])[0]
        if event_id is not None:
            where = "#/components/schemas/EventId"
            self.validate(self.resolve({"$ref": where}, where)[0], where, event_id,
                          "GET %s: the id of a %r event" % (template, event))
        if event not in schemas:
            raise ContractError("GET %s sent an event %r; docs/openapi.yaml documents %s"
                                % (template, event, ", ".join(sorted(schemas))))
        schema, where = schemas[event]
        self.validate(schema, where, data, "GET %s: the data of a %r event" % (template, event))


_items = jsonschema.Draft202012Validator.VALIDATORS["items"]
_memo = {}  # id(items schema) -> (the schema, its free strings, JSON texts of elements found valid)
_PLAIN = {"type", "properties", "required", "additionalProperties", "unevaluatedProperties", "allOf"}


def _free_strings(schema):
    """The properties of an object schema whose values may be any string
    (their schema: a type of string, or string and null, nothing else),
    when no other keyword of the schema looks at them; else ()."""
    if not isinstance(schema, dict) or set(schema) - _PLAIN - set(ANNOTATIONS):
        return ()
    parts = [schema] + list(schema.get("allOf", []))
    free, bound = set(), set()
    for part in parts:
        if not isinstance(part, dict) or set(part) - _PLAIN - set(ANNOTATIONS) or \
                (part is not schema and "allOf" in part):
            return ()
        for name, sub in (part.get("properties") or {}).items():
            plain = isinstance(sub, dict) and not set(sub) - {"type"} - set(ANNOTATIONS) and \
                sub.get("type") in ("string", ["string", "null"], ["null", "string"])
            (free if plain else bound).add(name)
    return tuple(sorted(free - bound))


def _memo_items(validator, items, instance, schema):
    """The items keyword, remembering the valid elements of long arrays."""
    if not validator.is_type(instance, "array") or len(instance) < MEMO_MIN or not isinstance(items, dict) \
            or schema.get("prefixItems"):
        yield from _items(validator, items, instance, schema)
        return
    held = _memo.get(id(items))
    if held is None or held[0] is not items or len(held[2]) > MEMO_MAX:
        held = _memo[id(items)] = (items, _free_strings(items), set())
    _, free, valid = held
    for index, element in enumerate(instance):
        key = element
        if free and isinstance(element, dict):
            key = dict(element)
            for name in free:
                if isinstance(key.get(name), str):
                    key[name] = ""
        text = json.dumps(key, sort_keys=True)
        if text in valid:
            continue
        errors = list(validator.descend(instance=element, schema=items, path=index))
        if errors:
            yield from errors
        else:
            valid.add(text)


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"items": _memo_items})

_shared = None


def shared():
    """The contract of this source tree, loaded once per process."""
    global _shared
    if _shared is None:
        _shared = Contract.load()
    return _shared
