// The reviewer console (docs/console.md): sign-in, the reviewer's claim–label
// loop, the adjudicator's tied cases and the admin dashboard, over the public
// API only (so the API's role checks are the console's).
//
// Safety rules this file keeps:
// - every value from the server is placed with textContent or setAttribute on
//   a fixed attribute name, never parsed as markup, so a hostile request id or class
//   name stays text;
// - the bearer token lives in sessionStorage (this tab only, gone when it
//   closes), is sent only in the Authorization header, never in a URL;
// - no inline script or style: the page runs under a strict CSP.
//
// Test contract (acceptance checks drive the page by these; keep them stable):
// input[name=token], [data-action=sign-in], [data-action=claim],
// img[data-role=case-image], [data-role=case-features], [data-label=K],
// [data-role=suggestion], [data-role=status], [data-action=dashboard],
// [data-metric=pending|resolved|automation-rate].
"use strict";

(() => {
  const SESSION_KEY = "triaged.console.session";
  const CASE_KEY = "triaged.console.case";
  // Seconds after the last keypress or pointer move during which the page counts
  // as worked on, so its lease is renewed; a reviewer who walked away lets it lapse.
  const ACTIVE_WINDOW_S = 300;
  // How long the answer of a labeled case stays up before the next case loads.
  const REVEAL_MS = 1500;
  const DASHBOARD_REFRESH_MS = 5000;

  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const statusLine = document.querySelector("[data-role=status]");

  const state = {
    settings: { auth: "tokens", show_suggestion: false, lease_seconds: 600 },
    session: null, // {token} or {subject}
    me: null, // {subject, role}
    view: null,
    review: null, // the case in hand: {claim, labeled, outcome, imageUrl}
    serverOffsetMs: 0, // server clock minus this clock, from the Date header
    lastActivity: Date.now(),
    timers: { lease: null, reveal: null, dashboard: null },
    pendingHistory: [], // [{t, pending}] for the dashboard's live plot
    busy: false,
  };

  // ---------- DOM helpers: text only ----------

  /** An element with attributes and children; strings become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k === "on") {
        for (const [event, fn] of Object.entries(v)) el.addEventListener(event, fn);
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function say(text) {
    statusLine.textContent = text;
  }

  function fmt(x, digits = 2) {
    return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
  }

  function pct(x) {
    return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.floor(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function authHeaders() {
    const headers = {};
    if (state.session && state.session.token) headers.Authorization = `Bearer ${state.session.token}`;
    if (state.session && state.session.subject) headers["X-Triaged-Subject"] = state.session.subject;
    return headers;
  }

  /** Calls the API; returns the Response for a 2xx, throws ApiError otherwise. */
  async function call(path, { method = "GET", body, keepalive = false } = {}) {
    const headers = authHeaders();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        keepalive,
      });
    } catch (e) {
      throw new ApiError(0, `the server cannot be reached (${e.message})`);
    }
    const date = Date.parse(resp.headers.get("Date") || "");
    if (!Number.isNaN(date)) state.serverOffsetMs = date - Date.now();
    if (!resp.ok) {
      let detail = resp.statusText;
      try {
        const problem = await resp.json();
        if (problem && problem.detail) detail = problem.detail;
      } catch (_) {
        /* not a problem document: keep the status text */
      }
      throw new ApiError(resp.status, detail);
    }
    return resp;
  }

  async function json(path, options) {
    const resp = await call(path, options);
    return resp.status === 204 ? null : resp.json();
  }

  function describeError(e) {
    if (!(e instanceof ApiError)) return String(e);
    if (e.status === 401) return `Not signed in: ${e.message}`;
    if (e.status === 403) return `Not allowed: ${e.message}`;
    if (e.status === 503) return `The server is busy or the queue is unavailable; try again (${e.message})`;
    return e.status ? `${e.message} (HTTP ${e.status})` : e.message;
  }

  // ---------- session ----------

  function loadSession() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch (_) {
      return null;
    }
  }

  function saveSession(session) {
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
  }

  async function start() {
    try {
      state.settings = await json("/v1/console/settings");
    } catch (e) {
      say(`Could not read the console settings: ${describeError(e)}`);
    }
    const saved = loadSession();
    if (saved) {
      state.session = saved;
      try {
        await enter();
        return;
      } catch (_) {
        saveSession(null);
        state.session = null;
      }
    }
    renderSignIn();
  }

  function renderSignIn() {
    state.me = null;
    nav.replaceChildren();
    who.replaceChildren();
    stopTimers();
    const open = state.settings.auth === "open";
    const field = open
      ? [
          h("label", { for: "subject" }, "Your name"),
          h("input", { id: "subject", name: "subject", type: "text", autocomplete: "username", required: true, maxlength: 200 }),
          h("p", { class: "hint" }, "This server has no tokens (loopback only): your name is sent as X-Triaged-Subject and recorded with your labels."),
        ]
      : [
          h("label", { for: "token" }, "Bearer token"),
          h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" }),
          h("p", { class: "hint" }, "Kept in this tab only (sessionStorage) and sent as an Authorization header."),
        ];
    const form = h(
      "form",
      { class: "card sign-in", "aria-labelledby": "sign-in-title", on: { submit: onSignIn } },
      h("h2", { id: "sign-in-title" }, "Sign in"),
      field,
      h("button", { type: "submit", class: "primary", "data-action": "sign-in" }, "Sign in"),
    );
    main.replaceChildren(form);
    form.querySelector("input").focus();
  }

  async function onSignIn(event) {
    event.preventDefault();
    const input = event.target.querySelector("input");
    const value = input.value.trim();
    if (!value) {
      say("Enter your token first.");
      return;
    }
    state.session = state.settings.auth === "open" ? { subject: value } : { token: value };
    try {
      await enter();
      saveSession(state.session);
    } catch (e) {
      state.session = null;
      say(e instanceof ApiError && e.status === 401 ? "That token is not recognised." : describeError(e));
    }
  }

  /** Learns who the caller is and opens the views of that role. */
  async function enter() {
    state.me = await json("/v1/me");
    const role = state.me.role;
    const views = [];
    if (role === "reviewer" || role === "admin") views.push(["review", "Review"]);
    if (role === "adjudicator" || role === "admin") views.push(["adjudicate", "Adjudicate"]);
    if (role === "admin") views.push(["dashboard", "Dashboard"]);
    nav.replaceChildren(
      ...views.map(([name, title]) =>
        h("button", { type: "button", "data-action": name, "aria-pressed": "false", on: { click: () => show(name) } }, title),
      ),
    );
    who.replaceChildren(
      h("span", { class: "who-name" }, state.me.subject),
      h("span", { class: "who-role" }, role),
      h("button", { type: "button", "data-action": "sign-out", on: { click: signOut } }, "Sign out"),
    );
    say(`Signed in as ${state.me.subject} (${role}).`);
    if (!views.length) {
      main.replaceChildren(h("div", { class: "card" }, h("p", {}, `The role '${role}' has no console views: it sends cases to triage.`)));
      return;
    }
    await resumeCase();
    show(state.review ? "review" : views[0][0]);
  }

  async function signOut() {
    if (state.review && !state.review.labeled) {
      try {
        await call(`/v1/reviews/${encodeURIComponent(state.review.claim.case.id)}/release`, { method: "POST", body: {} });
      } catch (_) {
        /* the lease lapses by itself */
      }
    }
    forgetCase();
    saveSession(null);
    state.session = null;
    renderSignIn();
    say("Signed out.");
  }

  function show(view) {
    state.view = view;
    for (const b of nav.querySelectorAll("button")) {
      b.setAttribute("aria-pressed", b.dataset.action === view ? "true" : "false");
    }
    clearInterval(state.timers.dashboard);
    state.timers.dashboard = null;
    if (view === "review") renderReview();
    if (view === "adjudicate") renderAdjudication();
    if (view === "dashboard") renderDashboard();
  }

  function stopTimers() {
    clearInterval(state.timers.lease);
    clearTimeout(state.timers.reveal);
    clearInterval(state.timers.dashboard);
    state.timers = { lease: null, reveal: null, dashboard: null };
  }

  // ---------- reviewer: claim, look, label ----------

  /** After a reload, picks the claimed case up again (renewing proves the lease is still ours). */
  async function resumeCase() {
    const id = sessionStorage.getItem(CASE_KEY);
    if (!id || !state.me || !["reviewer", "admin"].includes(state.me.role)) return;
    try {
      const lease = await json(`/v1/reviews/${encodeURIComponent(id)}/renew`, { method: "POST", body: {} });
      const c = await json(`/v1/reviews/${encodeURIComponent(id)}`);
      state.review = { claim: { case: c, lease }, labeled: false, outcome: null, imageUrl: null };
    } catch (_) {
      sessionStorage.removeItem(CASE_KEY);
    }
  }

  function forgetCase() {
    clearInterval(state.timers.lease);
    clearTimeout(state.timers.reveal);
    state.timers.lease = null;
    state.timers.reveal = null;
    if (state.review && state.review.imageUrl) URL.revokeObjectURL(state.review.imageUrl);
    state.review = null;
    sessionStorage.removeItem(CASE_KEY);
  }

  function renderReview() {
    const toolbar = h(
      "div",
      { class: "toolbar" },
      h("button", { type: "button", class: "primary", "data-action": "claim", "aria-keyshortcuts": "N", on: { click: claimNext } }, "Claim next case ", h("kbd", {}, "N")),
      h("button", { type: "button", "data-action": "release", "aria-keyshortcuts": "S", on: { click: release } }, "Skip / release ", h("kbd", {}, "S")),
      h("span", { class: "lease", "data-role": "lease", "aria-live": "off" }),
    );
    const area = h("div", { class: "case-area", id: "case-area" });
    main.replaceChildren(h("section", { class: "review", "aria-label": "Review" }, toolbar, area));
    renderCase();
  }

  function caseArea() {
    return document.getElementById("case-area");
  }

  async function claimNext() {
    if (state.busy) return;
    if (state.review && !state.review.labeled) {
      say("Label or release the case in hand first.");
      return;
    }
    state.busy = true;
    try {
      forgetCase();
      const claim = await json("/v1/reviews/claim", { method: "POST", body: {} });
      if (!claim) {
        renderCase();
        say("No case is waiting for you now.");
        return;
      }
      state.review = { claim, labeled: false, outcome: null, imageUrl: null };
      sessionStorage.setItem(CASE_KEY, claim.case.id);
      renderCase();
      say(`Claimed case ${claim.case.id}.`);
    } catch (e) {
      say(`Claim failed: ${describeError(e)}`);
    } finally {
      state.busy = false;
    }
  }

  async function release() {
    if (!state.review || state.review.labeled) {
      say("No claimed case to release.");
      return;
    }
    const id = state.review.claim.case.id;
    try {
      await call(`/v1/reviews/${encodeURIComponent(id)}/release`, { method: "POST", body: {} });
      forgetCase();
      renderCase();
      say(`Released case ${id} back to the queue.`);
    } catch (e) {
      say(`Release failed: ${describeError(e)}`);
    }
  }

  function renderCase() {
    const area = caseArea();
    if (!area) return;
    clearInterval(state.timers.lease);
    state.timers.lease = null;
    const r = state.review;
    if (!r) {
      leaseText("");
      area.replaceChildren(
        h("div", { class: "card empty" }, h("p", {}, "No case in hand. Claim the next one (N)."), h("p", { class: "hint" }, "Shortcuts: 1–9 and 0 label, S releases, N claims.")),
      );
      return;
    }
    const c = r.claim.case;
    const classes = c.class_names.length ? c.class_names : (c.probabilities || []).map((_, i) => `class ${i}`);
    // A blind claim (the API withholds the suggestion and the queue's counts
    // until you answer) has no label counts; the outcome of your label does.
    const counts = r.outcome || (c.blind ? null : c);
    const meta = h(
      "dl",
      { class: "meta" },
      h("dt", {}, "Case"), h("dd", { "data-role": "case-id" }, c.id),
      h("dt", {}, "Model"), h("dd", {}, `${c.model} v${c.model_version}`),
      c.request_id ? [h("dt", {}, "Request"), h("dd", { "data-role": "request-id" }, c.request_id)] : null,
      h("dt", {}, "Instance"), h("dd", {}, String(c.instance_index)),
      counts ? [h("dt", {}, "Labels"), h("dd", {}, `${counts.labels} of ${counts.reviewers_needed}`)] : null,
      c.audit ? [h("dt", {}, "Audit"), h("dd", {}, "an automated case sampled for audit")] : null,
    );
    const view = c.feature_names.length ? featureTable(c) : caseImage(c);
    const buttons = h(
      "div",
      { class: "labels", role: "group", "aria-label": "Label this case" },
      classes.map((name, k) => {
        const key = k < 9 ? String(k + 1) : k === 9 ? "0" : null;
        const mine = r.outcome && r.outcome.label === k;
        return h(
          "button",
          {
            type: "button",
            class: mine ? "label mine" : "label",
            "data-label": k,
            "aria-keyshortcuts": key,
            "aria-label": key ? `${name} (key ${key})` : name,
            disabled: r.labeled,
            on: { click: () => submitLabel(k) },
          },
          key ? h("kbd", {}, key) : null,
          h("span", { class: "label-name" }, name),
        );
      }),
    );
    const blind = !state.settings.show_suggestion && !r.labeled;
    // The case on the left, what to do with it on the right: at 1280×800 the
    // image and every label button are in view together.
    area.replaceChildren(
      h("div", { class: "card case-view" }, view),
      h(
        "div",
        { class: "side" },
        h("div", { class: "card case" }, meta, buttons),
        blind ? h("p", { class: "hint blind" }, "Blind review: the model's answer appears after you label.") : suggestion(c, classes, r),
      ),
    );
    if (!r.labeled) {
      tickLease();
      state.timers.lease = setInterval(tickLease, 1000);
    } else {
      leaseText("");
    }
  }

  function featureTable(c) {
    return h(
      "table",
      { class: "features", "data-role": "case-features" },
      h("caption", {}, "The model's input features"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Feature"), h("th", { scope: "col", class: "num" }, "Value"))),
      h(
        "tbody",
        {},
        c.feature_names.map((name, i) =>
          h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, c.input[i] === undefined ? "–" : String(c.input[i]))),
        ),
      ),
    );
  }

  function caseImage(c) {
    const r = state.review;
    const img = h("img", { "data-role": "case-image", class: "case-image", alt: `The image of case ${c.id}, as the model saw it` });
    const frame = h("figure", { class: "image-frame" }, img, h("figcaption", { class: "hint" }, "Scaled up without smoothing: each square is one of the model's pixels."));
    img.addEventListener("load", () => {
      // An integer scale keeps every pixel the same size.
      const scale = Math.max(1, Math.floor(Math.min(384, frame.clientWidth || 384) / img.naturalWidth));
      img.style.width = `${img.naturalWidth * scale}px`;
    });
    if (r.imageUrl) {
      img.src = r.imageUrl;
    } else {
      // The image needs the bearer header, so it is fetched here and shown as a blob.
      call(`/v1/reviews/${encodeURIComponent(c.id)}/image`)
        .then((resp) => resp.blob())
        .then((blob) => {
          if (state.review !== r) return;
          r.imageUrl = URL.createObjectURL(blob);
          img.src = r.imageUrl;
        })
        .catch((e) => say(`The image could not be loaded: ${describeError(e)}`));
    }
    return frame;
  }

  function suggestion(c, classes, r) {
    if (c.blind) {
      return h("p", { class: "hint blind" }, "The model's answer could not be loaded.");
    }
    const u = c.uncertainty || {};
    const p = c.probabilities[c.model_class];
    const rows = [
      ["Model's class", `${classes[c.model_class]} (p = ${fmt(p)})`],
      ["Predicted disagreement D̂", fmt(u.disagreement)],
      u.human_error !== undefined ? ["Predicted human error ĥ", fmt(u.human_error)] : null,
      ["Policy's reason", c.reason],
    ];
    if (r.outcome) {
      rows.push(["Your label", classes[r.outcome.label]]);
      rows.push([
        "Case",
        r.outcome.status === "resolved"
          ? `resolved as ${classes[r.outcome.consensus]}${r.outcome.disagreement !== undefined ? `, D = ${fmt(r.outcome.disagreement)}` : ""}`
          : `${r.outcome.status}: ${r.outcome.labels} of ${r.outcome.reviewers_needed} labels`,
      ]);
    }
    const box = h(
      "aside",
      { class: "card suggestion", "data-role": "suggestion", "aria-label": "The model's suggestion" },
      h("h2", {}, r.labeled ? "What the model said" : "The model's suggestion"),
      h("dl", { class: "meta" }, rows.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    );
    if (r.labeled) {
      box.append(h("button", { type: "button", class: "primary", "data-action": "next", on: { click: nextAfterReveal } }, "Next case ", h("kbd", {}, "Enter")));
    }
    return box;
  }

  async function submitLabel(k) {
    const r = state.review;
    if (!r || r.labeled || state.busy) return;
    const c = r.claim.case;
    if (k >= c.class_names.length) return;
    state.busy = true;
    try {
      const outcome = await json(`/v1/reviews/${encodeURIComponent(c.id)}/labels`, { method: "POST", body: { label: k } });
      r.labeled = true;
      r.outcome = outcome;
      if (c.blind) {
        // Answered: the API now shows the whole case, the model's suggestion included.
        try {
          r.claim.case = await json(`/v1/reviews/${encodeURIComponent(c.id)}`);
        } catch (e) {
          say(`The model's answer could not be loaded: ${describeError(e)}`);
        }
      }
      sessionStorage.removeItem(CASE_KEY);
      renderCase();
      const name = c.class_names[k] || `class ${k}`;
      say(
        outcome.status === "resolved"
          ? `Labeled case ${c.id} as ${name}; the case is resolved. Next case follows.`
          : `Labeled case ${c.id} as ${name} (${outcome.labels} of ${outcome.reviewers_needed} labels). Next case follows.`,
      );
      // Leave the model's answer up for a moment, then go on.
      state.timers.reveal = setTimeout(nextAfterReveal, REVEAL_MS);
    } catch (e) {
      say(`Label not recorded: ${describeError(e)}`);
    } finally {
      state.busy = false;
    }
  }

  function nextAfterReveal() {
    clearTimeout(state.timers.reveal);
    state.timers.reveal = null;
    if (state.view === "review" && state.review && state.review.labeled) claimNext();
  }

  function leaseText(text) {
    const el = document.querySelector("[data-role=lease]");
    if (el) el.textContent = text;
  }

  /** Counts the lease down and renews it while the reviewer is at the page. */
  async function tickLease() {
    const r = state.review;
    if (!r || r.labeled) return;
    const now = Date.now() + state.serverOffsetMs;
    // The Date header has whole seconds: never show more than a full lease.
    const left = Math.min((r.claim.lease.expires_at - now) / 1000, state.settings.lease_seconds);
    if (left <= 0) {
      const id = r.claim.case.id;
      forgetCase();
      renderCase();
      say(`Your lease on case ${id} expired; it went back to the queue.`);
      return;
    }
    const m = Math.floor(left / 60);
    const s = Math.floor(left % 60);
    leaseText(`Lease ${m}:${String(s).padStart(2, "0")}`);
    const renewAt = Math.max(30, state.settings.lease_seconds / 3);
    const active = document.visibilityState === "visible" && Date.now() - state.lastActivity < ACTIVE_WINDOW_S * 1000;
    if (left < renewAt && active && !r.renewing) {
      r.renewing = true;
      try {
        r.claim.lease = await json(`/v1/reviews/${encodeURIComponent(r.claim.case.id)}/renew`, { method: "POST", body: {} });
      } catch (e) {
        say(`Lease renewal failed: ${describeError(e)}`);
      } finally {
        r.renewing = false;
      }
    }
  }

  // ---------- adjudicator ----------

  async function renderAdjudication() {
    const list = h("div", { class: "tied-list" });
    main.replaceChildren(
      h(
        "section",
        { class: "adjudicate", "aria-label": "Adjudication" },
        h("div", { class: "toolbar" }, h("h2", {}, "Tied cases"), h("button", { type: "button", "data-action": "refresh", on: { click: renderAdjudication } }, "Refresh")),
        list,
      ),
    );
    let tied;
    try {
      tied = await json("/v1/reviews/adjudication");
    } catch (e) {
      say(`Could not list tied cases: ${describeError(e)}`);
      return;
    }
    if (!tied.length) {
      list.append(h("p", { class: "card empty" }, "No case is waiting for an adjudicator."));
      say("No tied cases.");
      return;
    }
    for (const t of tied) list.append(tiedCard(t));
    say(`${tied.length} tied case(s) wait for an adjudicator.`);
  }

  function tiedCard(t) {
    const c = t.case;
    const classes = c.class_names;
    const votes = new Map();
    for (const l of t.labels) votes.set(l.label, (votes.get(l.label) || 0) + 1);
    const card = h(
      "article",
      { class: "card tied", "data-case": c.id, "aria-label": `Tied case ${c.id}` },
      h("h3", {}, h("span", { class: "mono" }, c.id), " · ", `${c.model} v${c.model_version}`),
      h(
        "table",
        { class: "reviewer-labels", "data-role": "reviewer-labels" },
        h("caption", {}, "Every reviewer's label"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Reviewer"), h("th", { scope: "col" }, "Label"))),
        h("tbody", {}, t.labels.map((l) => h("tr", {}, h("th", { scope: "row" }, l.reviewer), h("td", {}, classes[l.label] || String(l.label))))),
      ),
    );
    card.append(c.feature_names.length ? featureTableFor(c) : adjudicationImage(c));
    const details = h(
      "details",
      { class: "model-answer", open: state.settings.show_suggestion },
      h("summary", {}, "The model's answer"),
      h("p", {}, `${classes[c.model_class]} (p = ${fmt(c.probabilities[c.model_class])}), D̂ = ${fmt((c.uncertainty || {}).disagreement)}; ${c.reason}`),
    );
    card.append(
      h(
        "div",
        { class: "labels resolve", role: "group", "aria-label": `Resolve case ${c.id} as` },
        classes.map((name, k) =>
          h(
            "button",
            { type: "button", class: votes.has(k) ? "label voted" : "label", "data-adjudicate": k, on: { click: () => adjudicate(c, k, card) } },
            h("span", { class: "label-name" }, name),
            votes.has(k) ? h("span", { class: "votes" }, ` ${votes.get(k)} vote(s)`) : null,
          ),
        ),
      ),
      details,
    );
    return card;
  }

  function featureTableFor(c) {
    const t = featureTable(c);
    t.removeAttribute("data-role");
    return t;
  }

  /**
   * The tied case's image, drawn from the pixels the listing already carries
   * (row-major, interleaved channels, 0–255: what /image would encode), so an
   * adjudicator sees it without a role to read /v1/reviews/{id}/image.
   * Square images with one or three channels; anything else says so.
   */
  function adjudicationImage(c) {
    const n = c.input.length;
    const channels = Number.isInteger(Math.sqrt(n / 3)) ? 3 : Number.isInteger(Math.sqrt(n)) ? 1 : 0;
    if (!channels || !n) return h("p", { class: "hint" }, "This case's image cannot be shown here.");
    const side = Math.sqrt(n / channels);
    const canvas = document.createElement("canvas");
    canvas.width = side;
    canvas.height = side;
    const ctx = canvas.getContext("2d");
    const data = ctx.createImageData(side, side);
    for (let i = 0; i < side * side; i++) {
      for (let ch = 0; ch < 3; ch++) data.data[4 * i + ch] = c.input[channels * i + (channels === 3 ? ch : 0)];
      data.data[4 * i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    const img = h("img", { class: "case-image small", "data-role": "tied-image", alt: `The image of case ${c.id}, as the model saw it` });
    canvas.toBlob((blob) => {
      if (!blob) return;
      img.src = URL.createObjectURL(blob);
      img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    }, "image/png");
    return h("figure", { class: "image-frame" }, img);
  }

  async function adjudicate(c, k, card) {
    try {
      const outcome = await json(`/v1/reviews/${encodeURIComponent(c.id)}/adjudicate`, { method: "POST", body: { label: k } });
      card.replaceWith(h("p", { class: "card done" }, `Case ${c.id} resolved as ${c.class_names[outcome.consensus] || outcome.consensus}.`));
      say(`Adjudicated case ${c.id} as ${c.class_names[k]}.`);
    } catch (e) {
      say(`Adjudication failed: ${describeError(e)}`);
    }
  }

  // ---------- admin dashboard ----------

  async function renderDashboard() {
    const body = h("div", { class: "dashboard-body" });
    main.replaceChildren(
      h(
        "section",
        { class: "dashboard", "aria-label": "Dashboard" },
        h("div", { class: "toolbar" }, h("h2", {}, "Queue and reviewers"), h("span", { class: "hint", "data-role": "refreshed" })),
        body,
      ),
    );
    await refreshDashboard(body);
    state.timers.dashboard = setInterval(() => {
      if (document.visibilityState === "visible" && state.view === "dashboard") refreshDashboard(body);
    }, DASHBOARD_REFRESH_MS);
  }

  /** The automate/review counts from Prometheus' counter triaged_decisions_total. */
  function decisionsFromMetrics(text) {
    const counts = { automate: 0, review: 0 };
    for (const line of text.split("\n")) {
      if (!line.startsWith("triaged_decisions_total{")) continue;
      const route = /route="([^"]*)"/.exec(line);
      const value = Number(line.slice(line.lastIndexOf(" ") + 1));
      if (route && route[1] in counts && Number.isFinite(value)) counts[route[1]] += value;
    }
    return counts;
  }

  async function refreshDashboard(body) {
    let stats, reviewers, models, decisions;
    try {
      [stats, reviewers, models, decisions] = await Promise.all([
        json("/v1/reviews/stats"),
        json("/v1/reviews/reviewers"),
        json("/v1/models"),
        call("/metrics").then((r) => r.text()).then(decisionsFromMetrics),
      ]);
    } catch (e) {
      say(`Dashboard not refreshed: ${describeError(e)}`);
      return;
    }
    const agreements = await Promise.all(
      models.models.map((m) => json(`/v1/reviews/agreement?model=${encodeURIComponent(m.name)}`).catch(() => null)),
    );
    if (state.view !== "dashboard") return;
    const by = stats.by_status;
    state.pendingHistory.push({ t: Date.now(), pending: by.pending || 0 });
    if (state.pendingHistory.length > 120) state.pendingHistory.shift();
    const decided = decisions.automate + decisions.review;
    const rate = decided ? decisions.automate / decided : 0;
    const totalLabels = reviewers.reduce((s, r) => s + r.labels, 0);

    const tiles = h(
      "div",
      { class: "tiles" },
      tile("pending", by.pending || 0, "pending"),
      tile("resolved", by.resolved || 0, "resolved"),
      tile("adjudication", by.adjudication || 0, "waiting for an adjudicator"),
      tile("dead-letter", by.dead_letter || 0, "dead letter"),
      tile("leased", stats.leased, "under a live lease"),
      tile("oldest-pending", duration(stats.oldest_pending_seconds), "oldest pending case's age"),
      tile("automation-rate", fmt(rate, 3), `automated: ${decisions.automate} of ${decided} decisions since the server started`),
      tile("labels", totalLabels, "labels given"),
    );
    const queuePlot = h(
      "figure",
      { class: "card plot" },
      h("figcaption", {}, "Queue depth by status"),
      barChart([
        ["pending", by.pending || 0],
        ["resolved", by.resolved || 0],
        ["adjudication", by.adjudication || 0],
        ["dead letter", by.dead_letter || 0],
      ]),
    );
    const trend = h("figure", { class: "card plot" }, h("figcaption", {}, "Pending cases while this page is open"), lineChart(state.pendingHistory));
    const reviewerTable = h(
      "table",
      { class: "reviewers", "data-role": "reviewers" },
      h("caption", {}, "Reviewers: labels and agreement with the consensus of resolved cases"),
      h(
        "thead",
        {},
        h("tr", {}, ["Reviewer", "Labels", "On resolved cases", "Agreed", "Agreement"].map((t, i) => h("th", { scope: "col", class: i ? "num" : null }, t))),
      ),
      h(
        "tbody",
        {},
        reviewers.length
          ? reviewers.map((r) =>
              h(
                "tr",
                {},
                h("th", { scope: "row" }, r.reviewer),
                h("td", { class: "num" }, String(r.labels)),
                h("td", { class: "num" }, String(r.resolved)),
                h("td", { class: "num" }, String(r.agreed)),
                h("td", { class: "num" }, meter(r.agreement), " ", pct(r.agreement)),
              ),
            )
          : h("tr", {}, h("td", { colspan: 5 }, "No labels yet.")),
      ),
    );
    const modelCards = models.models.map((m, i) => modelCard(m, agreements[i]));
    body.replaceChildren(tiles, h("div", { class: "plots" }, queuePlot, trend), h("div", { class: "card" }, reviewerTable), h("div", { class: "models" }, modelCards));
    const refreshed = document.querySelector("[data-role=refreshed]");
    if (refreshed) refreshed.textContent = `refreshed ${new Date().toLocaleTimeString()} · every ${DASHBOARD_REFRESH_MS / 1000} s`;
    say(`Dashboard: ${by.pending || 0} pending, ${by.resolved || 0} resolved.`);
  }

  /** A number tile: the element with data-metric holds only the number. */
  function tile(name, value, caption) {
    return h("div", { class: "tile" }, h("span", { class: "tile-value", "data-metric": name }, String(value)), h("span", { class: "tile-caption" }, caption));
  }

  function meter(x) {
    return h("meter", { min: 0, max: 1, value: x === null || x === undefined ? 0 : x, "aria-label": "agreement" });
  }

  function modelCard(m, agreement) {
    const a = m.audit || {};
    const rows = [
      ["Version in service", m.version],
      ["Policy", `${m.policy.name} (${m.policy.version})`],
    ];
    if (agreement) {
      rows.push(["Resolved cases compared", String(agreement.n)]);
      rows.push([
        "Model agrees with the reviewers' consensus",
        agreement.model_accuracy === null || agreement.model_accuracy === undefined
          ? "–"
          : `${pct(agreement.model_accuracy)} (95 % CI ${pct(agreement.model_accuracy_lower)}–${pct(agreement.model_accuracy_upper)})`,
      ]);
      rows.push(["Mean reviewer disagreement", fmt(agreement.mean_reviewer_disagreement)]);
    }
    rows.push(["Audited automated cases", `${a.audited ?? 0} (${a.errors ?? 0} wrong)`]);
    rows.push(["Automated error, anytime-valid bounds", `${fmt(a.lower, 3)} – ${fmt(a.upper, 3)} against α = ${fmt(a.alpha, 3)}`]);
    rows.push(["Fallback to review-all", a.fallback ? `YES: ${a.fallback_reason || "audits showed the error above α"}` : "no"]);
    return h(
      "article",
      { class: a.fallback ? "card model fallback" : "card model", "data-model": m.name, "aria-label": `Model ${m.name}` },
      h("h3", {}, m.name),
      h("dl", { class: "meta" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      boundsChart(a),
    );
  }

  // ---------- plots (SVG built with DOM calls) ----------

  function barChart(bars) {
    const W = 360, H = 170, pad = 26;
    const max = Math.max(1, ...bars.map(([, v]) => v));
    const bw = (W - 2 * pad) / bars.length;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": bars.map(([k, v]) => `${k} ${v}`).join(", ") });
    chart.append(svg("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" }));
    bars.forEach(([name, v], i) => {
      const bh = ((H - 2 * pad) * v) / max;
      const x = pad + i * bw + bw * 0.15;
      chart.append(svg("rect", { x, y: H - pad - bh, width: bw * 0.7, height: bh, class: `bar bar-${i}` }));
      chart.append(svg("text", { x: x + bw * 0.35, y: H - pad - bh - 4, "text-anchor": "middle", class: "value" }, String(v)));
      chart.append(svg("text", { x: x + bw * 0.35, y: H - 8, "text-anchor": "middle", class: "tick" }, name));
    });
    return chart;
  }

  function lineChart(points) {
    const W = 360, H = 170, pad = 26;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": `pending cases over time, now ${points.length ? points[points.length - 1].pending : 0}` });
    chart.append(svg("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" }));
    chart.append(svg("line", { x1: pad, y1: pad, x2: pad, y2: H - pad, class: "axis" }));
    const max = Math.max(1, ...points.map((p) => p.pending));
    chart.append(svg("text", { x: pad - 4, y: pad + 4, "text-anchor": "end", class: "tick" }, String(max)));
    chart.append(svg("text", { x: pad - 4, y: H - pad, "text-anchor": "end", class: "tick" }, "0"));
    if (points.length) {
      const t0 = points[0].t;
      const span = Math.max(1, points[points.length - 1].t - t0);
      const xy = points.map((p) => [pad + ((W - 2 * pad) * (p.t - t0)) / span, H - pad - ((H - 2 * pad) * p.pending) / max]);
      if (xy.length === 1) xy.push([W - pad, xy[0][1]]);
      chart.append(svg("polyline", { points: xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), class: "line" }));
      chart.append(svg("text", { x: W - pad, y: H - 8, "text-anchor": "end", class: "tick" }, "now"));
    }
    return chart;
  }

  /** The monitor's bounds on the automated error as an interval against α. */
  function boundsChart(a) {
    const W = 360, H = 64, pad = 16;
    const top = Math.min(1, Math.max(0.1, (a.upper ?? 0) * 1.1, (a.alpha ?? 0) * 2));
    const x = (v) => pad + ((W - 2 * pad) * Math.min(v, top)) / top;
    const chart = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      class: "chart bounds",
      role: "img",
      "aria-label": `automated error between ${fmt(a.lower, 3)} and ${fmt(a.upper, 3)}, alpha ${fmt(a.alpha, 3)}`,
    });
    chart.append(svg("line", { x1: pad, y1: 30, x2: W - pad, y2: 30, class: "axis" }));
    if (a.lower !== undefined && a.upper !== undefined) {
      chart.append(svg("rect", { x: x(a.lower), y: 22, width: Math.max(2, x(a.upper) - x(a.lower)), height: 16, class: a.fallback ? "interval bad" : "interval" }));
    }
    if (a.alpha !== undefined) {
      chart.append(svg("line", { x1: x(a.alpha), y1: 12, x2: x(a.alpha), y2: 46, class: "alpha" }));
      chart.append(svg("text", { x: x(a.alpha), y: 10, "text-anchor": "middle", class: "tick" }, `α ${fmt(a.alpha, 2)}`));
    }
    chart.append(svg("text", { x: pad, y: 58, class: "tick" }, "0"));
    chart.append(svg("text", { x: W - pad, y: 58, "text-anchor": "end", class: "tick" }, fmt(top, 2)));
    return chart;
  }

  // ---------- keyboard ----------

  document.addEventListener("keydown", (event) => {
    state.lastActivity = Date.now();
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const t = event.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    if (state.view !== "review") return;
    const r = state.review;
    if (/^[0-9]$/.test(event.key)) {
      const k = event.key === "0" ? 9 : Number(event.key) - 1;
      if (r && !r.labeled) {
        event.preventDefault();
        submitLabel(k);
      }
    } else if (event.key === "n" || event.key === "N") {
      event.preventDefault();
      claimNext();
    } else if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      release();
    } else if (event.key === "Enter" && r && r.labeled && !(t && t.tagName === "BUTTON")) {
      event.preventDefault();
      nextAfterReveal();
    }
  });
  for (const e of ["pointerdown", "pointermove", "wheel", "touchstart"]) {
    document.addEventListener(e, () => (state.lastActivity = Date.now()), { passive: true });
  }

  start();
})();
