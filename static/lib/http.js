// Talking to the REST API with the session cookie and the CSRF token, and turning its error
// bodies ({"code", "message", "field"} or DRF's {"detail"}) into words a person can read.

/** The token the page's <meta name="csrf-token"> carries ("" on a page without one). */
export function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content || "";
}

/** The server's words for a failed request's body, else `fallback`. */
export function problem(body, fallback) {
  if (body && typeof body === "object") {
    if (body.message || body.detail) return body.message || body.detail;
    if (Object.keys(body).length) return JSON.stringify(body);
  }
  return fallback;
}

function headers(json) {
  const out = { Accept: "application/json" };
  const token = csrfToken();
  if (token) out["X-CSRFToken"] = token;
  if (json) out["Content-Type"] = "application/json";
  return out;
}

/** A redirect to the login page means the session ended (signed out in another tab): go there. */
function signedOut(response) {
  if (!response.redirected || !new URL(response.url).pathname.startsWith("/login")) return false;
  window.location.assign(response.url);
  return true;
}

async function bodyOf(response) {
  try {
    return await response.json();
  } catch {
    return null; // not JSON
  }
}

/** Send a JSON request; resolves to the answer's JSON (null for a 204), throws with the server's words. */
export async function apiFetch(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: headers(body !== undefined),
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (signedOut(response)) throw new Error("Signed out.");
  if (!response.ok) {
    const data = await bodyOf(response);
    throw new Error(problem(data, `${response.status} ${response.statusText}`));
  }
  return response.status === 204 ? null : response.json();
}

export function getJSON(url) {
  return apiFetch("GET", url);
}

/**
 * Send a request and never throw: resolves to {ok, status, body, message}, so that a 400's
 * `field` can be shown where it belongs. `body` is JSON-encoded, or sent as is if it is FormData
 * (an upload). A server that does not answer gives status 0 and a message that says so.
 */
export async function send(method, url, body) {
  const form = body instanceof FormData;
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: headers(!form),
      body: form ? body : JSON.stringify(body ?? {}),
    });
  } catch (err) {
    const message = `The server did not answer (${err.message}); try again.`;
    return { ok: false, status: 0, body: { message }, message };
  }
  if (signedOut(response)) return { ok: false, status: 401, body: { message: "Signed out." }, message: "Signed out." };
  const data = await bodyOf(response);
  return { ok: response.ok, status: response.status, body: data, message: problem(data, `HTTP ${response.status}`) };
}

export function post(url, body) {
  return send("POST", url, body);
}
