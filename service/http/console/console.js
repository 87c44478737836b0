// The keyledger console: sign in, pick an org, manage its keys, follow them live.
// Views by path: /console (sign in, org picker), /console/orgs/{org} (keys),
// /console/orgs/{org}/keys/{id} (one key and its timeline).

import { ApiError, call, keyPath, orgPath, session, watch } from "./api.js";
import {
  REASON_TEXT,
  explain,
  generateDialog,
  renameDialog,
  revokeDialog,
  rotateDialog,
  secretDialog,
} from "./dialogs.js";
import { alertBox, field, fill, h, menuButton, when } from "./ui.js";

const main = document.getElementById("main");
const where = document.getElementById("where");
const liveBadge = document.getElementById("live");
const signOutButton = document.getElementById("sign-out");
const notice = document.getElementById("notice");
const STATUS_TEXT = { active: "Active", disabled: "Disabled", revoked: "Revoked", expired: "Expired" };
const PAGE_SIZE = 20;
let stopWatching = null;

function navigate(path) {
  history.pushState(null, "", path);
  route();
}

function link(path, text, props = {}) {
  return h("a", {
    href: path,
    ...props,
    onclick: (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      navigate(path);
    },
  }, text);
}

function say(message) {
  notice.textContent = message;
}

function setLive(state) {
  liveBadge.hidden = state === null;
  liveBadge.dataset.state = state || "";
  liveBadge.textContent = { live: "● Live", reconnecting: "Reconnecting…", refused: "Not live" }[state] || "";
}

const INVALID_KEY = "This service key is no longer valid: sign in again.";

/** Follow the org live; `reload` redraws after a reconnect (events may have been missed). */
function follow(org, onEvent, reload) {
  if (stopWatching) stopWatching();
  setLive("reconnecting");
  let connected = false;
  stopWatching = watch(org, onEvent, (state) => {
    if (state === "unauthorized") return signOut(INVALID_KEY);
    setLive(state);
    // Last-Event-ID covers a drop after an event; before the first one only a reload can.
    if (state === "live" && connected) reload();
    if (state === "live") connected = true;
    return undefined;
  });
}

function signOut(message) {
  session.signOut();
  if (stopWatching) stopWatching();
  stopWatching = null;
  navigate("/console");
  if (message) fill(main.querySelector(".problems") || main, alertBox(message));
}

/** Run an API action; a 401 signs out, other refusals become an alert in `place`. */
async function attempt(place, action) {
  try {
    return await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut(INVALID_KEY);
      return undefined;
    }
    fill(place, alertBox(explain(error)));
    return undefined;
  }
}

// --- sign in and org picker ---------------------------------------------------------

function signInView() {
  where.textContent = "";
  signOutButton.hidden = true;
  setLive(null);
  const key = h("input", { name: "service_key", type: "text", autocomplete: "off", spellcheck: "false", class: "masked" });
  const problems = h("div", { class: "problems" });
  const form = h(
    "form",
    { class: "card narrow", novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a keyledger service key. It stays in this browser tab only and is forgotten when the tab closes."),
    field("Service key", key),
    problems,
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    session.signIn(key.value.trim());
    try {
      const me = await call("GET", "/v1/me");
      key.value = "";
      const orgs = me.orgs || [];
      navigate(orgs.length === 1 ? `/console/orgs/${encodeURIComponent(orgs[0])}` : "/console");
    } catch (error) {
      session.signOut();
      fill(problems, alertBox(explain(error)));
    }
  });
  fill(main, form);
  key.focus();
}

async function orgPickerView() {
  where.textContent = "";
  signOutButton.hidden = false;
  setLive(null);
  const problems = h("div", { class: "problems" });
  fill(main, h("p", {}, "Loading…"));
  const me = await attempt(problems, () => call("GET", "/v1/me"));
  if (!me) return fill(main, problems);
  const section = h("section", { class: "card narrow" }, h("h1", {}, "Choose an org"));
  if (me.orgs) {
    section.append(h("ul", { class: "orgs" }, me.orgs.map((org) => h("li", {}, link(`/console/orgs/${encodeURIComponent(org)}`, org)))));
  } else {
    const org = h("input", { name: "org", type: "text", autocomplete: "off", spellcheck: "false" });
    const form = h(
      "form",
      { novalidate: true },
      field("Org", org, "This key may act on every org: type the one to open."),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Open")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (org.value.trim()) navigate(`/console/orgs/${encodeURIComponent(org.value.trim())}`);
    });
    section.append(form);
    if (me.scopes.includes("admin")) section.append(h("p", {}, "Service keys: ", link("/console/orgs/_system", "_system")));
  }
  fill(main, section, problems);
  const first = section.querySelector("input, a");
  if (first) first.focus();
}

// --- the key table ------------------------------------------------------------------

function statusBadge(status) {
  return h("span", { class: `badge ${status}` }, STATUS_TEXT[status] || status);
}

/** Put the focus back on the key's actions button (or its row's link) after a redraw. */
function refocus(keyId) {
  const place = document.querySelector(`[data-key-id="${CSS.escape(keyId)}"]`);
  const target = place && (place.querySelector(".menu-button") || place.querySelector("a, h1"));
  if (target) target.focus();
}

function keyActions(org, key, after) {
  const problems = document.querySelector("#page-problems");
  // The redraw after an action replaces the button that had the focus: give it back.
  const run = async (action) => {
    await attempt(problems, action);
    refocus(key.id);
  };
  const items = [["Rename", () => run(async () => (await renameDialog(org, key)) && after())]];
  if (key.status === "active") items.push(["Disable", () => run(async () => { await call("POST", `${keyPath(org, key.id)}/disable`, {}); say(`${key.name} disabled`); await after(); })]);
  if (key.status === "disabled") items.push(["Enable", () => run(async () => { await call("POST", `${keyPath(org, key.id)}/enable`); say(`${key.name} enabled`); await after(); })]);
  items.push(["Rotate", () => run(async () => {
    const answer = await rotateDialog(org, key);
    if (answer) {
      await secretDialog(answer);
      await after();
    }
  })]);
  items.push(["Revoke", () => run(async () => {
    if (await revokeDialog(org, key)) {
      say(`${key.name} revoked`);
      await after();
    }
  })]);
  if (key.status === "revoked" || key.status === "expired") items.length = 0;
  return items.length ? menuButton(`Actions for ${key.name}`, items) : h("span", { class: "muted" }, "—");
}

const COLUMNS = [
  ["name", "Name"],
  ["status", "Status"],
  ["id", "Key ID"],
  ["type", "Type"],
  ["created_at", "Created"],
  ["last_used_at", "Last used"],
  ["expires_at", "Expires"],
];

async function keysView(org) {
  where.textContent = org;
  signOutButton.hidden = false;
  const state = { cursors: [null], page: 0, sort: ["created_at", "descending"], keys: [], next: null };
  const problems = h("div", { class: "problems", id: "page-problems" });
  const table = h("table", { class: "keys" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const generate = h("button", { type: "button", class: "primary" }, "Generate API key");
  generate.addEventListener("click", async () => {
    const answer = await attempt(problems, () => generateDialog(org));
    if (answer) {
      await secretDialog(answer);
      await load();
      generate.focus();
    }
  });
  fill(
    main,
    h("div", { class: "heading" }, h("h1", {}, `API keys of ${org}`), generate),
    problems,
    table,
    pager,
  );

  function sorted(keys) {
    const [column, order] = state.sort;
    const sign = order === "ascending" ? 1 : -1;
    return [...keys].sort((a, b) => sign * String(a[column] ?? "").localeCompare(String(b[column] ?? "")));
  }

  function render() {
    const head = h("tr", {}, COLUMNS.map(([column, label]) => {
      const [current, order] = state.sort;
      const sortable = ["name", "status", "created_at", "last_used_at", "expires_at"].includes(column);
      const th = h("th", { scope: "col", "aria-sort": current === column ? order : null });
      th.append(sortable ? h("button", { type: "button", class: "sort", onclick: () => {
        state.sort = [column, current === column && order === "descending" ? "ascending" : "descending"];
        render();
      } }, label) : label);
      return th;
    }), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")));
    const rows = sorted(state.keys).map((key) => h(
      "tr",
      { "data-key-id": key.id },
      h("td", {}, link(`/console/orgs/${encodeURIComponent(org)}/keys/${key.id}`, key.name)),
      h("td", {}, statusBadge(key.status)),
      h("td", {}, h("code", {}, key.id)),
      h("td", {}, `${key.type} · ${key.environment}`),
      h("td", {}, when(key.created_at)),
      h("td", {}, when(key.last_used_at, "Never")),
      h("td", {}, when(key.expires_at, "Never")),
      h("td", {}, keyActions(org, key, load)),
    ));
    // A redraw (after an action, or a live event) must not drop the focus to <body>.
    const focused = table.contains(document.activeElement) && document.activeElement.closest("[data-key-id]");
    fill(table, h("caption", { class: "visually-hidden" }, `API keys of ${org}`), h("thead", {}, head), h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: COLUMNS.length + 1, class: "muted" }, "No keys yet."))));
    fill(
      pager,
      h("button", { type: "button", disabled: state.page === 0, onclick: () => { state.page -= 1; load(); } }, "Previous page"),
      h("span", {}, `Page ${state.page + 1}`),
      h("button", { type: "button", disabled: !state.next, onclick: () => { state.cursors[state.page + 1] = state.next; state.page += 1; load(); } }, "Next page"),
    );
    if (focused) refocus(focused.dataset.keyId);
  }

  async function load(minPosition) {
    const cursor = state.cursors[state.page];
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) query.set("cursor", cursor);
    if (minPosition) query.set("min_position", String(minPosition));
    const page = await attempt(problems, () => call("GET", `${orgPath(org)}/keys?${query}`));
    if (!page) return;
    state.keys = page.data;
    state.next = page.next_cursor;
    render();
  }

  async function changed(event) {
    // A key of this page changed: read it as of that event and redraw its row.
    const index = state.keys.findIndex((key) => key.id === event.key_id);
    if (index >= 0) {
      const key = await attempt(problems, () => call("GET", `${keyPath(org, event.key_id)}?min_position=${event.position}`));
      if (key) {
        state.keys[index] = key;
        render();
      }
    } else if (event.event_type === "KeyGenerated" && state.page === 0) {
      await load(event.position);
    }
  }

  follow(org, changed, () => load());
  await load();
}

// --- one key ---------------------------------------------------------------------

const EVENT_TEXT = {
  KeyGenerated: "Generated",
  KeyRenamed: "Renamed",
  KeyDisabled: "Disabled",
  KeyEnabled: "Enabled",
  KeyRevoked: "Revoked",
  KeyRotated: "Rotated",
  KeyExpired: "Expired",
};

function whatChanged(event) {
  const data = event.data || {};
  switch (event.event_type) {
    case "KeyGenerated":
      return `${data.type} key “${data.name}”, ${data.environment}${data.expires_at ? `, expires ${new Date(data.expires_at).toUTCString()}` : ", never expires"}`;
    case "KeyRenamed":
      return `“${data.previous_name}” → “${data.name}”`;
    case "KeyRotated":
      return `new credential; the previous one is accepted until ${new Date(data.previous_valid_until).toUTCString()}`;
    default: {
      const shown = Object.entries(data).filter(([name]) => name !== "reason");
      return shown.map(([name, value]) => `${name}: ${JSON.stringify(value)}`).join(", ");
    }
  }
}

async function keyView(org, keyId) {
  where.textContent = org;
  signOutButton.hidden = false;
  const problems = h("div", { class: "problems", id: "page-problems" });
  const details = h("div", {});
  const timeline = h("ol", { class: "timeline", "aria-label": "Audit timeline" });
  fill(
    main,
    h("p", {}, link(`/console/orgs/${encodeURIComponent(org)}`, `← API keys of ${org}`)),
    problems,
    details,
    h("h2", {}, "Audit timeline"),
    timeline,
  );

  async function load(minPosition) {
    const suffix = minPosition ? `?min_position=${minPosition}` : "";
    const key = await attempt(problems, () => call("GET", `${keyPath(org, keyId)}${suffix}`));
    const events = await attempt(problems, () => call("GET", `${keyPath(org, keyId)}/events${suffix}`));
    if (!key || !events) return;
    const rows = [
      ["Status", statusBadge(key.status)],
      ["Key ID", h("code", {}, key.id)],
      ["Type", `${key.type} · ${key.environment}`],
      ["Hint", key.hint || (key.algorithm ? `${key.algorithm} public key` : "—")],
      ["Scopes", key.scopes.length ? key.scopes.join(" ") : "—"],
      ["Created", when(key.created_at)],
      ["Last used", when(key.last_used_at, "Never")],
      ["Expires", when(key.expires_at, "Never")],
    ];
    if (key.allowed_origins && key.allowed_origins.length) rows.push(["Allowed origins", key.allowed_origins.join(" ")]);
    if (key.resource) rows.push(["Resource", key.resource]);
    const focused = details.contains(document.activeElement);
    fill(
      details,
      h("div", { class: "heading", "data-key-id": key.id }, h("h1", { tabindex: "-1" }, key.name), keyActions(org, key, () => load())),
      h("dl", { class: "details" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    );
    if (focused) refocus(key.id);
    fill(timeline, [...events.data].reverse().map((event) => h(
      "li",
      {},
      h("strong", {}, EVENT_TEXT[event.event_type] || event.event_type),
      " ",
      when(event.occurred_at),
      h("div", { class: "muted" }, "by ", h("code", {}, (event.actor && event.actor.id) || "unknown"),
        event.actor && event.actor.on_behalf_of ? ` on behalf of ${event.actor.on_behalf_of}` : ""),
      whatChanged(event) ? h("div", {}, whatChanged(event)) : null,
      event.data && event.data.reason ? h("div", {}, `Reason: ${REASON_TEXT[event.data.reason] || event.data.reason}`) : null,
    )));
  }

  follow(org, (event) => {
    if (event.key_id === keyId) load(event.position);
  }, () => load());
  await load();
}

// --- routing ----------------------------------------------------------------------

function route() {
  if (stopWatching) stopWatching();
  stopWatching = null;
  say("");
  const parts = location.pathname.replace(/\/+$/, "").split("/").slice(2).map(decodeURIComponent);
  if (!session.key) return signInView();
  if (parts[0] === "orgs" && parts.length === 2) return keysView(parts[1]);
  if (parts[0] === "orgs" && parts[2] === "keys" && parts.length === 4) return keyView(parts[1], parts[3]);
  return orgPickerView();
}

signOutButton.addEventListener("click", () => signOut());
window.addEventListener("popstate", route);
route();
