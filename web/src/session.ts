/**
 * The signed-in user's tokens, kept in localStorage so a reload or a second tab stays
 * signed in. Tabs hear each other's changes through the storage event.
 */

/** A signed-in session. */
export interface Session {
  accessToken: string;
  refreshToken: string;
  /** When the access token expires, ms since the epoch. */
  accessExpiresAt: number;
  user: { id: string; email: string; displayName: string };
}

const KEY = "meshmart.session.v1";
const listeners = new Set<() => void>();

function isSession(value: unknown): value is Session {
  if (typeof value !== "object" || value === null) return false;
  const s = value as Record<string, unknown>;
  const user = s.user as Record<string, unknown> | undefined;
  return (
    typeof s.accessToken === "string" &&
    typeof s.refreshToken === "string" &&
    typeof s.accessExpiresAt === "number" &&
    typeof user === "object" &&
    user !== null &&
    typeof user.id === "string" &&
    typeof user.email === "string" &&
    typeof user.displayName === "string"
  );
}

/** The current session, or undefined when signed out. */
export function getSession(): Session | undefined {
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem(KEY) ?? "null");
    return isSession(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** Stores (or, with undefined, forgets) the session and tells every listener. */
export function setSession(session: Session | undefined): void {
  if (session === undefined) localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, JSON.stringify(session));
  for (const listener of listeners) listener();
}

/** Calls `listener` whenever the session changes, in this tab or another. */
export function onSessionChange(listener: () => void): void {
  listeners.add(listener);
}

window.addEventListener("storage", (event) => {
  if (event.key !== KEY && event.key !== null) return;
  for (const listener of listeners) listener();
});
