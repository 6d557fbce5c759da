/**
 * The console's only static files, served from memory by the app itself:
 * no build step, no CDN (sites and this machine have no internet).
 */
import { createHash } from 'node:crypto';

export const CONSOLE_CSS = `
:root { --fg:#1b1f24; --muted:#5b6570; --line:#d6dbe1; --bg:#f6f7f9; --card:#fff; --accent:#0b5cad; --ok:#1a7f37; --warn:#9a6700; --bad:#c62828; --off:#6e7781; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
* { box-sizing: border-box; }
body { margin: 0; }
a { color: var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible, summary:focus-visible { outline: 3px solid #f5a623; outline-offset: 2px; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; z-index: 10; }
header.top { display: flex; align-items: center; gap: 24px; background: #102a43; color: #fff; padding: 8px 20px; }
header.top a { color: #fff; text-decoration: none; } header.top nav a { margin-right: 16px; opacity: .9; } header.top nav a[aria-current=page] { border-bottom: 2px solid #fff; opacity: 1; }
header.top .who { margin-left: auto; font-size: 13px; } header.top form { display: inline; }
header.top button { background: none; border: 1px solid #9fb3c8; color: #fff; border-radius: 4px; padding: 2px 8px; cursor: pointer; }
main { max-width: 1200px; margin: 0 auto; padding: 20px; }
h1 { font-size: 22px; margin: 0 0 12px; } h2 { font-size: 17px; margin: 24px 0 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 14px 16px; margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; background: var(--card); }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 13px; color: var(--muted); font-weight: 600; }
.muted { color: var(--muted); } .small { font-size: 13px; } .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600; border: 1px solid currentColor; }
.on { color: var(--ok); } .offline { color: var(--bad); } .state-production { color: var(--ok); } .state-test { color: var(--warn); } .state-maintenance { color: var(--accent); } .state-merged { color: var(--off); }
ul.tree, ul.tree ul { list-style: none; padding-left: 18px; margin: 4px 0; } ul.tree { padding-left: 0; }
ul.tree li { margin: 2px 0; } details > summary { cursor: pointer; }
.matrix td.cell { text-align: center; font-size: 12px; font-weight: 600; min-width: 90px; }
.cell-up-to-date { background: #dafbe1; color: #116329; } .cell-missing { background: #eaeef2; color: #57606a; } .cell-in-progress { background: #fff8c5; color: #7d4e00; }
.cell-corrupt { background: #ffebe9; color: #a40e26; } .cell-unreachable { background: #f6f8fa; color: #6e7781; border: 1px dashed #afb8c1; }
form.inline { display: inline; margin: 0; }
label { display: block; font-weight: 600; font-size: 13px; margin: 8px 0 2px; }
input[type=text], input[type=password], input[type=search], input[type=number], input[type=datetime-local], select, textarea { font: inherit; padding: 5px 8px; border: 1px solid #8c959f; border-radius: 4px; min-width: 260px; background: #fff; }
.row { display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: flex-end; } .row > div { min-width: 200px; }
button, .button { font: inherit; background: var(--accent); color: #fff; border: 0; border-radius: 4px; padding: 6px 12px; cursor: pointer; text-decoration: none; display: inline-block; }
button.secondary { background: #fff; color: var(--accent); border: 1px solid var(--accent); } button.danger { background: var(--bad); }
.error { color: var(--bad); font-size: 13px; margin-top: 2px; } [aria-invalid=true] { border-color: var(--bad) !important; }
.flash { border-left: 4px solid var(--ok); } .flash.bad { border-left-color: var(--bad); }
.change { font-size: 13px; } .change del { color: var(--bad); } .change ins { color: var(--ok); text-decoration: none; }
.mt { margin-top: 8px; } .narrow { max-width: 560px; } input.wide { width: 100%; }
fieldset.plain { border: 0; padding: 0; margin: 0; }
svg.chart { width: 100%; height: auto; background: #fff; border: 1px solid var(--line); }
figure.chart { margin: 0; } .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
ul.legend { list-style: none; padding: 0; margin: 0 0 8px; display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; }
.swatch { display: inline-block; width: 14px; height: 4px; vertical-align: middle; border-radius: 2px; }
.c0 { background: #0072B2; } .c1 { background: #D55E00; } .c2 { background: #009E73; } .c3 { background: #CC79A7; } .c4 { background: #E69F00; } .c5 { background: #56B4E9; } .c6 { background: #000000; } .c7 { background: #F0E442; }
`;

export const CONSOLE_JS = `
// Progressive enhancement only: every page works without this file.
document.addEventListener('submit', (e) => {
  const f = e.target;
  if (f instanceof HTMLFormElement && f.dataset.confirm && !window.confirm(f.dataset.confirm)) e.preventDefault();
});
// Elements with data-refresh="<url>" reload their content every data-every seconds while the page is visible.
for (const el of document.querySelectorAll('[data-refresh]')) {
  const every = Number(el.dataset.every || 5) * 1000;
  const tick = async () => {
    if (document.visibilityState === 'visible') {
      try {
        const r = await fetch(el.dataset.refresh, { credentials: 'same-origin', headers: { accept: 'text/html' } });
        if (r.ok) { const html = await r.text(); if (html !== el.innerHTML) el.innerHTML = html; }
      } catch {}
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}
`;

const tag = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 12);
/** Content-addressed names, so browsers may cache them for good. */
export const ASSET_NAMES = { css: `console.${tag(CONSOLE_CSS)}.css`, js: `console.${tag(CONSOLE_JS)}.js` } as const;
