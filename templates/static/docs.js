// The API reference at /docs: fetches /openapi.json and renders it with DOM calls only
// (no innerHTML, no dependencies; the page's CSP allows scripts from this origin only).
"use strict";

(function () {
  var root = document.getElementById("api-docs");
  if (!root) return;
  var METHODS = ["get", "post", "put", "patch", "delete"];
  var doc = null;

  function el(tag, className, children) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    (children || []).forEach(function (child) {
      if (child === null || child === undefined || child === "") return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  // Text with `code` spans (the document's descriptions use Markdown backticks).
  function rich(tag, className, text) {
    return el(tag, className, String(text).split("`").map(function (part, i) {
      return i % 2 ? el("code", "", [part]) : part;
    }));
  }

  function refName(ref) {
    return ref.split("/").pop();
  }

  function resolve(schema) {
    var seen = 0;
    while (schema && schema.$ref && seen++ < 10) {
      schema = doc.components.schemas[refName(schema.$ref)] || {};
    }
    return schema || {};
  }

  function typeOf(schema) {
    if (!schema) return "any";
    if (schema.$ref) return refName(schema.$ref);
    if ("const" in schema) return JSON.stringify(schema.const);
    if (schema.enum) return schema.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    var union = schema.anyOf || schema.oneOf;
    if (union) return union.map(typeOf).join(" | ");
    var type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "object";
    if (type === "array") return typeOf(schema.items) + "[]";
    return schema.format ? type + " (" + schema.format + ")" : type;
  }

  // minLength, maxLength, pattern... of a field, looking into `anyOf: [X, null]` too.
  function constraints(schema) {
    var notes = [];
    [schema].concat(schema.anyOf || []).forEach(function (part) {
      part = resolve(part);
      if ("minLength" in part) notes.push("minLength " + part.minLength);
      if ("maxLength" in part) notes.push("maxLength " + part.maxLength);
      if ("minimum" in part) notes.push("≥ " + part.minimum);
      if ("maximum" in part) notes.push("≤ " + part.maximum);
      if ("maxItems" in part) notes.push("maxItems " + part.maxItems);
      if (part.pattern) notes.push("pattern " + part.pattern);
    });
    if ("default" in schema) notes.push("default " + JSON.stringify(schema.default));
    return notes.join(", ");
  }

  function fieldsTable(schema) {
    schema = resolve(schema);
    var properties = schema.properties || {};
    var names = Object.keys(properties);
    if (!names.length) return el("p", "muted small", ["Type: ", el("code", "", [typeOf(schema)])]);
    var required = schema.required || [];
    var head = el("tr", "", ["Field", "Type", "Required", "Constraints"].map(function (title) {
      return el("th", "", [title]);
    }));
    var rows = names.map(function (name) {
      var field = properties[name];
      var description = field.description || resolve(field).description || "";
      return el("tr", "", [
        el("td", "", [el("code", "", [name]), description ? rich("div", "muted small", description) : null]),
        el("td", "", [el("code", "docs-type", [typeOf(field)])]),
        el("td", "", [required.indexOf(name) >= 0 ? el("span", "badge badge--accent", ["required"]) : "optional"]),
        el("td", "small", [constraints(field)]),
      ]);
    });
    return el("div", "docs-table-wrap", [el("table", "docs-table", [el("thead", "", [head]), el("tbody", "", rows)])]);
  }

  function schemaBlock(schema) {
    var variants = resolve(schema).oneOf;
    if (!variants) return fieldsTable(schema);
    return el("div", "docs-variants", variants.map(function (variant) {
      return el("div", "docs-variant", [el("h5", "", [resolve(variant).title || typeOf(variant)]), fieldsTable(variant)]);
    }));
  }

  function requestBody(body) {
    var content = body.content || {};
    return el("div", "docs-block", Object.keys(content).map(function (media) {
      var title = "Request body " + (body.required ? "" : "(optional) ");
      return el("div", "", [el("h4", "", [title, el("code", "docs-media", [media])]), schemaBlock(content[media].schema)]);
    }));
  }

  function responses(all) {
    var items = Object.keys(all).sort().map(function (status) {
      var response = all[status];
      var content = response.content || {};
      var media = Object.keys(content);
      var kind = status[0] === "2" ? "success" : "error";
      var body = media.length
        ? media.map(function (type) {
            return el("span", "", [el("code", "docs-media", [type]), " ", el("code", "docs-type", [typeOf(content[type].schema)])]);
          })
        : [el("span", "muted small", ["no body"])];
      var headers = Object.keys(response.headers || {}).map(function (name) {
        return el("span", "chip", [name]);
      });
      var details = media.length && status[0] === "2"
        ? el("details", "docs-inline", [el("summary", "", ["fields"]), fieldsTable(content[media[0]].schema)])
        : null;
      return el("li", "docs-response", [
        el("span", "docs-status docs-status--" + kind, [status]),
        el("div", "docs-response-body", [rich("div", "", response.description || ""), el("div", "docs-response-meta", body.concat(headers)), details]),
      ]);
    });
    return el("div", "docs-block", [el("h4", "", ["Responses"]), el("ul", "docs-responses", items)]);
  }

  function security(operation) {
    var schemes = (operation.security || doc.security || []).map(function (requirement) {
      var names = Object.keys(requirement);
      return names.length ? names.join(" + ") : "none";
    });
    if (!schemes.length || (schemes.length === 1 && schemes[0] === "none")) return null;
    return el("p", "small", ["Authentication: ", el("code", "", [schemes.join(" or ")])]);
  }

  function operationView(path, method, operation) {
    var locked = (operation.security || []).some(function (r) { return "bearerAuth" in r; });
    var summary = el("summary", "docs-op-summary", [
      el("span", "docs-method docs-method--" + method, [method.toUpperCase()]),
      el("code", "docs-path", [path]),
      el("span", "docs-op-title", [operation.summary || ""]),
      locked ? el("span", "badge badge--warning", ["bearer"]) : null,
    ]);
    var parameters = (operation.parameters || []).map(function (p) {
      return el("li", "", [el("code", "", [p.name]), " (" + p.in + ") ", el("code", "docs-type", [typeOf(p.schema)])]);
    });
    var view = el("details", "docs-op", [
      summary,
      el("div", "docs-op-body", [
        operation.description ? rich("p", "", operation.description) : null,
        security(operation),
        parameters.length ? el("div", "docs-block", [el("h4", "", ["Path parameters"]), el("ul", "", parameters)]) : null,
        operation.requestBody ? requestBody(operation.requestBody) : null,
        responses(operation.responses || {}),
      ]),
    ]);
    if (operation.operationId) view.id = operation.operationId;  // deep links: /docs#token
    return view;
  }

  function render() {
    var groups = {};
    var order = (doc.tags || []).map(function (tag) { return tag.name; });
    Object.keys(doc.paths).forEach(function (path) {
      METHODS.forEach(function (method) {
        var operation = doc.paths[path][method];
        if (!operation) return;
        var tag = (operation.tags || ["Other"])[0];
        if (order.indexOf(tag) < 0) order.push(tag);
        (groups[tag] = groups[tag] || []).push(operationView(path, method, operation));
      });
    });
    var sections = order.filter(function (tag) { return groups[tag]; }).map(function (tag) {
      var info = (doc.tags || []).filter(function (t) { return t.name === tag; })[0] || {};
      return el("section", "card panel docs-tag", [
        el("div", "panel-header", [el("h2", "", [tag]), info.description ? rich("p", "muted", info.description) : null]),
        el("div", "docs-ops", groups[tag]),
      ]);
    });
    var server = (doc.servers || [])[0];
    var intro = el("p", "muted small docs-meta", [
      doc.info.title + " " + doc.info.version,
      server ? " · server " : "",
      server ? el("code", "", [server.url]) : null,
    ]);
    root.replaceChildren.apply(root, [intro].concat(sections));
    var target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  function fail(message) {
    root.replaceChildren(el("div", "card panel", [
      el("p", "", ["The API description could not be shown (" + message + "). Read the ",
        el("a", "", ["OpenAPI document"]), " directly."]),
    ]));
    root.querySelector("a").href = "/openapi.json";
  }

  var loading = root.querySelector("[data-docs-loading]");
  if (loading) loading.hidden = false;
  fetch("/openapi.json", { headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    })
    .then(function (body) { doc = body; render(); })
    .catch(function (error) { fail(error.message); });
})();
