/**
 * Client-side routing over the History API: links inside the site are followed without a
 * reload, and the edge answers any route with index.html, so deep links and reloads work.
 * Each page gets an AbortSignal that fires when the reader leaves it (calls, streams stop).
 */
import { h } from "./dom.js";
import { describeError, errorBox, isAbort } from "./errors.js";

/** What a page is given to render. */
export interface Page {
  /** Where the page renders; replaced wholesale by each page. */
  main: HTMLElement;
  /** Path parameters, decoded (`/orders/:id` → { id }). */
  params: Record<string, string>;
  query: URLSearchParams;
  /** Aborted when the reader navigates away. */
  signal: AbortSignal;
}

/** A page: renders into `page.main` (it may keep updating it until `signal` aborts). */
export type View = (page: Page) => Promise<void> | void;

interface Route {
  pattern: RegExp;
  names: string[];
  view: View;
}

const routes: Route[] = [];
let notFound: View = ({ main }) => {
  main.replaceChildren(h("h1", null, "Page not found"));
};
let current: AbortController | undefined;
const listeners = new Set<() => void>();

/** Adds a route: `/products/:id` style paths. */
export function route(path: string, view: View): void {
  const names: string[] = [];
  const source = path.replace(/:(\w+)/g, (_, name: string) => {
    names.push(name);
    return "([^/]+)";
  });
  routes.push({ pattern: new RegExp(`^${source}/?$`), names, view });
}

/** The page for paths no route matches. */
export function fallback(view: View): void {
  notFound = view;
}

/** Calls `listener` after every navigation (the header marks the current page). */
export function onNavigate(listener: () => void): void {
  listeners.add(listener);
}

/** Goes to `url` (a path within the site) and renders it. */
export function navigate(url: string, options: { replace?: boolean } = {}): void {
  if (options.replace === true) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  void render(true);
}

/**
 * A `next=` target that stays on this site (no `//evil.example` open redirects) and is not
 * a sign-in page itself (which would send a signed-in reader round in circles).
 */
export function safeNext(value: string | null): string {
  if (value === null || !value.startsWith("/") || value.startsWith("//")) return "/";
  if (value.startsWith("/\\") || /^\/sign(in|up)([/?#]|$)/.test(value)) return "/";
  return value;
}

/**
 * Renders the current location. After a navigation (not the first load), focus moves to the
 * page's heading, so keyboard and screen reader users start at the new content.
 */
async function render(moveFocus: boolean): Promise<void> {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const main = document.getElementById("main") as HTMLElement;
  const { pathname, search } = window.location;
  let view = notFound;
  const params: Record<string, string> = {};
  for (const r of routes) {
    const match = r.pattern.exec(pathname);
    if (match === null) continue;
    r.names.forEach((name, i) => {
      params[name] = decodeURIComponent(match[i + 1] ?? "");
    });
    view = r.view;
    break;
  }
  main.replaceChildren();
  main.setAttribute("aria-busy", "true");
  for (const listener of listeners) listener();
  try {
    await view({ main, params, query: new URLSearchParams(search), signal: controller.signal });
  } catch (reason) {
    if (isAbort(reason, controller.signal)) return;
    main.replaceChildren(h("h1", null, "Something went wrong"), errorBox(describeError(reason)));
  } finally {
    if (current === controller) main.removeAttribute("aria-busy");
  }
  if (controller.signal.aborted) return;
  const heading = main.querySelector("h1");
  document.title = heading?.textContent ? `${heading.textContent} · meshmart` : "meshmart";
  if (moveFocus) {
    if (heading !== null) {
      heading.tabIndex = -1;
      heading.focus();
    } else {
      main.focus();
    }
  }
}

/** Starts routing: renders the current location and follows in-site links. */
export function startRouter(): void {
  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const link = (event.target as Element | null)?.closest("a");
    if (
      link === null ||
      link === undefined ||
      link.target !== "" ||
      link.hasAttribute("download")
    ) {
      return;
    }
    const url = new URL(link.href, window.location.href);
    if (url.origin !== window.location.origin || link.getAttribute("href")?.startsWith("#")) {
      return;
    }
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", () => void render(true));
  void render(false);
}
