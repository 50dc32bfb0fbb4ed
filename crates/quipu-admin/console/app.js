// Quipu console: a view of the cluster over the node's /api/ endpoints, and, for a signed-in
// user where the node allows it, a few actions. No build step, no dependencies. Every text from
// the cluster goes in through textContent (never innerHTML): topic names and record bytes are
// untrusted. A signed-in user's password stays in this page's memory (never in storage or a
// cookie) and goes only in the Authorization header of this page's own requests.
"use strict";

const main = document.getElementById("main");

// What the console lets this visitor do (/api/session), and the signed-in user's header.
let session = { user: null, sign_in: false, actions: false };
let authorization = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, numeric = []) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : null }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : null }, c))))));
}

async function api(path, payload) {
  const headers = { accept: "application/json" };
  if (authorization) headers.authorization = authorization;
  const init = { headers, cache: "no-store" };
  if (payload !== undefined) {
    init.method = "POST";
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function show(...children) {
  main.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
}

function fail(error) {
  show(el("p", { class: "error", id: "error" }, error.message || String(error)));
}

const fmt = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
const link = (href, text) => el("a", { href }, text);
const enc = encodeURIComponent;

async function clusterPage() {
  const [cluster, ready] = await Promise.all([api("/api/cluster"), fetch("/readyz").then((r) => r.json())]);
  show(
    el("h1", {}, "Cluster"),
    el("p", {}, "Controller leader: ", cluster.controller_leader === null ? el("span", { class: "bad" }, "none known") : `node ${cluster.controller_leader}`,
      " · this node (", String(ready.node_id), "): ", ready.ready ? el("span", { class: "good" }, "ready") : el("span", { class: "bad" }, "not ready: " + ready.not_ready_because.join("; "))),
    table(["Node", "State", "Controller", "Alive", "gRPC API", "Kafka", "Rack", "Replicas", "Preferred leader of"],
      cluster.nodes.map((n) => [String(n.node_id), n.state, n.controller_role || "–", n.alive ? el("span", { class: "good" }, "yes") : el("span", { class: "bad" }, "no"),
        n.api_addr, n.kafka_addr, n.rack || "–", fmt(n.replicas), fmt(n.preferred_leaders)]), [7, 8]),
  );
}

const canAct = () => session.actions && session.user !== null;

// A form whose submit runs `action` (its FormData); its failure shows in the form, its
// success re-renders the page with `done` said above it.
function actionForm(id, title, fields, button, action) {
  const problem = el("p", { class: "error", id: `${id}-error`, hidden: "" });
  const form = el("form", { class: "browse", id }, fields, el("button", { type: "submit" }, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.hidden = true;
    try {
      const done = await action(new FormData(form));
      await route();
      main.prepend(el("p", { class: "good", id: "done" }, done));
    } catch (error) {
      problem.textContent = error.message || String(error);
      problem.hidden = false;
    }
  });
  return el("section", {}, el("h2", {}, title), form, problem);
}

function createTopicForm() {
  return actionForm("create-topic", "Create a topic", [
    el("label", {}, "Name", el("input", { name: "name", required: "", maxlength: "249" })),
    el("label", {}, "Partitions", el("input", { name: "partitions", type: "number", min: "1", value: "1", required: "" })),
    el("label", {}, "Replication factor", el("input", { name: "replication_factor", type: "number", min: "1", value: "1", required: "" })),
  ], "Create", async (data) => {
    const name = data.get("name");
    await api("/api/topics", { name, partitions: Number(data.get("partitions")), replication_factor: Number(data.get("replication_factor")) });
    return `Created topic ${name}.`;
  });
}

function resetOffsetsForm(g) {
  const topics = [...new Set(g.offsets.map((o) => o.topic))];
  return actionForm("reset-offsets", "Reset offsets (the group must have no members)", [
    el("label", {}, "Topic", topics.length === 0 ? el("input", { name: "topic", required: "" }) :
      el("select", { name: "topic" }, topics.map((t) => el("option", { value: t }, t)))),
    el("label", {}, "Partition (empty: all)", el("input", { name: "partition", type: "number", min: "0" })),
    el("label", {}, "To", el("select", { name: "to" }, ["earliest", "latest", "offset", "time"].map((t) => el("option", { value: t }, t)))),
    el("label", {}, "Offset", el("input", { name: "offset", type: "number", min: "0" })),
    el("label", {}, "Time (UTC)", el("input", { name: "time", type: "datetime-local", step: "1" })),
  ], "Reset", async (data) => {
    const body = { topic: data.get("topic"), to: data.get("to") };
    if (data.get("partition") !== "") body.partition = Number(data.get("partition"));
    if (body.to === "offset") body.offset = Number(data.get("offset"));
    if (body.to === "time") body.timestamp_ms = Date.parse(data.get("time") + "Z");
    const result = await api(`/api/groups/${enc(g.group)}/offsets`, body);
    return `Moved ${result.offsets.length} offsets of ${g.group} on ${result.topic}: ` +
      result.offsets.map((o) => `partition ${o.partition} to ${o.offset}`).join(", ") + ".";
  });
}

async function signInPage() {
  if (!session.sign_in) {
    return show(el("h1", {}, "Sign in"), el("p", { class: "muted", id: "no-sign-in" },
      "Signing in needs TLS on this node's admin listener ([admin.tls]) and client API ([api.tls]): a password never crosses the network in the clear."));
  }
  const problem = el("p", { class: "error", id: "sign-in-error", hidden: "" });
  const form = el("form", { class: "browse", id: "sign-in" },
    el("label", {}, "User", el("input", { name: "user", required: "", autocomplete: "username" })),
    el("label", {}, "Password", el("input", { name: "password", type: "password", required: "", autocomplete: "current-password" })),
    el("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const utf8 = new TextEncoder().encode(`${data.get("user")}:${data.get("password")}`);
    authorization = "Basic " + btoa(String.fromCharCode(...utf8));
    try {
      session = await api("/api/session");
      showSession();
      location.hash = "#/cluster";
    } catch (error) {
      authorization = null;
      problem.textContent = error.message || String(error);
      problem.hidden = false;
    }
  });
  show(el("h1", {}, "Sign in"), el("p", { class: "muted" }, "As a user of the cluster (its SCRAM credentials): you then see and may do what its ACLs allow that user."), form, problem);
}

function signOut() {
  authorization = null;
  session.user = null;
  showSession();
  location.hash = "#/cluster";
  route();
}

// The header's sign-in state and the footer's mode.
function showSession() {
  const who = document.getElementById("who");
  if (session.user !== null) {
    who.replaceChildren("signed in as ", el("b", {}, session.user), " · ", el("a", { href: "#/cluster", id: "sign-out", onclick: (e) => { e.preventDefault(); signOut(); } }, "sign out"));
  } else if (session.sign_in) {
    who.replaceChildren(el("a", { href: "#/sign-in", id: "nav-sign-in" }, "Sign in"));
  } else {
    who.replaceChildren();
  }
  const reader = session.user === null ? "an anonymous client" : `user ${session.user}`;
  document.getElementById("mode").textContent = (canAct() ? "Actions allowed as the ACLs permit. " : "Read-only. ") +
    `Served by this node's admin listener; data as the node's client API shows it to ${reader}.`;
}

async function topicsPage() {
  const topics = await api("/api/topics");
  show(
    el("h1", {}, "Topics"),
    canAct() ? createTopicForm() : null,
    topics.length === 0 ? el("p", { class: "muted" }, "No topics yet.") :
      table(["Topic", "Partitions", "Replication factor", ""],
        topics.map((t) => [link(`#/topic/${enc(t.name)}`, t.name), fmt(t.partitions), fmt(t.replication_factor), t.internal ? el("span", { class: "muted" }, "internal") : ""]), [1, 2]),
  );
}

async function topicPage(name) {
  const topic = await api(`/api/topics/${enc(name)}`);
  show(
    el("h1", {}, `Topic ${topic.name}`),
    el("p", {}, `Replication factor ${topic.replication_factor}`, topic.internal ? " · internal" : ""),
    table(["Partition", "Leader", "Replicas", "Log start", "High watermark", "Records", ""],
      topic.partitions.map((p) => [String(p.partition), p.leader === null ? el("span", { class: "bad" }, "none") : `node ${p.leader}`, p.replicas.join(", "),
        fmt(p.log_start_offset), fmt(p.high_watermark),
        p.high_watermark === null ? "–" : fmt(p.high_watermark - p.log_start_offset),
        link(`#/browse/${enc(topic.name)}/${p.partition}`, "browse")]), [0, 3, 4, 5]),
    el("h2", {}, "Settings"),
    table(["Key", "Value"], topic.config.map((c) => [c.name, c.value])),
  );
}

async function groupsPage() {
  const report = await api("/api/groups");
  show(
    el("h1", {}, "Consumer groups"),
    report.complete ? null : el("p", { class: "bad" }, "Some nodes did not answer: groups they coordinate are missing."),
    report.groups.length === 0 ? el("p", { class: "muted" }, "No consumer groups yet.") :
      table(["Group", "Protocol", "State", "Members", "Generation", "Lag"],
        report.groups.map((g) => [link(`#/group/${enc(g.group)}`, g.group), g.protocol, g.state, fmt(g.members), fmt(g.generation), fmt(g.lag)]), [3, 4, 5]),
  );
}

async function groupPage(name) {
  const g = await api(`/api/groups/${enc(name)}`);
  show(
    el("h1", {}, `Consumer group ${g.group}`),
    el("p", {}, `${g.protocol} · ${g.state} · ${g.members} members · generation ${g.generation} · lag ${fmt(g.lag)}`),
    table(["Topic", "Partition", "Committed offset", "Lag", ""],
      g.offsets.map((o) => [link(`#/topic/${enc(o.topic)}`, o.topic), String(o.partition), fmt(o.committed), fmt(o.lag),
        link(`#/browse/${enc(o.topic)}/${o.partition}?offset=${o.committed}`, "browse from here")]), [1, 2, 3]),
    canAct() ? resetOffsetsForm(g) : null,
  );
}

function bytesOf(base64) {
  if (base64 === null) return null;
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function render(base64, format) {
  const bytes = bytesOf(base64);
  if (bytes === null) return el("span", { class: "muted" }, "null");
  if (format === "hex") return el("pre", {}, Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" "));
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (format === "json") {
    try {
      return el("pre", {}, JSON.stringify(JSON.parse(text), null, 2));
    } catch {
      return el("pre", {}, el("span", { class: "muted" }, "(not JSON) "), text);
    }
  }
  return el("pre", {}, text);
}

async function browsePage(topicName, partition, params) {
  const topic = await api(`/api/topics/${enc(topicName)}`);
  const format = params.get("format") || "text";
  const from = params.get("from") || "offset";
  const limit = params.get("limit") || "50";
  const form = el("form", { class: "browse", id: "browse" },
    el("label", {}, "Partition", el("select", { name: "partition" }, topic.partitions.map((p) =>
      el("option", { value: p.partition, selected: String(p.partition) === partition ? "" : null }, String(p.partition))))),
    el("label", {}, "From", el("select", { name: "from" },
      el("option", { value: "offset", selected: from === "offset" ? "" : null }, "offset"),
      el("option", { value: "time", selected: from === "time" ? "" : null }, "time (UTC)"))),
    el("label", {}, "Offset", el("input", { name: "offset", type: "number", min: "0", value: params.get("offset") || "0" })),
    el("label", {}, "Time", el("input", { name: "time", type: "datetime-local", step: "1", value: params.get("time") || "" })),
    el("label", {}, "Records", el("input", { name: "limit", type: "number", min: "1", max: "500", value: limit })),
    el("label", {}, "Show as", el("select", { name: "format" }, ["text", "json", "hex"].map((f) =>
      el("option", { value: f, selected: f === format ? "" : null }, f)))),
    el("button", { type: "submit" }, "Read"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const key of ["from", "offset", "time", "limit", "format"]) next.set(key, data.get(key));
    location.hash = `#/browse/${enc(topicName)}/${data.get("partition")}?${next}`;
  });
  const query = new URLSearchParams({ topic: topicName, partition, limit });
  if (from === "time" && params.get("time")) query.set("timestamp", String(Date.parse(params.get("time") + "Z")));
  else query.set("offset", params.get("offset") || "0");
  const result = await api(`/api/records?${query}`);
  show(
    el("h1", {}, `Records of ${topicName}, partition ${partition}`),
    form,
    result.records.length === 0 ? el("p", { class: "muted", id: "no-records" }, "No records there.") :
      table(["Offset", "Timestamp (UTC)", "Key", "Value", "Headers"],
        result.records.map((r) => [String(r.offset), new Date(r.timestamp_ms).toISOString(), render(r.key, format), render(r.value, format),
          el("div", {}, r.headers.map((h) => el("div", {}, el("b", {}, h.key + ": "), render(h.value, format))))]), [0]),
    result.next_offset === null ? null : el("p", {}, link(`#/browse/${enc(topicName)}/${partition}?${new URLSearchParams({ offset: result.next_offset, limit, format })}`, "next records →")),
  );
}

async function route() {
  const hash = location.hash || "#/cluster";
  const [path, search] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(search || "");
  for (const id of ["cluster", "topics", "groups"]) {
    document.getElementById(`nav-${id}`).classList.toggle("active", parts[0] === id || (id === "topics" && ["topic", "browse"].includes(parts[0])) || (id === "groups" && parts[0] === "group"));
  }
  try {
    switch (parts[0]) {
      case "topics": return await topicsPage();
      case "topic": return await topicPage(parts[1]);
      case "groups": return await groupsPage();
      case "group": return await groupPage(parts[1]);
      case "browse": return await browsePage(parts[1], parts[2] || "0", params);
      case "sign-in": return await signInPage();
      default: return await clusterPage();
    }
  } catch (error) {
    fail(error);
  }
}

window.addEventListener("hashchange", route);
fetch("/readyz").then((r) => r.json()).then((r) => { document.getElementById("node").textContent = `node ${r.node_id}`; }).catch(() => {});
api("/api/session").then((s) => { session = s; }).catch(() => {}).finally(() => { showSession(); route(); });
