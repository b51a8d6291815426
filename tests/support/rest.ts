/** A REST body, read field by field by the tests. */
export interface Json {
  // biome-ignore lint/suspicious/noExplicitAny: REST bodies are checked field by field.
  [key: string]: any;
}

/** A REST call through the edge: JSON in and out, a bearer token when given. */
export type RestCall = (
  method: string,
  path: string,
  body?: unknown,
  token?: string,
) => Promise<Json>;

/**
 * Calls against the edge at `baseUrl()` (read at each call, so a suite can create the
 * client before its mesh is up). A non-2xx answer throws with its status and body.
 */
export function createRestCall(baseUrl: () => string): RestCall {
  return async (method, path, body, token) => {
    const res = await fetch(`${baseUrl()}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = (await res.json()) as Json;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
}
