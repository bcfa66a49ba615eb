extension ConsoleAssets {
    static let style = #"""
        :root {
          --bg: #f5f7fa; --panel: #ffffff; --ink: #1b2430; --muted: #667085; --line: #e4e7ec;
          --brand: #1f3a5f; --accent: #2563eb; --accent-ink: #ffffff; --danger: #c0262d; --warn: #b54708;
          --ok: #067647; --ok-bg: #ecfdf3; --warn-bg: #fffaeb; --danger-bg: #fef3f2; --grey-bg: #f2f4f7;
          --radius: 10px; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
        }
        * { box-sizing: border-box; }
        html, body { margin: 0; padding: 0; background: var(--bg); color: var(--ink);
          font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
        a { color: var(--accent); text-decoration: none; }
        a:hover { text-decoration: underline; }
        .hidden { display: none !important; }
        .muted { color: var(--muted); }
        .pad { padding: 24px; }
        .mono { font-family: var(--mono); font-size: 12.5px; }
        .top { display: flex; align-items: center; gap: 28px; padding: 0 28px; height: 56px; background: var(--brand); color: #fff; }
        .top .brand { color: #fff; font-weight: 700; font-size: 17px; display: flex; align-items: center; gap: 8px; letter-spacing: .2px; }
        .top nav { display: flex; gap: 4px; }
        .top nav a { color: #c9d7ea; padding: 6px 12px; border-radius: 8px; }
        .top nav a.active, .top nav a:hover { color: #fff; background: rgba(255,255,255,.12); text-decoration: none; }
        .top .who { margin-left: auto; display: flex; gap: 14px; align-items: center; color: #c9d7ea; }
        .top .who .link { color: #fff; }
        main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 64px; }
        h1 { font-size: 22px; margin: 0; }
        h2 { font-size: 16px; margin: 0 0 12px; }
        h3 { font-size: 13px; margin: 0 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .5px; }
        .bar { display: flex; align-items: center; gap: 12px; margin-bottom: 16px; flex-wrap: wrap; }
        .bar .grow { flex: 1; }
        .panel { background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); }
        .panel.padded { padding: 18px 20px; }
        .grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
        .grid4 { display: grid; grid-template-columns: repeat(4, 1fr); gap: 16px; }
        @media (max-width: 900px) { .grid2, .grid4 { grid-template-columns: 1fr; } }
        .stack > * + * { margin-top: 16px; }
        input, select, textarea { font: inherit; color: inherit; padding: 7px 10px; border: 1px solid #cfd4dc; border-radius: 8px; background: #fff; }
        input:focus, select:focus, textarea:focus { outline: 2px solid #bfd3fe; border-color: var(--accent); }
        textarea { resize: vertical; min-height: 60px; width: 100%; }
        input.search { width: 320px; }
        label.field { display: flex; flex-direction: column; gap: 4px; font-size: 12.5px; color: var(--muted); }
        label.field input, label.field select, label.field textarea { color: var(--ink); font-size: 14px; }
        .hint { font-size: 12px; color: var(--muted); }
        button { font: inherit; cursor: pointer; border-radius: 8px; padding: 7px 14px; border: 1px solid #cfd4dc; background: #fff; color: var(--ink); }
        button:hover { background: var(--grey-bg); }
        button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-ink); }
        button.primary:hover { background: #1d4ed8; }
        button.danger { color: var(--danger); border-color: #f4b4b0; }
        button.danger.solid { background: var(--danger); color: #fff; border-color: var(--danger); }
        button.link { background: none; border: none; padding: 0; color: var(--accent); }
        button:disabled { opacity: .5; cursor: not-allowed; }
        table { width: 100%; border-collapse: collapse; }
        th { text-align: left; font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: .4px;
          padding: 10px 14px; border-bottom: 1px solid var(--line); background: #fafbfc; white-space: nowrap; }
        th.sortable { cursor: pointer; }
        th.sortable:hover { color: var(--ink); }
        td { padding: 10px 14px; border-bottom: 1px solid var(--line); vertical-align: middle; }
        tr:last-child td { border-bottom: none; }
        tbody tr.click { cursor: pointer; }
        tbody tr.click:hover td { background: #f8fafc; }
        .name { font-weight: 600; }
        .sub { font-size: 12px; color: var(--muted); }
        .pill { display: inline-block; padding: 2px 9px; border-radius: 999px; font-size: 12px; font-weight: 600; }
        .pill.active { background: var(--ok-bg); color: var(--ok); }
        .pill.disabled, .pill.pending { background: var(--warn-bg); color: var(--warn); }
        .pill.revoked, .pill.expired { background: var(--danger-bg); color: var(--danger); }
        .badge { display: inline-block; margin-left: 6px; padding: 1px 7px; border-radius: 6px; font-size: 11px; font-weight: 600; vertical-align: 1px; }
        .badge.soon { background: var(--warn-bg); color: var(--warn); }
        .badge.stale { background: var(--grey-bg); color: var(--muted); }
        .spark { display: flex; align-items: center; gap: 8px; }
        .spark svg { display: block; }
        .spark rect { fill: #6f9cf2; }
        .spark .base { stroke: #d0d5dd; }
        .empty { text-align: center; padding: 56px 20px; color: var(--muted); }
        .empty strong { display: block; color: var(--ink); font-size: 16px; margin-bottom: 6px; }
        .error { color: var(--danger); background: var(--danger-bg); border: 1px solid #fecdca; border-radius: 8px; padding: 8px 12px; }
        .warnbox { color: var(--warn); background: var(--warn-bg); border: 1px solid #fedf89; border-radius: 8px; padding: 10px 12px; }
        .secret { display: flex; gap: 8px; }
        .secret input { flex: 1; font-family: var(--mono); font-size: 13px; background: #f9fafb; }
        .login { max-width: 380px; margin: 12vh auto 0; }
        .login h1 { margin-bottom: 4px; }
        .login form { display: flex; flex-direction: column; gap: 14px; margin-top: 18px; }
        dl.settings { display: grid; grid-template-columns: 160px 1fr; gap: 8px 16px; margin: 0; }
        dl.settings dt { color: var(--muted); }
        dl.settings dd { margin: 0; word-break: break-word; }
        .form-grid { display: grid; grid-template-columns: 1fr 1fr; gap: 12px 16px; }
        .form-grid .wide { grid-column: 1 / -1; }
        .checks { display: flex; flex-wrap: wrap; gap: 6px 16px; }
        .checks label { display: flex; gap: 6px; align-items: center; color: var(--ink); font-size: 13.5px; }
        dialog { border: none; border-radius: 14px; padding: 0; width: min(720px, 94vw); box-shadow: 0 24px 64px rgba(16,24,40,.28); }
        dialog::backdrop { background: rgba(16,24,40,.45); }
        dialog .head { padding: 18px 22px 0; }
        dialog .body { padding: 16px 22px; max-height: 70vh; overflow: auto; }
        dialog .foot { padding: 14px 22px 18px; display: flex; justify-content: flex-end; gap: 10px; border-top: 1px solid var(--line); }
        .chart { margin: 18px 0 14px; }
        .chart svg { width: 100%; height: 180px; display: block; }
        .panel-head { padding: 18px 20px 6px; }
        .chart .req { fill: #6f9cf2; }
        .chart .den { fill: #f28b82; }
        .chart .axis { fill: var(--muted); font-size: 10px; }
        .chart .gridline { stroke: var(--line); }
        .legend { display: flex; gap: 14px; font-size: 12px; color: var(--muted); }
        .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
        .legend .req { background: #6f9cf2; }
        .legend .den { background: #f28b82; }
        .toplist { list-style: none; margin: 0; padding: 0; }
        .toplist li { display: flex; justify-content: space-between; gap: 12px; padding: 5px 0; border-bottom: 1px dashed var(--line); font-size: 13px; }
        .toplist li:last-child { border-bottom: none; }
        .toplist .n { font-variant-numeric: tabular-nums; color: var(--muted); }
        .stat { font-size: 24px; font-weight: 700; }
        .toasts { position: fixed; right: 20px; bottom: 20px; display: flex; flex-direction: column; gap: 8px; z-index: 10; }
        .toast { background: #101828; color: #fff; padding: 10px 14px; border-radius: 8px; box-shadow: 0 8px 24px rgba(0,0,0,.2); max-width: 420px; }
        .toast.bad { background: var(--danger); }
        .changes { font-size: 12.5px; color: var(--muted); }
        .changes b { color: var(--ink); font-weight: 600; }
        .tabs { display: inline-flex; border: 1px solid #cfd4dc; border-radius: 8px; overflow: hidden; }
        .tabs button { border: none; border-radius: 0; }
        .tabs button.on { background: var(--accent); color: #fff; }
        """#
}
