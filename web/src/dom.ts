/**
 * A tiny element builder: the storefront renders with the DOM API only (text is always set
 * as text, never parsed as HTML, so product names and API messages cannot inject markup).
 */

/** Anything `h` accepts as a child; falsy values render nothing. */
export type Child = Node | string | number | false | null | undefined | readonly Child[];

type Handler = (event: never) => void;
/** Attributes (`class`, `aria-*`, `data-*`…) and `on<event>` listeners. */
export type Attrs = Record<string, string | number | boolean | undefined | Handler>;

/** `h("a", { href: "/" }, "Home")`: an element with attributes and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") {
      el.addEventListener(name.slice(2), value as EventListener);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Replaces `parent`'s children, with `h`'s rules for them (falsy children are skipped). */
export function fill(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

function append(parent: Node, children: readonly Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

/** Says `text` to screen readers through the page's polite live region. */
export function announce(text: string): void {
  const region = document.getElementById("announcer");
  if (region === null) return;
  // Clearing first makes a repeat of the same message be read again.
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** A short date and time in the reader's locale. */
export function formatTime(date: Date | undefined): string {
  if (date === undefined || Number.isNaN(date.getTime())) return "";
  return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }).format(
    date,
  );
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = window.setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      window.clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** A random UUID v4; crypto.randomUUID needs a secure context, getRandomValues does not. */
export function uuid(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
