"""The API's /docs page: one self-contained HTML document that renders /openapi.json in the browser.

No external asset (no CDN, no font, no image): it works on a machine without internet. Its script and style
are inline, allowed by their sha256 in a Content-Security-Policy that forbids everything else; the script
builds the page with DOM calls and text nodes only, so nothing from the schema is ever parsed as HTML.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem 1.5rem; color: #1d1d1f; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
code, pre, .path { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f5f5f7; padding: .6rem .8rem; overflow-x: auto; border-radius: 4px; }
details { border: 1px solid #ddd; border-radius: 4px; margin: .5rem 0; }
summary { cursor: pointer; padding: .45rem .6rem; }
details > div { padding: 0 .8rem .6rem; }
.method { display: inline-block; min-width: 4.2rem; font-weight: 700; text-transform: uppercase; }
.get { color: #0b6e2e; } .post { color: #0b4f8a; } .delete { color: #a11; } .put, .patch { color: #8a5a00; }
table { border-collapse: collapse; margin: .3rem 0 .6rem; } td, th { text-align: left; padding: .2rem .6rem .2rem 0;
vertical-align: top; } th { font-weight: 600; border-bottom: 1px solid #ddd; }
.muted { color: #666; } .error { color: #a11; }
"""

SCRIPT = """
"use strict";
function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of [].concat(children || [])) {
    if (child === null || child === undefined) continue;
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}
function ref(schema, spec) {
  if (schema && schema["$ref"]) {
    const name = schema["$ref"].split("/").pop();
    return [name, (spec.components && spec.components.schemas || {})[name] || {}];
  }
  return [null, schema || {}];
}
function typeOf(schema, spec) {
  const [name, resolved] = ref(schema, spec);
  if (name) return name;
  if (resolved.anyOf) return resolved.anyOf.map(s => typeOf(s, spec)).join(" | ");
  if (resolved.type === "array") return typeOf(resolved.items, spec) + "[]";
  let text = resolved.type || "any";
  if (resolved.enum) text += " (" + resolved.enum.join(", ") + ")";
  if (resolved.pattern) text += " matching " + resolved.pattern;
  if (resolved.minLength !== undefined || resolved.maxLength !== undefined)
    text += ", " + (resolved.minLength || 0) + " to " + (resolved.maxLength === undefined ? "any" : resolved.maxLength) + " characters";
  return text;
}
function fields(schema, spec) {
  const choices = (schema && schema.anyOf || []).filter(s => s.type !== "null");
  if (choices.length === 1) schema = choices[0];
  const [, resolved] = ref(schema, spec);
  const required = new Set(resolved.required || []);
  const rows = Object.entries(resolved.properties || {}).map(([name, prop]) =>
    el("tr", {}, [el("td", {}, el("code", {}, name)), el("td", {}, typeOf(prop, spec)),
                  el("td", {}, required.has(name) ? "required" : ""), el("td", {}, prop.description || "")]));
  if (!rows.length) return el("p", {class: "muted"}, typeOf(schema, spec));
  return el("table", {}, [el("tr", {}, ["field", "type", "", "description"].map(h => el("th", {}, h))), ...rows]);
}
function operation(path, method, op, spec) {
  const body = el("div");
  if (op.description) body.appendChild(el("p", {}, op.description));
  const params = op.parameters || [];
  if (params.length) {
    body.appendChild(el("h4", {}, "Parameters"));
    body.appendChild(el("table", {}, [el("tr", {}, ["name", "in", "type", "", "description"].map(h => el("th", {}, h))),
      ...params.map(p => el("tr", {}, [el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, typeOf(p.schema, spec)), el("td", {}, p.required ? "required" : ""),
        el("td", {}, p.description || (p.schema && p.schema.description) || "")]))]));
  }
  const content = op.requestBody && op.requestBody.content || {};
  for (const [type, media] of Object.entries(content)) {
    body.appendChild(el("h4", {}, "Body (" + type + (op.requestBody.required ? "" : ", optional") + ")"));
    body.appendChild(fields(media.schema, spec));
  }
  body.appendChild(el("h4", {}, "Responses"));
  body.appendChild(el("table", {}, Object.entries(op.responses || {}).map(([code, answer]) => {
    const media = Object.values(answer.content || {})[0];
    const schema = media && media.schema ? typeOf(media.schema, spec) : "";
    return el("tr", {}, [el("td", {}, el("code", {}, code)), el("td", {}, answer.description || ""),
                         el("td", {class: "muted"}, schema)]);
  })));
  const secured = (op.security || spec.security || []).length > 0;
  const summary = el("summary", {}, [el("span", {class: "method " + method}, method),
    el("span", {class: "path"}, path), " ", el("span", {class: "muted"}, (op.summary || "") + (secured ? "  (token)" : ""))]);
  return el("details", {}, [summary, body]);
}
async function main() {
  const root = document.getElementById("api");
  let spec;
  try {
    const answer = await fetch("openapi.json", {credentials: "omit"});
    if (!answer.ok) throw new Error("GET openapi.json answered " + answer.status);
    spec = await answer.json();
  } catch (error) {
    root.appendChild(el("p", {class: "error"}, "Could not read openapi.json: " + error.message));
    return;
  }
  document.title = (spec.info.title || "API") + " " + (spec.info.version || "");
  const head = document.getElementById("head");
  head.appendChild(el("h1", {}, document.title));
  if (spec.info.description) head.appendChild(el("p", {}, spec.info.description));
  root.appendChild(el("h2", {}, "Routes"));
  for (const [path, item] of Object.entries(spec.paths || {}))
    for (const [method, op] of Object.entries(item))
      if (["get", "post", "put", "patch", "delete"].includes(method)) root.appendChild(operation(path, method, op, spec));
  root.appendChild(el("h2", {}, "Schemas"));
  for (const [name, schema] of Object.entries(spec.components && spec.components.schemas || {}))
    root.appendChild(el("details", {}, [el("summary", {}, el("code", {}, name)), el("div", {}, fields(schema, spec))]));
}
main();
"""

INTRO = """<p class="muted">Every route but <code>/healthz</code>, this page and <code>/openapi.json</code> needs
the server's token when it has one: <code>Authorization: Bearer &lt;PROVISION_API_TOKEN&gt;</code>, e.g.</p>
<pre>curl -H "Authorization: Bearer $PROVISION_API_TOKEN" http://127.0.0.1:8000/v1/projects</pre>
<p class="muted">Without a token (<code>serve --no-auth</code>, loopback only) every POST and DELETE is sent with
<code>Content-Type: application/json</code>, body or not. Errors are <code>application/problem+json</code>.</p>"""


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>API docs</title>"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>"
        f"<body><header id=\"head\"></header><section>{INTRO}</section><main id=\"api\"></main>"
        f"<script>{SCRIPT}</script></body></html>\n")

HEADERS: Mapping[str, str] = {
    # nothing loads but this page's own script and style, and it may fetch only from its own origin
    "Content-Security-Policy": (f"default-src 'none'; script-src {_digest(SCRIPT)}; style-src {_digest(STYLE)}; "
                                f"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
