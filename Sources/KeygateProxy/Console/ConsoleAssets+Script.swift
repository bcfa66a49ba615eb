extension ConsoleAssets {
    static let script = #"""
        "use strict";
        // keygate console: one client of the JSON API under /api (docs/console-api.md).
        (function () {
          const state = { user: null, role: null, csrf: null, policy: null, keys: [], filter: "", stateFilter: "all", sort: "last_used" };
          const $ = (id) => document.getElementById(id);

          // Elements are built with text nodes only: nothing from the API is ever parsed as HTML.
          function h(tag, attrs, ...children) {
            const el = document.createElement(tag);
            for (const [k, v] of Object.entries(attrs || {})) {
              if (v === null || v === undefined || v === false) continue;
              if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
              else if (k === "class") el.className = v;
              else el.setAttribute(k, v === true ? "" : v);
            }
            for (const c of children.flat(Infinity)) {
              if (c === null || c === undefined || c === false) continue;
              el.append(c instanceof Node ? c : document.createTextNode(String(c)));
            }
            return el;
          }
          function svg(tag, attrs, ...children) {
            const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
            for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
            for (const c of children.flat(Infinity)) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
            return el;
          }

          async function api(method, path, body) {
            const headers = { "Accept": "application/json" };
            if (body !== undefined) headers["Content-Type"] = "application/json";
            if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
            const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
            let data = null;
            try { data = await res.json(); } catch (e) { data = null; }
            if (res.status === 401 && path !== "/api/login") { showLogin("Your session has ended; sign in again."); throw new Error("not signed in"); }
            if (!res.ok) throw new Error((data && data.message) || ("HTTP " + res.status));
            return data;
          }

          function toast(text, bad) {
            const t = h("div", { class: "toast" + (bad ? " bad" : "") }, text);
            $("toasts").append(t);
            setTimeout(() => t.remove(), 4500);
          }

          const fmtDate = (ts) => ts ? ts.slice(0, 10) : "never";
          const fmtTime = (ts) => ts ? ts.slice(0, 16).replace("T", " ") + " UTC" : "never";
          function ago(ts) {
            if (!ts) return "never";
            const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
            if (s < 60) return "just now";
            if (s < 3600) return Math.floor(s / 60) + " min ago";
            if (s < 86400) return Math.floor(s / 3600) + " h ago";
            return Math.floor(s / 86400) + " days ago";
          }
          function remaining(ts) {
            const s = (Date.parse(ts) - Date.now()) / 1000;
            if (s <= 0) return "expired";
            if (s < 3600) return Math.ceil(s / 60) + " min left";
            if (s < 86400) return Math.round(s / 3600) + " h left";
            return Math.round(s / 86400) + " days left";
          }
          const isAdmin = () => state.role === "admin";

          function setMain(...nodes) { const m = $("main"); m.replaceChildren(...nodes); }

          // ---- sign-in ----
          function showLogin(message) {
            state.user = state.csrf = null;
            $("top").classList.add("hidden");
            const err = h("div", { class: "error" + (message ? "" : " hidden"), id: "login-error" }, message || "");
            const user = h("input", { name: "user", id: "login-user", autocomplete: "username", required: true, autofocus: true });
            const pass = h("input", { name: "password", id: "login-password", type: "password", autocomplete: "current-password", required: true });
            const btn = h("button", { class: "primary", type: "submit", id: "login-submit" }, "Sign in");
            const form = h("form", { onsubmit: async (e) => {
              e.preventDefault();
              btn.disabled = true;
              try {
                const r = await api("POST", "/api/login", { user: user.value, password: pass.value });
                Object.assign(state, { user: r.user, role: r.role, csrf: r.csrf });
                start();
              } catch (x) {
                err.textContent = x.message; err.classList.remove("hidden"); pass.value = ""; pass.focus();
              } finally { btn.disabled = false; }
            } },
              h("label", { class: "field" }, "User", user),
              h("label", { class: "field" }, "Password", pass), err, btn);
            setMain(h("div", { class: "login panel padded" }, h("h1", {}, "keygate console"),
              h("div", { class: "muted" }, "Sign in to manage API keys."), form));
          }

          async function start() {
            $("top").classList.remove("hidden");
            $("who").textContent = state.user + " · " + state.role;
            try { state.policy = await api("GET", "/api/policy"); } catch (e) { state.policy = { scopes: [] }; }
            route();
          }

          // ---- routing ----
          function route() {
            if (!state.user) return;
            const hash = location.hash || "#/keys";
            $("nav-keys").classList.toggle("active", hash.startsWith("#/keys"));
            $("nav-audit").classList.toggle("active", hash.startsWith("#/audit"));
            const m = hash.match(/^#\/keys\/([A-Za-z0-9]+)$/);
            if (m) return showKey(m[1]);
            if (hash.startsWith("#/audit")) return showAudit();
            return showKeys();
          }
          window.addEventListener("hashchange", route);

          // ---- keys ----
          function sparkline(values) {
            const max = Math.max(1, ...values);
            const w = 96, hgt = 22, bw = w / values.length;
            return svg("svg", { width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": "requests per hour, last 24 h" },
              svg("line", { x1: 0, x2: w, y1: hgt - 0.5, y2: hgt - 0.5, class: "base" }),
              values.map((v, i) => {
                const bh = v === 0 ? 0 : Math.max(1.5, (v / max) * hgt);
                return svg("rect", { x: (i * bw + 0.5).toFixed(1), y: (hgt - bh).toFixed(1), width: Math.max(1, bw - 1).toFixed(1), height: bh.toFixed(1), rx: "0.5" });
              }));
          }
          const pill = (s) => h("span", { class: "pill " + s }, s);

          function keyRows() {
            const q = state.filter.trim().toLowerCase();
            let rows = state.keys.filter((k) => (state.stateFilter === "all" || k.state === state.stateFilter) &&
              (!q || k.name.toLowerCase().includes(q) || (k.owner || "").toLowerCase().includes(q) || k.id.toLowerCase().includes(q)));
            const by = state.sort;
            rows.sort((a, b) => {
              if (by === "name") return a.name.localeCompare(b.name);
              if (by === "created") return b.created_at.localeCompare(a.created_at);
              if (by === "requests") return b.requests_24h - a.requests_24h;
              return (b.last_used || "").localeCompare(a.last_used || "");
            });
            return rows;
          }

          function renderTable(body) {
            const rows = keyRows();
            if (state.keys.length === 0) {
              body.replaceChildren(h("tr", {}, h("td", { colspan: 8 }, h("div", { class: "empty" }, h("strong", {}, "No keys yet"),
                isAdmin() ? "Create the first key with “New key”." : "An admin can create the first key."))));
              return;
            }
            if (rows.length === 0) {
              body.replaceChildren(h("tr", {}, h("td", { colspan: 8 }, h("div", { class: "empty" }, h("strong", {}, "No key matches"), "Try another search or state."))));
              return;
            }
            body.replaceChildren(...rows.map((k) => h("tr", { class: "click", "data-id": k.id, onclick: () => { location.hash = "#/keys/" + k.id; } },
              h("td", {}, h("span", { class: "name" }, k.name),
                k.expiring_soon ? h("span", { class: "badge soon", title: "expires within 7 days" }, "expires soon") : null,
                k.unused_90d ? h("span", { class: "badge stale", title: "not used for 90 days" }, "unused 90 d") : null,
                k.description ? h("div", { class: "sub" }, k.description) : null),
              h("td", { class: "mono" }, k.id),
              h("td", {}, k.owner || h("span", { class: "muted" }, "—")),
              h("td", {}, pill(k.state)),
              h("td", {}, fmtDate(k.created_at)),
              h("td", {}, k.expires_at ? fmtDate(k.expires_at) : h("span", { class: "muted" }, "never")),
              h("td", { title: fmtTime(k.last_used) }, ago(k.last_used)),
              h("td", {}, h("div", { class: "spark" }, sparkline(k.spark || []), h("span", { class: "sub" }, String(k.requests_24h)))))));
          }

          async function showKeys() {
            const body = h("tbody", { id: "keys-body" });
            const search = h("input", { class: "search", id: "search", type: "search", placeholder: "Search by name, owner or id", value: state.filter,
              oninput: (e) => { state.filter = e.target.value; renderTable(body); } });
            const states = h("select", { id: "state-filter", onchange: (e) => { state.stateFilter = e.target.value; renderTable(body); } },
              ["all", "active", "disabled", "revoked", "expired", "pending"].map((s) => h("option", { value: s, selected: s === state.stateFilter }, s === "all" ? "All states" : s)));
            const sorts = h("select", { id: "sort", onchange: (e) => { state.sort = e.target.value; renderTable(body); } },
              [["last_used", "Sort: last used"], ["requests", "Sort: requests 24 h"], ["created", "Sort: newest"], ["name", "Sort: name"]]
                .map(([v, t]) => h("option", { value: v, selected: v === state.sort }, t)));
            const create = isAdmin() ? h("button", { class: "primary", id: "new-key", onclick: openCreate }, "New key") : null;
            setMain(
              h("div", { class: "bar" }, h("h1", {}, "API keys"), h("span", { class: "muted", id: "key-count" }), h("div", { class: "grow" }), create),
              h("div", { class: "bar" }, search, states, sorts),
              h("div", { class: "panel" }, h("table", { id: "keys-table" },
                h("thead", {}, h("tr", {}, ["Name", "ID", "Owner", "State", "Created", "Expires", "Last used", "Requests 24 h"].map((t) => h("th", {}, t)))), body)));
            try {
              state.keys = await api("GET", "/api/keys");
              $("key-count").textContent = state.keys.length + (state.keys.length === 1 ? " key" : " keys");
              renderTable(body);
            } catch (e) { if (state.user) body.replaceChildren(h("tr", {}, h("td", { colspan: 8 }, h("div", { class: "error" }, "Could not load keys: " + e.message)))); }
          }

          // ---- dialogs ----
          function dialog(title, content, buttons) {
            const d = $("dialog");
            d.replaceChildren(h("div", { class: "head" }, h("h2", {}, title)), h("div", { class: "body" }, content), h("div", { class: "foot" }, buttons));
            if (!d.open) d.showModal();
            return d;
          }
          function closeDialog() { const d = $("dialog"); if (d.open) d.close(); d.replaceChildren(); }
          $("dialog").addEventListener("close", () => $("dialog").replaceChildren());

          function showSecret(title, record, extra) {
            // Shown once: it lives only in this dialog and is gone when it closes.
            const input = h("input", { readonly: true, value: record.key, id: "new-secret", "aria-label": "the new key" });
            const copy = h("button", { id: "copy-secret", onclick: async () => {
              try { await navigator.clipboard.writeText(record.key); copy.textContent = "Copied"; }
              catch (e) { input.select(); document.execCommand("copy"); copy.textContent = "Copied"; }
            } }, "Copy");
            dialog(title, h("div", { class: "stack" },
              h("div", { class: "warnbox" }, "Copy this key now. It is shown once and cannot be shown again; keygate stores only its hash."),
              h("div", { class: "secret" }, input, copy),
              h("div", { class: "muted" }, "Key ", h("span", { class: "mono" }, record.id), " · ", record.name),
              extra || null),
              [h("button", { class: "primary", id: "secret-done", onclick: () => { input.value = ""; closeDialog(); route(); } }, "Done")]);
          }

          function settingsForm(k) {
            k = k || {};
            const v = (x) => (x === null || x === undefined) ? "" : String(x);
            const scopes = (state.policy && state.policy.scopes) || [];
            const chosen = new Set(k.scopes || []);
            const f = {
              name: h("input", { id: "f-name", value: v(k.name), required: true }),
              owner: h("input", { id: "f-owner", value: v(k.owner) }),
              description: h("input", { id: "f-description", value: v(k.description) }),
              allow_ips: h("textarea", { id: "f-allow-ips", placeholder: "10.0.0.0/8, 203.0.113.7" }, (k.allow_ips || []).join(", ")),
              allow: h("input", { id: "f-countries-allow", value: ((k.countries || {}).allow || []).join(", "), placeholder: "DE, FR" }),
              deny: h("input", { id: "f-countries-deny", value: ((k.countries || {}).deny || []).join(", "), placeholder: "KP" }),
              not_before: h("input", { id: "f-not-before", value: v(k.not_before), placeholder: "2026-12-01 or 2h" }),
              expires: h("input", { id: "f-expires", value: v(k.expires_at), placeholder: "2027-06-30 or 90d" }),
              rate: h("input", { id: "f-rate", value: v(k.rate), placeholder: "100/s" }),
              burst: h("input", { id: "f-burst", value: v(k.burst), placeholder: "defaults to the rate", inputmode: "numeric" }),
              quota: h("input", { id: "f-quota", value: v(k.quota), placeholder: "100000/day" }),
              scopes: scopes.map((s) => h("input", { type: "checkbox", value: s, checked: chosen.has(s) })),
            };
            const list = (s) => s.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
            const node = h("div", { class: "form-grid" },
              h("label", { class: "field" }, "Name", f.name),
              h("label", { class: "field" }, "Owner", f.owner),
              h("label", { class: "field wide" }, "Description", f.description),
              h("div", { class: "field wide" }, h("label", { class: "field" }, "Scopes"),
                scopes.length ? h("div", { class: "checks" }, f.scopes.map((c) => h("label", {}, c, c.value))) : h("div", { class: "hint" }, "The policy defines no scopes: the key may call every route."),
                h("div", { class: "hint" }, "No scope checked = every route.")),
              h("label", { class: "field wide" }, "Allowed addresses (IPs or CIDRs)", f.allow_ips),
              h("label", { class: "field" }, "Allowed countries", f.allow),
              h("label", { class: "field" }, "Denied countries", f.deny),
              h("label", { class: "field" }, "Valid from", f.not_before),
              h("label", { class: "field" }, "Expires (date, or a lifetime like 90d)", f.expires),
              h("label", { class: "field" }, "Rate", f.rate),
              h("label", { class: "field" }, "Burst", f.burst),
              h("label", { class: "field" }, "Quota", f.quota));
            const read = (updating) => {
              const out = {};
              const put = (key, val) => { if (val !== "" || updating) out[key] = val === "" ? null : val; };
              out.name = f.name.value.trim();
              put("owner", f.owner.value.trim());
              put("description", f.description.value.trim());
              put("not_before", f.not_before.value.trim());
              const exp = f.expires.value.trim();
              if (exp !== v(k.expires_at) || !updating) put("expires", exp);
              put("rate", f.rate.value.trim());
              const b = f.burst.value.trim();
              if (b === "") { if (updating) out.burst = null; } else out.burst = /^\d+$/.test(b) ? parseInt(b, 10) : b;
              put("quota", f.quota.value.trim());
              out.scopes = f.scopes.filter((c) => c.checked).map((c) => c.value);
              out.allow_ips = list(f.allow_ips.value);
              out.countries = { allow: list(f.allow.value).map((c) => c.toUpperCase()), deny: list(f.deny.value).map((c) => c.toUpperCase()) };
              if (!updating) {
                for (const key of ["scopes", "allow_ips"]) if (!out[key].length) delete out[key];
                if (!out.countries.allow.length && !out.countries.deny.length) delete out.countries;
              }
              return out;
            };
            return { node, read };
          }

          function openCreate() {
            const form = settingsForm(null);
            const err = h("div", { class: "error hidden", id: "create-error" });
            const save = h("button", { class: "primary", id: "create-submit", onclick: async () => {
              save.disabled = true;
              try {
                const body = form.read(false);
                if (/^\d+[smhdw]$/.test(body.expires || "")) { body.ttl = body.expires; delete body.expires; }
                const r = await api("POST", "/api/keys", body);
                showSecret("Key created", r);
                toast("Created " + r.name);
              } catch (e) { err.textContent = e.message; err.classList.remove("hidden"); }
              finally { save.disabled = false; }
            } }, "Create key");
            dialog("New key", h("div", { class: "stack" }, form.node, err), [h("button", { onclick: closeDialog }, "Cancel"), save]);
          }

          function confirmDialog(title, text, label, danger, extraField, action) {
            const err = h("div", { class: "error hidden" });
            const ok = h("button", { class: danger ? "danger solid" : "primary", id: "confirm-ok", onclick: async () => {
              ok.disabled = true;
              try { await action(extraField); } catch (e) { err.textContent = e.message; err.classList.remove("hidden"); ok.disabled = false; }
            } }, label);
            if (extraField && extraField.mustEqual !== undefined) {
              ok.disabled = true;
              extraField.input.addEventListener("input", () => { ok.disabled = extraField.input.value !== extraField.mustEqual; });
            }
            dialog(title, h("div", { class: "stack" }, h("p", {}, text), extraField ? extraField.node : null, err),
              [h("button", { onclick: closeDialog }, "Cancel"), ok]);
          }

          // ---- key detail ----
          async function showKey(id) {
            setMain(h("p", { class: "muted" }, "Loading…"));
            let k, history;
            try {
              [k, history] = await Promise.all([api("GET", "/api/keys/" + id), api("GET", "/api/audit?key=" + encodeURIComponent(id))]);
            } catch (e) { if (state.user) setMain(h("div", { class: "error" }, "Could not load key " + id + ": " + e.message), h("p", {}, h("a", { href: "#/keys" }, "Back to keys"))); return; }
            const actions = [];
            if (isAdmin() && k.status !== "revoked") {
              actions.push(h("button", { id: "action-rotate", onclick: () => {
                const grace = h("input", { id: "rotate-grace", value: "24h" });
                confirmDialog("Rotate " + k.name, "A new key with the same settings is issued. The old key keeps working for the grace period, then expires.",
                  "Rotate", false, { node: h("label", { class: "field" }, "Grace period", grace), input: grace }, async () => {
                    const r = await api("POST", "/api/keys/" + id + "/rotate", { grace: grace.value.trim() });
                    showSecret("Key rotated", r, h("div", { class: "muted" }, "The old key ", h("span", { class: "mono" }, r.old.id), " works until ",
                      fmtTime(r.old.expires_at), " (", remaining(r.old.expires_at), ")."));
                  });
              } }, "Rotate"));
              if (k.status === "active") {
                actions.push(h("button", { id: "action-disable", onclick: () => confirmDialog("Disable " + k.name, "Requests with this key are refused until it is enabled again.",
                  "Disable", true, null, async () => { await api("POST", "/api/keys/" + id + "/disable", {}); closeDialog(); toast("Disabled " + k.name); route(); }) }, "Disable"));
              } else {
                actions.push(h("button", { id: "action-enable", onclick: async () => { try { await api("POST", "/api/keys/" + id + "/enable", {}); toast("Enabled " + k.name); route(); } catch (e) { toast(e.message, true); } } }, "Enable"));
              }
              const reason = h("input", { id: "revoke-reason", placeholder: "leaked in a public repository" });
              actions.push(h("button", { class: "danger", id: "action-revoke", onclick: () => confirmDialog("Revoke " + k.name,
                "Revoking is for good: the key is refused from now on and cannot be enabled again. Its record stays for the audit log.",
                "Revoke key", true, { node: h("label", { class: "field" }, "Reason", reason), input: reason }, async () => {
                  await api("POST", "/api/keys/" + id + "/revoke", { reason: reason.value.trim() }); closeDialog(); toast("Revoked " + k.name); route();
                }) }, "Revoke"));
            }
            if (isAdmin()) {
              const typed = h("input", { id: "delete-name", placeholder: k.name, autocomplete: "off" });
              actions.push(h("button", { class: "danger", id: "action-delete", onclick: () => confirmDialog("Delete " + k.name,
                "Deleting removes the record entirely (the audit log keeps its history). Type the key's name to confirm.",
                "Delete key", true, { node: h("label", { class: "field" }, "Key name", typed), input: typed, mustEqual: k.name }, async () => {
                  await api("DELETE", "/api/keys/" + id); closeDialog(); toast("Deleted " + k.name); location.hash = "#/keys";
                }) }, "Delete"));
            }
            const dl = (pairs) => h("dl", { class: "settings" }, pairs.map(([t, d]) => [h("dt", {}, t), h("dd", {}, d)]));
            const none = (x, word) => (x === null || x === undefined || x === "" || (Array.isArray(x) && !x.length)) ? h("span", { class: "muted" }, word || "—") : (Array.isArray(x) ? x.join(", ") : String(x));
            const settings = dl([
              ["ID", h("span", { class: "mono" }, k.id)], ["Owner", none(k.owner)], ["Description", none(k.description)],
              ["Scopes", none(k.scopes, "every route")], ["Allowed addresses", none(k.allow_ips, "any")],
              ["Countries", (k.countries.allow.length || k.countries.deny.length) ? ("allow " + (k.countries.allow.join(", ") || "any") + " · deny " + (k.countries.deny.join(", ") || "none")) : h("span", { class: "muted" }, "any")],
              ["Created", fmtTime(k.created_at)], ["Valid from", none(k.not_before, "at once")],
              ["Expires", k.expires_at ? fmtTime(k.expires_at) + " (" + remaining(k.expires_at) + ")" : h("span", { class: "muted" }, "never")],
              ["Rate", k.rate ? k.rate + (k.burst ? ", burst " + k.burst : "") : h("span", { class: "muted" }, "unlimited")],
              ["Quota", k.quota ? k.quota + (k.quota_used !== undefined ? " · " + k.quota_used + " used, " + k.quota_remaining + " left" : "") : h("span", { class: "muted" }, "none")],
              ["Last used", fmtTime(k.last_used)],
              k.revoked_at ? ["Revoked", fmtTime(k.revoked_at) + (k.revoke_reason ? " — " + k.revoke_reason : "")] : null,
              k.rotated_to ? ["Rotated to", h("a", { href: "#/keys/" + k.rotated_to, class: "mono" }, k.rotated_to)] : null,
              k.rotated_from ? ["Rotated from", h("a", { href: "#/keys/" + k.rotated_from, class: "mono" }, k.rotated_from)] : null,
            ].filter(Boolean));
            const settingsPanel = h("div", { class: "panel padded", id: "settings" }, h("div", { class: "bar" }, h("h2", {}, "Settings"), h("div", { class: "grow" }),
              isAdmin() && k.status !== "revoked" ? h("button", { id: "edit-settings", onclick: () => editSettings(k, settingsPanel) }, "Edit") : null), settings);
            const usage = h("div", { class: "panel padded", id: "usage" }, h("p", { class: "muted" }, "Loading usage…"));
            setMain(
              h("p", {}, h("a", { href: "#/keys" }, "← All keys")),
              h("div", { class: "bar" }, h("h1", { id: "key-name" }, k.name), pill(k.state),
                k.expiring_soon ? h("span", { class: "badge soon" }, "expires soon") : null, k.unused_90d ? h("span", { class: "badge stale" }, "unused 90 d") : null,
                h("div", { class: "grow" }), actions),
              h("div", { class: "stack" }, settingsPanel, usage, historyPanel(history)));
            loadUsage(id, usage, "24h");
          }

          function editSettings(k, panel) {
            const form = settingsForm(k);
            const err = h("div", { class: "error hidden", id: "edit-error" });
            panel.replaceChildren(h("h2", {}, "Edit settings"), form.node, err, h("div", { class: "bar" }, h("div", { class: "grow" }),
              h("button", { onclick: () => route() }, "Cancel"),
              h("button", { class: "primary", id: "save-settings", onclick: async () => {
                try { await api("PATCH", "/api/keys/" + k.id, form.read(true)); toast("Saved " + k.name); route(); }
                catch (e) { err.textContent = e.message; err.classList.remove("hidden"); }
              } }, "Save")));
          }

          async function loadUsage(id, panel, win) {
            let u;
            try { u = await api("GET", "/api/keys/" + id + "/usage?window=" + win); }
            catch (e) { panel.replaceChildren(h("div", { class: "error" }, "Could not load usage: " + e.message)); return; }
            const tabs = h("div", { class: "tabs" }, [["24h", "24 hours"], ["30d", "30 days"]].map(([w, t]) =>
              h("button", { class: w === win ? "on" : "", onclick: () => loadUsage(id, panel, w) }, t)));
            const top = (title, obj) => {
              const items = Object.entries(obj || {}).sort((a, b) => b[1] - a[1]).slice(0, 8);
              return h("div", {}, h("h3", {}, title), items.length ? h("ul", { class: "toplist" }, items.map(([n, c]) => h("li", {}, h("span", { class: "mono" }, n === "-" ? "unknown" : n), h("span", { class: "n" }, c))))
                : h("div", { class: "muted" }, "Nothing yet"));
            };
            panel.replaceChildren(
              h("div", { class: "bar" }, h("h2", {}, "Usage"), h("div", { class: "grow" }), h("div", { class: "legend" }, h("span", {}, h("i", { class: "req" }), "allowed"), h("span", {}, h("i", { class: "den" }), "denied")), tabs),
              h("div", { class: "grid4" },
                h("div", {}, h("h3", {}, "Requests"), h("div", { class: "stat", id: "usage-requests" }, u.requests)),
                h("div", {}, h("h3", {}, "Allowed"), h("div", { class: "stat" }, u.requests - u.denied)),
                h("div", {}, h("h3", {}, "Denied"), h("div", { class: "stat" }, u.denied)),
                h("div", {}, h("h3", {}, "Window"), h("div", { class: "stat" }, win === "24h" ? "24 h" : "30 d"))),
              h("div", { class: "chart" }, chart(u.buckets, win === "24h")),
              h("div", { class: "grid4" }, top("Top routes", u.by_route), top("Status classes", u.by_status), top("Denied by reason", u.by_reason), top("Countries", u.by_country)));
          }

          function chart(buckets, hourly) {
            const W = 960, H = 180, P = 26, n = buckets.length;
            // Whole-number gridlines: four steps that reach the busiest bucket.
            const step = Math.max(1, Math.ceil(Math.max(...buckets.map((b) => b.requests), 1) / 4));
            const max = step * 4;
            const bw = (W - P) / n;
            const kids = [];
            for (let i = 0; i <= 4; i++) {
              const y = (H - 18) - (i / 4) * (H - 30);
              kids.push(svg("line", { x1: P, x2: W, y1: y, y2: y, class: "gridline" }));
              kids.push(svg("text", { x: 0, y: y + 3, class: "axis" }, String(i * step)));
            }
            buckets.forEach((b, i) => {
              const x = P + i * bw + 1;
              const total = (b.requests / max) * (H - 30), den = (b.denied / max) * (H - 30);
              kids.push(svg("rect", { x: x.toFixed(1), y: ((H - 18) - total).toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: (total - den).toFixed(1), class: "req" },
                svg("title", {}, b.start.slice(0, hourly ? 13 : 10).replace("T", " ") + (hourly ? ":00" : "") + " — " + b.requests + " requests, " + b.denied + " denied")));
              if (den > 0) kids.push(svg("rect", { x: x.toFixed(1), y: ((H - 18) - den).toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: den.toFixed(1), class: "den" }));
              const every = hourly ? 3 : 5;
              if (i % every === 0) kids.push(svg("text", { x: x.toFixed(1), y: H - 4, class: "axis" }, hourly ? b.start.slice(11, 13) + ":00" : b.start.slice(5, 10)));
            });
            return svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "requests over time" }, kids);
          }

          function describeChanges(changes) {
            // Only what says something: not the id or creation time, not empty values on both sides.
            const empty = (v) => v === null || v === undefined || (Array.isArray(v) && !v.length) ||
              (typeof v === "object" && !Array.isArray(v) && Object.values(v).every(empty));
            const keys = Object.keys(changes || {}).sort().filter((k) => k !== "id" && k !== "created_at" && !(empty(changes[k].old) && empty(changes[k].new)));
            if (!keys.length) return h("span", { class: "muted" }, "—");
            const show = (v) => v === null || v === undefined ? "—" : (typeof v === "object" ? JSON.stringify(v) : String(v));
            return h("div", { class: "changes" }, keys.slice(0, 6).map((k, i) => [i ? " · " : "", h("b", {}, k), " ", show(changes[k].old), " → ", show(changes[k].new)]),
              keys.length > 6 ? " · …" : "");
          }

          function historyPanel(entries) {
            return h("div", { class: "panel", id: "history" }, h("div", { class: "panel-head" }, h("h2", {}, "History")),
              entries.length ? h("table", {}, h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Changes"].map((t) => h("th", {}, t)))),
                h("tbody", {}, entries.map((e) => h("tr", {}, h("td", {}, fmtTime(e.ts)), h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, describeChanges(e.changes))))))
                : h("div", { class: "empty" }, "No changes recorded."));
          }

          // ---- audit ----
          async function showAudit() {
            const f = { key: h("input", { id: "audit-key", placeholder: "Key id" }), actor: h("input", { id: "audit-actor", placeholder: "Who" }),
              action: h("select", { id: "audit-action" }, ["", "create", "update", "rotate", "revoke", "disable", "enable", "delete", "import"].map((a) => h("option", { value: a }, a || "Any action"))) };
            const body = h("tbody", {});
            const csv = h("a", { id: "audit-csv", href: "/api/audit?format=csv", download: "keygate-audit.csv" }, "Export CSV");
            const load = async () => {
              const q = new URLSearchParams();
              for (const [k, el] of Object.entries(f)) if (el.value.trim()) q.set(k, el.value.trim());
              csv.setAttribute("href", "/api/audit?" + (q.toString() ? q.toString() + "&" : "") + "format=csv");
              try {
                const entries = await api("GET", "/api/audit" + (q.toString() ? "?" + q.toString() : ""));
                body.replaceChildren(...(entries.length ? entries.map((e) => h("tr", {}, h("td", {}, fmtTime(e.ts)), h("td", {}, e.actor), h("td", {}, e.action),
                  h("td", {}, h("a", { class: "mono", href: "#/keys/" + e.key_id }, e.key_id)), h("td", {}, describeChanges(e.changes)))) :
                  [h("tr", {}, h("td", { colspan: 5 }, h("div", { class: "empty" }, h("strong", {}, "No entries"), "Changes from the CLI and the console appear here.")))]));
              } catch (e) { if (state.user) body.replaceChildren(h("tr", {}, h("td", { colspan: 5 }, h("div", { class: "error" }, e.message)))); }
            };
            for (const el of Object.values(f)) el.addEventListener(el.tagName === "SELECT" ? "change" : "input", load);
            setMain(h("div", { class: "bar" }, h("h1", {}, "Audit log"), h("div", { class: "grow" }), csv),
              h("div", { class: "bar" }, f.key, f.actor, f.action),
              h("div", { class: "panel" }, h("table", { id: "audit-table" }, h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Key", "Changes"].map((t) => h("th", {}, t)))), body)));
            load();
          }

          // ---- start ----
          $("signout").addEventListener("click", async () => {
            try { await api("POST", "/api/logout", {}); } catch (e) { /* signed out either way */ }
            showLogin("");
          });
          (async () => {
            try {
              const s = await fetch("/api/session", { credentials: "same-origin" });
              const r = s.ok ? await s.json() : null;
              if (r && r.signed_in) { Object.assign(state, { user: r.user, role: r.role, csrf: r.csrf }); return start(); }
            } catch (e) { /* not signed in */ }
            showLogin("");
          })();
        })();
        """#
}
