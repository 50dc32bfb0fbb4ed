// Quipu console: a read-only view of the cluster over the node's /api/ endpoints. No build
// step, no dependencies. Every text from the cluster goes in through textContent (never
// innerHTML): topic names and record bytes are untrusted.
"use strict";

const main = document.getElementById("main");

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

async function api(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
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

async function topicsPage() {
  const topics = await api("/api/topics");
  show(
    el("h1", {}, "Topics"),
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
      default: return await clusterPage();
    }
  } catch (error) {
    fail(error);
  }
}

window.addEventListener("hashchange", route);
fetch("/readyz").then((r) => r.json()).then((r) => { document.getElementById("node").textContent = `node ${r.node_id}`; }).catch(() => {});
route();
