// Passkeys (WebAuthn) on the hosted pages. Plain ES2020, no dependencies, no build step;
// the pages' CSP allows scripts from this origin only, so the page holds no inline script.
//
// What a page carries (see identity/web/passkeys.py for the endpoints):
//   <meta name="csrf-token" content="...">        sent back in the X-CSRF-Token header
//   <script src="/static/passkeys.js" defer></script>
//   <button type="button" data-passkey-register hidden>   adds a passkey (signed in); the
//     name comes from an <input data-passkey-name> in the same form or section
//   <button type="button" data-passkey-login hidden>      signs in with a passkey; add
//     data-passkey-second-factor for the step after a password, data-passkey-next="/path"
//     (or an <input name="next"> in its form) for where to go afterwards
//   <input autocomplete="username webauthn">             offers passkeys in the autofill
//     list (conditional UI) where the browser supports it
//   <p data-passkey-error role="alert" hidden></p>       where refusals are told
// Buttons rendered `hidden` are shown only where the browser can use passkeys.
"use strict";

(() => {
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  const MESSAGES = {
    NotAllowedError: "The passkey request was cancelled or timed out. Try again.",
    InvalidStateError: "This device already holds a passkey for your account.",
    SecurityError: "Passkeys cannot be used on this address.",
    NotSupportedError: "This browser or device cannot make a suitable passkey.",
  };
  let conditional = null; // the AbortController of the pending autofill request, if any

  class Refusal extends Error {}

  const toBuffer = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  };

  const toText = (buffer) => {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  const withIds = (list) => (list || []).map((entry) => ({ ...entry, id: toBuffer(entry.id) }));

  const creationOptions = (json) =>
    PublicKeyCredential.parseCreationOptionsFromJSON
      ? PublicKeyCredential.parseCreationOptionsFromJSON(json)
      : {
          ...json,
          challenge: toBuffer(json.challenge),
          user: { ...json.user, id: toBuffer(json.user.id) },
          excludeCredentials: withIds(json.excludeCredentials),
        };

  const requestOptions = (json) =>
    PublicKeyCredential.parseRequestOptionsFromJSON
      ? PublicKeyCredential.parseRequestOptionsFromJSON(json)
      : { ...json, challenge: toBuffer(json.challenge), allowCredentials: withIds(json.allowCredentials) };

  // The credential as JSON (WebAuthn Level 3's toJSON, or the same by hand where missing).
  const asJSON = (credential) => {
    if (typeof credential.toJSON === "function") return credential.toJSON();
    const answer = credential.response;
    const response = { clientDataJSON: toText(answer.clientDataJSON) };
    if (answer.attestationObject) {
      response.attestationObject = toText(answer.attestationObject);
      response.transports = typeof answer.getTransports === "function" ? answer.getTransports() : [];
    } else {
      response.authenticatorData = toText(answer.authenticatorData);
      response.signature = toText(answer.signature);
      if (answer.userHandle) response.userHandle = toText(answer.userHandle);
    }
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: {},
      response,
    };
  };

  const post = async (path, body) => {
    const token = document.querySelector('meta[name="csrf-token"]');
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token ? token.content : "" },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      // not JSON: an error page in front of us (a proxy, a 503); told below
    }
    if (!response.ok) throw new Refusal(data.message || "Something went wrong. Try again.");
    return data;
  };

  const scope = (element) => (element && element.closest("form, section, main")) || document;

  const tell = (element, error) => {
    const box = scope(element).querySelector("[data-passkey-error]") ||
      document.querySelector("[data-passkey-error]");
    if (!box) return;
    if (error && error.name === "AbortError") return; // replaced by another request
    box.textContent = error instanceof Refusal ? error.message
      : MESSAGES[error && error.name] || "The passkey could not be used. Try again.";
    box.hidden = false;
  };

  const quiet = (element) => {
    const box = scope(element).querySelector("[data-passkey-error]");
    if (box) box.hidden = true;
  };

  const go = (data) => {
    if (data && typeof data.redirect === "string" && data.redirect.startsWith("/")) {
      window.location.assign(data.redirect);
    } else {
      window.location.reload();
    }
  };

  const nextOf = (element) => {
    if (element && element.dataset.passkeyNext) return element.dataset.passkeyNext;
    const field = scope(element).querySelector('input[name="next"]');
    return field ? field.value : "";
  };

  const signIn = async (element, mediation) => {
    const secondFactor = Boolean(element && "passkeySecondFactor" in element.dataset);
    const options = await post("/passkeys/login/options", secondFactor ? { second_factor: true } : {});
    const request = { publicKey: requestOptions(options) };
    if (mediation) {
      conditional = new AbortController();
      request.mediation = mediation;
      request.signal = conditional.signal;
    }
    const credential = await navigator.credentials.get(request);
    go(await post("/passkeys/login", { credential: asJSON(credential), next: nextOf(element) }));
  };

  const register = async (element) => {
    const field = scope(element).querySelector("[data-passkey-name]");
    const options = await post("/passkeys/register/options", {});
    const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
    go(await post("/passkeys/register", {
      credential: asJSON(credential),
      name: field ? field.value : "",
      next: nextOf(element),
    }));
  };

  const wire = (selector, action) => {
    for (const button of document.querySelectorAll(selector)) {
      button.hidden = false;
      button.addEventListener("click", async (event) => {
        event.preventDefault();
        if (conditional) conditional.abort(); // one WebAuthn request at a time
        conditional = null;
        quiet(button);
        button.disabled = true;
        try {
          await action(button);
        } catch (error) {
          tell(button, error);
        } finally {
          button.disabled = false;
        }
      });
    }
  };

  wire("[data-passkey-register]", register);
  wire("[data-passkey-login]", signIn);

  // Conditional UI: the browser lists this site's passkeys in the username field's autofill.
  const field = document.querySelector('input[autocomplete~="webauthn"]');
  const check = PublicKeyCredential.isConditionalMediationAvailable;
  if (field && typeof check === "function") {
    check.call(PublicKeyCredential)
      .then((supported) => (supported ? signIn(field, "conditional") : null))
      .catch((error) => tell(field, error));
  }
})();
