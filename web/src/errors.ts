/**
 * API errors for people: the Connect error's own message (never a dump), plus the field
 * violations of an INVALID_ARGUMENT (buf.validate.Violations in the error details).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema } from "@meshmart/kit/gen/buf/validate/validate_pb.js";
import { h } from "./dom.js";

/** One bad field: its path as in the proto ("payment.card.number") and what is wrong. */
export interface FieldProblem {
  field: string;
  message: string;
}

/** What went wrong, ready to show. */
export interface Problem {
  code: Code;
  message: string;
  fields: FieldProblem[];
}

/** Messages for errors that arrive without one of their own. */
const FALLBACK: Partial<Record<Code, string>> = {
  [Code.Unauthenticated]: "Your session has ended. Please sign in again.",
  [Code.PermissionDenied]: "You are not allowed to do that.",
  [Code.ResourceExhausted]: "Too many requests. Please wait a moment and try again.",
  [Code.Unavailable]: "The store is unavailable right now. Please try again shortly.",
  [Code.DeadlineExceeded]: "The store took too long to answer. Please try again.",
};

/** The problem behind `reason`, from a Connect error or anything thrown. */
export function describeError(reason: unknown): Problem {
  const err = ConnectError.from(reason);
  // fetch() rejects with a TypeError when the edge is unreachable; its text is browser jargon.
  if (err.cause instanceof TypeError && err.code === Code.Unknown) {
    return {
      code: Code.Unavailable,
      message: "The store can't be reached right now. Check your connection and try again.",
      fields: [],
    };
  }
  const fields: FieldProblem[] = [];
  for (const detail of err.findDetails(ViolationsSchema)) {
    for (const v of detail.violations) {
      const field = (v.field?.elements ?? []).map((e) => e.fieldName).join(".");
      fields.push({ field, message: v.message });
    }
  }
  let message = err.rawMessage;
  if (fields.length > 0 && err.code === Code.InvalidArgument) {
    message = "Please correct the highlighted fields.";
  } else if (message === "" || /^HTTP \d{3}$/.test(message)) {
    // A bare HTTP status: the Connect streaming client drops the error body of a non-200.
    message = FALLBACK[err.code] ?? `The request failed (${Code[err.code] ?? "unknown error"}).`;
  }
  return { code: err.code, message, fields };
}

/** Whether `reason` is the abort of a call this page no longer wants (navigation). */
export function isAbort(reason: unknown, signal: AbortSignal): boolean {
  return signal.aborted || ConnectError.from(reason).code === Code.Canceled;
}

/** An alert box with the message and each field's problem. */
export function errorBox(problem: Problem): HTMLElement {
  return h(
    "div",
    { class: "alert", role: "alert" },
    h("p", null, problem.message),
    problem.fields.length > 0 &&
      h(
        "ul",
        null,
        problem.fields.map((f) =>
          h("li", null, f.field === "" ? f.message : `${label(f.field)}: ${f.message}`),
        ),
      ),
  );
}

/** "payment.card.exp_month" → "exp month": the leaf, readable. */
function label(field: string): string {
  return (field.split(".").at(-1) ?? field).replaceAll("_", " ");
}

/**
 * Shows `problem` in `form`: an alert at the top, and on each input named after a violated
 * field, aria-invalid plus its message linked with aria-describedby. Focus moves to the
 * first bad input, or to the alert.
 */
export function showFormProblem(form: HTMLFormElement, problem: Problem): void {
  clearFormProblem(form);
  const box = errorBox(problem);
  box.classList.add("form-alert");
  box.tabIndex = -1;
  form.prepend(box);
  let first: HTMLElement | undefined;
  for (const f of problem.fields) {
    const input = form.querySelector<HTMLInputElement>(`[name="${CSS.escape(f.field)}"]`);
    if (input === null) continue;
    const id = `${input.id}-error`;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", [input.dataset.hint, id].filter(Boolean).join(" "));
    input.after(h("p", { class: "field-error", id }, f.message));
    first ??= input;
  }
  (first ?? box).focus();
}

/** Removes what {@link showFormProblem} added. */
export function clearFormProblem(form: HTMLFormElement): void {
  for (const el of form.querySelectorAll(".form-alert, .field-error")) el.remove();
  for (const input of form.querySelectorAll<HTMLElement>("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    const hint = input.dataset.hint;
    if (hint === undefined) input.removeAttribute("aria-describedby");
    else input.setAttribute("aria-describedby", hint);
  }
}
