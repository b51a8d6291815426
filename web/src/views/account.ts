/** Sign up and sign in; both end signed in, back where the reader was going. */
import { Code, ConnectError } from "@connectrpc/connect";
import { expiry, identity } from "../api.js";
import { h } from "../dom.js";
import { clearFormProblem, describeError, showFormProblem } from "../errors.js";
import { navigate, type Page, safeNext } from "../router.js";
import { getSession, setSession } from "../session.js";

/** A labelled input; `hint` is read with the input and stays linked when errors appear. */
function field(
  label: string,
  attrs: Record<string, string | boolean | number>,
  hint?: string,
): HTMLElement {
  const id = `f-${String(attrs.name).replaceAll(".", "-")}`;
  const hintId = `${id}-hint`;
  const input = h("input", {
    id,
    ...attrs,
    ...(hint === undefined ? {} : { "aria-describedby": hintId, "data-hint": hintId }),
  });
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint !== undefined && h("p", { class: "hint", id: hintId }, hint),
    input,
  );
}

async function signIn(email: string, password: string): Promise<void> {
  const res = await identity.login({ email, password });
  setSession({
    accessToken: res.accessToken,
    refreshToken: res.refreshToken,
    accessExpiresAt: expiry(res.accessTokenExpireTime, res.expiresIn),
    user: {
      id: res.user?.id ?? "",
      email: res.user?.email ?? email,
      displayName: res.user?.displayName ?? email,
    },
  });
}

/** Runs `action` for a form: button busy meanwhile, problems shown in the form. */
async function submitting(form: HTMLFormElement, action: () => Promise<void>): Promise<void> {
  const button = form.querySelector<HTMLButtonElement>("button[type=submit]");
  clearFormProblem(form);
  if (button !== null) button.disabled = true;
  form.setAttribute("aria-busy", "true");
  try {
    await action();
  } catch (reason) {
    showFormProblem(form, describeError(reason));
  } finally {
    if (button !== null) button.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

function values(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new FormData(form)) if (typeof v === "string") out[k] = v;
  return out;
}

/** What differs between the sign-in and sign-up pages. */
interface AccountForm {
  title: string;
  fields: HTMLElement[];
  submitLabel: string;
  /** Runs with the form's values; the page then goes to `next`. */
  submit(values: Record<string, string>): Promise<void>;
  /** The other page: "New here? Create an account." */
  other: { prompt: string; label: string; path: string };
}

/**
 * A page with one account form: skipped when already signed in, errors shown by the form
 * (see `submitting`), and on success back to the page that sent the visitor here.
 */
function accountPage({ main, query }: Page, spec: AccountForm): void {
  const next = safeNext(query.get("next"));
  if (getSession() !== undefined) {
    navigate(next, { replace: true });
    return;
  }
  const form = h(
    "form",
    {
      class: "stack narrow",
      onsubmit: (e: SubmitEvent) => {
        e.preventDefault();
        const v = values(form);
        void submitting(form, async () => {
          await spec.submit(v);
          navigate(next, { replace: true });
        });
      },
    },
    ...spec.fields,
    h("button", { type: "submit" }, spec.submitLabel),
  );
  main.replaceChildren(
    h("h1", null, spec.title),
    form,
    h(
      "p",
      null,
      `${spec.other.prompt} `,
      h("a", { href: `${spec.other.path}?next=${encodeURIComponent(next)}` }, spec.other.label),
      ".",
    ),
  );
}

/** `/signin?next=…` */
export function signInPage(page: Page): void {
  accountPage(page, {
    title: "Sign in",
    fields: [
      field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
      field("Password", {
        name: "password",
        type: "password",
        autocomplete: "current-password",
        required: true,
      }),
    ],
    submitLabel: "Sign in",
    submit: (v) => signIn(v.email ?? "", v.password ?? ""),
    other: { prompt: "New here?", label: "Create an account", path: "/signup" },
  });
}

/** `/signup?next=…` */
export function signUpPage(page: Page): void {
  accountPage(page, {
    title: "Create an account",
    fields: [
      field("Name", {
        name: "display_name",
        type: "text",
        autocomplete: "name",
        required: true,
        maxlength: 100,
      }),
      field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
      field(
        "Password",
        { name: "password", type: "password", autocomplete: "new-password", required: true },
        "At least 12 characters.",
      ),
    ],
    submitLabel: "Create account",
    async submit(v) {
      const email = v.email ?? "";
      const password = v.password ?? "";
      try {
        await identity.signUp({ email, password, displayName: v.display_name ?? "" });
      } catch (reason) {
        if (ConnectError.from(reason).code !== Code.AlreadyExists) throw reason;
        // Already registered (maybe this very request, retried): the password decides.
        await signIn(email, password).catch(() => {
          throw reason;
        });
        return;
      }
      await signIn(email, password);
    },
    other: { prompt: "Already have one?", label: "Sign in", path: "/signin" },
  });
}

/** Signs out: revokes the refresh token (best effort) and forgets the session. */
export async function signOut(): Promise<void> {
  const session = getSession();
  // Logout itself needs the access token, so the session goes only after it.
  if (session !== undefined) {
    await identity.logout({ refreshToken: session.refreshToken }).catch(() => {});
  }
  setSession(undefined);
  navigate("/");
}
