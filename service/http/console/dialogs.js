// The console's dialogs: generate, the shown-once secret, rename, rotate, revoke.
// Each calls the /v1 API itself and resolves with its answer (null when cancelled).

import { ApiError, call, keyPath, orgPath } from "./api.js";
import { alertBox, field, h, modal, showFieldErrors } from "./ui.js";

export const EXPIRATIONS = [
  ["never", "Never"],
  ["30d", "30 days"],
  ["90d", "90 days"],
  ["6mo", "6 months"],
  ["1y", "1 year"],
];
const TYPES = [
  ["secret", "Secret (server-side, sk_)"],
  ["embed", "Embed (browser-safe, rk_)"],
  ["signing", "Signing (key pair)"],
];
const REASONS = [
  ["compromised", "Compromised"],
  ["leaked", "Leaked"],
  ["unused", "No longer used"],
  ["rotated", "Replaced by another key"],
  ["other", "Other"],
];
/** The human label of each revocation reason (for the timeline too). */
export const REASON_TEXT = Object.fromEntries(REASONS);
const GRACES = [
  ["0s", "None: the old one stops now"],
  ["1h", "1 hour"],
  ["24h", "24 hours"],
  ["7d", "7 days"],
];

const options = (pairs, chosen) =>
  pairs.map(([value, text]) => h("option", { value, selected: value === chosen }, text));
const words = (text) => text.split(/[\s,]+/).filter(Boolean);

/** What a refusal means to a person (the API's message, or a plainer one). */
export function explain(error) {
  if (error instanceof ApiError && error.code === "active_key_limit") {
    const limit = error.details && error.details.limit;
    return (
      `You can have up to ${limit} active keys in this environment. ` +
      "Disable or revoke one before generating or enabling another."
    );
  }
  return error.message;
}

/**
 * A form in a dialog: submit runs `act(form)`; a refusal is shown next to its fields
 * (422) or as an alert, and the dialog stays open.
 */
function formDialog(title, controls, submitLabel, act) {
  return modal(title, (close) => {
    const problems = h("div", { class: "problems" });
    const form = h(
      "form",
      { novalidate: true },
      controls,
      problems,
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "button", class: "quiet", onclick: () => close(null) }, "Cancel"),
        h("button", { type: "submit", class: "primary" }, submitLabel),
      ),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      problems.replaceChildren();
      try {
        close(await act(form));
      } catch (error) {
        const unplaced = error.code === "validation_error" ? showFieldErrors(form, error.details) : [];
        const placed = error.code === "validation_error" && unplaced.length === 0;
        const message = placed ? "Please correct the fields marked above." : explain(error);
        problems.replaceChildren(alertBox(unplaced.length ? `${message} ${unplaced.join(" ")}` : message));
        const invalid = form.querySelector("[aria-invalid=true]");
        if (invalid) invalid.focus();
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  });
}

/** The Generate dialog; resolves with the API's answer ({key, secret | private_key}). */
export function generateDialog(org) {
  const type = h("select", { name: "type" }, options(TYPES, "secret"));
  const embed = h(
    "fieldset",
    { class: "for-type", hidden: true },
    h("legend", {}, "Embed key"),
    field(
      "Allowed origins",
      h("textarea", { name: "allowed_origins", rows: 2, spellcheck: "false" }),
      "One per line, e.g. https://app.example.com",
    ),
    field("Resource", h("input", { name: "resource", type: "text", autocomplete: "off" }), "The one resource the key may act on"),
  );
  const signing = h(
    "fieldset",
    { class: "for-type", hidden: true },
    h("legend", {}, "Signing key"),
    field("Algorithm", h("select", { name: "algorithm" }, options([["ed25519", "Ed25519"], ["rsa-2048", "RSA 2048"]], "ed25519"))),
  );
  type.addEventListener("change", () => {
    embed.hidden = type.value !== "embed";
    signing.hidden = type.value !== "signing";
  });
  const controls = [
    field("Name", h("input", { name: "name", type: "text", autocomplete: "off", maxlength: 100, required: true })),
    field("Type", type),
    field("Environment", h("select", { name: "environment" }, options([["live", "Live"], ["test", "Test"]], "live"))),
    field("Scopes", h("input", { name: "scopes", type: "text", autocomplete: "off", spellcheck: "false" }), "Separated by spaces or commas, e.g. orders:write templates:*"),
    field("Expiration", h("select", { name: "expires_in" }, options(EXPIRATIONS, "never"))),
    embed,
    signing,
  ];
  return formDialog("Generate API key", controls, "Generate", async (form) => {
    const value = (name) => form.elements[name].value.trim();
    const body = {
      name: value("name"),
      type: value("type"),
      environment: value("environment"),
      expires_in: value("expires_in"),
      scopes: words(value("scopes")),
    };
    if (body.type === "embed") {
      body.allowed_origins = words(value("allowed_origins"));
      body.resource = value("resource");
    }
    if (body.type === "signing") body.algorithm = value("algorithm");
    return call("POST", `${orgPath(org)}/keys`, body);
  });
}

/** The secret or private key of a new or rotated key, shown once. */
export function secretDialog(answer) {
  const isPrivate = Boolean(answer.private_key);
  const secret = answer.private_key || answer.secret;
  const label = isPrivate ? "Private key" : "Secret";
  return modal(`${answer.key.name}: your new ${label.toLowerCase()}`, (close) => {
    const box = isPrivate
      ? h("textarea", { id: "shown-secret", readonly: true, rows: 6, spellcheck: "false", value: secret })
      : h("input", { id: "shown-secret", type: "text", readonly: true, spellcheck: "false", value: secret });
    const copy = h("button", { type: "button" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(secret);
        copy.textContent = "Copied";
      } catch {
        box.select();
        copy.textContent = "Press Ctrl+C to copy";
      }
    });
    const download = h("button", { type: "button" }, "Download");
    download.addEventListener("click", () => {
      // A blob: URL names the blob, not its content: the secret never enters a URL.
      const blob = new Blob([`${secret}\n`], { type: "text/plain" });
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: `${answer.key.id}${isPrivate ? ".pem" : ".txt"}` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    });
    return h(
      "div",
      {},
      h("p", { class: "warning" }, `Copy or download this ${label.toLowerCase()} now. `
        + "It is shown only this once: keyledger keeps no copy and cannot show it again."),
      field(label, box),
      h("div", { class: "buttons" }, copy, download, h("button", { type: "button", class: "primary", onclick: () => close(true) }, "Done")),
    );
  });
}

/** Rename: resolves with the API's answer. */
export function renameDialog(org, key) {
  const name = h("input", { name: "name", type: "text", autocomplete: "off", maxlength: 100, value: key.name });
  return formDialog(`Rename ${key.name}`, [field("Name", name)], "Rename", (form) =>
    call("POST", `${keyPath(org, key.id)}/rename`, { name: form.elements.name.value.trim() }),
  );
}

/** Rotate with a grace period: resolves with the API's answer (the new secret in it). */
export function rotateDialog(org, key) {
  const grace = h("select", { name: "grace_period" }, options(GRACES, "24h"));
  const note = h("p", {}, "A new credential is issued. The current one keeps working for the grace period.");
  return formDialog(`Rotate ${key.name}`, [note, field("Grace period", grace)], "Rotate", (form) =>
    call("POST", `${keyPath(org, key.id)}/rotate`, { grace_period: form.elements.grace_period.value }),
  );
}

/** Revoke with a reason, after a confirmation: resolves with the API's answer. */
export function revokeDialog(org, key) {
  // No reason is chosen for the person: they must pick the true one.
  const reason = h(
    "select",
    { name: "reason", required: true },
    h("option", { value: "", selected: true, disabled: true }, "Choose a reason…"),
    options(REASONS, null),
  );
  const confirm = h("input", { name: "confirm", type: "checkbox" });
  const controls = [
    h("p", { class: "warning" }, `Revoking ${key.name} cannot be undone: every request with it will be refused.`),
    field("Reason", reason),
    h("div", { class: "field check", "data-field": "confirm" }, confirm, h("label", { for: "revoke-confirm" }, "I understand that this cannot be undone"), h("p", { class: "field-error", id: "revoke-confirm-error", hidden: true })),
  ];
  confirm.id = "revoke-confirm";
  confirm.setAttribute("aria-describedby", "revoke-confirm-error");
  return formDialog(`Revoke ${key.name}`, controls, "Revoke", async (form) => {
    const details = [];
    if (!form.elements.reason.value) details.push({ loc: ["reason"], msg: "Choose the reason for revoking this key." });
    if (!form.elements.confirm.checked) details.push({ loc: ["confirm"], msg: "Tick the box to confirm the revocation." });
    if (details.length) {
      throw new ApiError(422, { error: { code: "validation_error", message: "Please correct the fields.", details } });
    }
    return call("POST", `${keyPath(org, key.id)}/revoke`, { reason: form.elements.reason.value });
  });
}
