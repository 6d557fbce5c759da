/** The page shell and the small pieces every console page uses. */
import type { Child, FC, PropsWithChildren } from 'hono/jsx';
import type { Principal } from '../../model/index.js';
import { ASSET_NAMES } from './assets.js';

export type Section = 'farm' | 'targets' | 'audit' | 'login';

const NAV: [Section, string, string][] = [
  ['farm', 'Farm', '/console'],
  ['targets', 'Targets', '/console/targets'],
  ['audit', 'Audit log', '/console/audit'],
];

export const Page: FC<PropsWithChildren<{ title: string; section: Section; principal?: Principal | null; flash?: { text: string; bad?: boolean } | null }>> = (p) => (
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <title>{`${p.title} · bootfarm`}</title>
      <link rel="stylesheet" href={`/console/assets/${ASSET_NAMES.css}`} />
      <script src={`/console/assets/${ASSET_NAMES.js}`} defer></script>
    </head>
    <body>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <a href="/console">
          <strong>bootfarm</strong>
        </a>
        {p.principal ? (
          <nav aria-label="Sections">
            {NAV.map(([id, label, href]) => (
              <a href={href} aria-current={p.section === id ? 'page' : undefined}>
                {label}
              </a>
            ))}
          </nav>
        ) : null}
        {p.principal ? (
          <span class="who">
            {p.principal.name} · {p.principal.role}
            {p.principal.siteId ? ` (site ${p.principal.siteId})` : ''}{' '}
            <form class="inline" method="post" action="/console/logout">
              <button type="submit">Sign out</button>
            </form>
          </span>
        ) : null}
      </header>
      <main id="main">
        {p.flash ? (
          <div class={`card flash${p.flash.bad ? ' bad' : ''}`} role={p.flash.bad ? 'alert' : 'status'}>
            {p.flash.text}
          </div>
        ) : null}
        {p.children}
      </main>
    </body>
  </html>
);

/** The API's reason for refusing a field's value, tied to the field by `${id}-error` (aria-describedby). */
const FieldError: FC<{ id: string; error?: string | null | undefined }> = (p) =>
  p.error ? (
    <div id={`${p.id}-error`} class="error" role="alert">
      {p.error}
    </div>
  ) : null;

/** A labelled input with its error, if the API refused the value. */
export const Field: FC<{ name: string; label: string; value?: string | number | null; type?: string; error?: string | null; required?: boolean; placeholder?: string; hint?: string; list?: string }> = (p) => {
  const id = `f-${p.name.replace(/[^a-zA-Z0-9-]/g, '-')}`;
  return (
    <div>
      <label for={id}>{p.label}</label>
      <input
        id={id}
        name={p.name}
        type={p.type ?? 'text'}
        value={p.value ?? ''}
        required={p.required}
        placeholder={p.placeholder}
        list={p.list}
        aria-invalid={p.error ? 'true' : undefined}
        aria-describedby={p.error ? `${id}-error` : p.hint ? `${id}-hint` : undefined}
      />
      {p.hint && !p.error ? (
        <div id={`${id}-hint`} class="muted small">
          {p.hint}
        </div>
      ) : null}
      <FieldError id={id} error={p.error} />
    </div>
  );
};

export const Select: FC<{ name: string; label: string; options: [string, string][]; value?: string | null; error?: string | null }> = (p) => {
  const id = `f-${p.name.replace(/[^a-zA-Z0-9-]/g, '-')}`;
  return (
    <div>
      <label for={id}>{p.label}</label>
      <select id={id} name={p.name} aria-invalid={p.error ? 'true' : undefined} aria-describedby={p.error ? `${id}-error` : undefined}>
        {p.options.map(([v, l]) => (
          <option value={v} selected={v === (p.value ?? '')}>
            {l}
          </option>
        ))}
      </select>
      <FieldError id={id} error={p.error} />
    </div>
  );
};

/** An error from the API that names no form field. */
export const FormError: FC<{ error?: string | null }> = (p) =>
  p.error ? (
    <div class="error" role="alert">
      {p.error}
    </div>
  ) : null;

export const Time: FC<{ at: string | null | undefined }> = (p) => (p.at ? <time datetime={p.at}>{p.at.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC')}</time> : <span class="muted">never</span>);

export const StateBadge: FC<{ state: string }> = (p) => <span class={`badge state-${p.state}`}>{p.state}</span>;

export function joinChildren(items: Child[], sep: Child = ', '): Child[] {
  return items.flatMap((x, i) => (i ? [sep, x] : [x]));
}
