/// The console's page: one HTML shell, one stylesheet, one script, embedded in the binary.
/// No inline script or style anywhere, so the Content-Security-Policy can forbid both.
enum ConsoleAssets {
    /// On every console answer: a strict CSP, no framing, no sniffing, no referrers, no caching.
    static let securityHeaders =
        "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'\r\n"
        + "X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
        + "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Resource-Policy: same-origin\r\nCache-Control: no-store\r\n"

    static func answer(_ path: String) -> ConsoleResponse {
        switch path {
        case "/", "/index.html": return ConsoleResponse(status: 200, contentType: "text/html; charset=utf-8", body: Array(html.utf8))
        case "/app.js": return ConsoleResponse(status: 200, contentType: "text/javascript; charset=utf-8", body: Array(script.utf8))
        case "/app.css": return ConsoleResponse(status: 200, contentType: "text/css; charset=utf-8", body: Array(style.utf8))
        case "/favicon.svg", "/favicon.ico": return ConsoleResponse(status: 200, contentType: "image/svg+xml", body: Array(icon.utf8))
        default: return ConsoleAPI.error(404, "not_found", "no such page")
        }
    }

    static let icon = """
        <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#1f3a5f"/>\
        <circle cx="12" cy="16" r="6" fill="none" stroke="#8fd3ff" stroke-width="3"/><path d="M18 16h10v4M24 16v3" stroke="#8fd3ff" stroke-width="3" fill="none"/></svg>
        """

    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>keygate console</title>
        <link rel="icon" href="/favicon.svg" type="image/svg+xml">
        <link rel="stylesheet" href="/app.css">
        <script src="/app.js" defer></script>
        </head>
        <body>
        <header class="top hidden" id="top">
          <a class="brand" href="#/keys"><img src="/favicon.svg" alt="" width="22" height="22"> keygate</a>
          <nav><a href="#/keys" id="nav-keys">Keys</a><a href="#/audit" id="nav-audit">Audit log</a></nav>
          <div class="who"><span id="who"></span><button class="link" id="signout" type="button">Sign out</button></div>
        </header>
        <main id="main"><p class="muted pad">Loading…</p></main>
        <div id="toasts" class="toasts" aria-live="polite"></div>
        <dialog id="dialog"></dialog>
        </body>
        </html>
        """
}
