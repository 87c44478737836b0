// Small DOM helpers: elements built with text nodes only (never innerHTML, so nothing a
// key's name or metadata holds can become markup), times, dialogs and menus.

/** An element: h("button", {type: "button", onclick: f}, "Label"). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const STEPS = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];

/** "3 minutes ago", "in 30 days". */
export function relative(iso, now = Date.now()) {
  const seconds = (Date.parse(iso) - now) / 1000;
  for (const [unit, size] of STEPS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return RELATIVE.format(Math.round(seconds / size), unit);
    }
  }
  return iso;
}

/** A <time> showing a relative time, the exact one as its title; `empty` when null. */
export function when(iso, empty = "—") {
  if (!iso) return h("span", { class: "muted" }, empty);
  return h("time", { datetime: iso, title: new Date(iso).toUTCString() }, relative(iso));
}

/** Clear an element and put children in it. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const child of children.flat(Infinity)) if (child) el.append(child);
  return el;
}

/** An alert (role=alert) carrying a message; empty when message is falsy. */
export function alertBox(message) {
  return message ? h("p", { role: "alert", class: "alert" }, message) : null;
}

/**
 * A modal dialog (native <dialog>: focus stays inside, Escape closes it).
 * Resolves when closed; the content builder receives `close(value)`.
 */
export function modal(title, build) {
  return new Promise((resolve) => {
    const heading = h("h2", { id: `dialog-${Date.now()}` }, title);
    const dialog = h("dialog", { "aria-labelledby": heading.id });
    let result = null;
    const close = (value) => {
      result = value;
      dialog.close();
    };
    dialog.append(heading, build(close));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    const first = dialog.querySelector("input, select, textarea, button:not(.quiet)");
    if (first) first.focus();
  });
}

/** A labelled form field; `error` holds the field's message from a 422. */
export function field(label, control, hint) {
  const id = control.id || `f-${label.toLowerCase().replace(/\W+/g, "-")}`;
  control.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const described = [hint ? `${id}-hint` : null, error.id].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", described);
  const wrapper = h(
    "div",
    { class: "field", "data-field": control.name || "" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
    error,
  );
  return wrapper;
}

/** Show a 422's details next to their fields; the messages not placed, for an alert. */
export function showFieldErrors(form, details) {
  for (const el of form.querySelectorAll(".field-error")) {
    el.hidden = true;
    el.textContent = "";
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const unplaced = [];
  for (const detail of Array.isArray(details) ? details : []) {
    const names = (detail.loc || []).filter((part) => typeof part === "string");
    const wrapper = names
      .map((name) => form.querySelector(`.field[data-field="${CSS.escape(name)}"]`))
      .find(Boolean);
    if (!wrapper) {
      unplaced.push(detail.msg);
      continue;
    }
    const error = wrapper.querySelector(".field-error");
    error.textContent = error.textContent ? `${error.textContent} ${detail.msg}` : detail.msg;
    error.hidden = false;
    wrapper.querySelector("input, select, textarea").setAttribute("aria-invalid", "true");
  }
  return unplaced;
}

/**
 * A menu button: "Actions for {name}" opens a menu of items (role=menu, menuitem);
 * arrows move between items, Escape closes and returns focus to the button.
 */
export function menuButton(label, items) {
  const button = h("button", {
    type: "button",
    class: "menu-button",
    "aria-haspopup": "menu",
    "aria-expanded": "false",
    "aria-label": label,
  }, "⋯");
  const menu = h("div", { role: "menu", class: "menu", hidden: true, "aria-label": label });
  const wrapper = h("div", { class: "menu-wrapper" }, button, menu);
  const close = (refocus) => {
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
  };
  for (const [text, action] of items) {
    menu.append(
      h("button", {
        type: "button",
        role: "menuitem",
        tabindex: "-1",
        onclick: () => {
          close(true);
          action();
        },
      }, text),
    );
  }
  button.addEventListener("click", () => {
    const opening = menu.hidden;
    menu.hidden = !opening;
    button.setAttribute("aria-expanded", String(opening));
    if (opening) menu.querySelector("[role=menuitem]").focus();
  });
  menu.addEventListener("keydown", (event) => {
    const entries = [...menu.querySelectorAll("[role=menuitem]")];
    const at = entries.indexOf(document.activeElement);
    if (event.key === "Escape") {
      event.preventDefault();
      close(true);
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      entries[(at + step + entries.length) % entries.length].focus();
    } else if (event.key === "Tab") {
      close(false);
    }
  });
  wrapper.addEventListener("focusout", (event) => {
    if (!wrapper.contains(event.relatedTarget)) close(false);
  });
  return wrapper;
}
