/** The audit trail with filters (who, object, time) and each change's old and new value (PVS: Audit Trail). */
import type { FC } from 'hono/jsx';
import { Field, FormError, Select, Time } from '../layout.js';

type Row = Record<string, any>;

export interface AuditView {
  filters: { actor: string; objectType: string; objectId: string; from: string; to: string };
  records: Row[];
  nextCursor: string | null;
  error: { message: string; field: string | null } | null;
}

const KINDS = ['', 'farm', 'site', 'appliance', 'store', 'vdisk', 'version', 'collection', 'target', 'token'];
const show = (x: unknown) => (x === undefined ? '—' : typeof x === 'string' ? x : JSON.stringify(x));

export const AuditPage: FC<{ v: AuditView }> = ({ v }) => {
  const f = v.filters;
  const err = (field: string) => (v.error?.field === field ? v.error.message : null);
  const next = v.nextCursor ? `/console/audit?${new URLSearchParams({ ...f, cursor: v.nextCursor }).toString()}` : null;
  return (
    <>
      <h1>Audit log</h1>
      <form method="get" action="/console/audit" class="card row" role="search">
        <Field name="actor" label="Who (token name or id)" value={f.actor} error={err('actor')} />
        <Select name="objectType" label="Object type" value={f.objectType} options={KINDS.map((k): [string, string] => [k, k || 'any'])} error={err('objectType')} />
        <Field name="objectId" label="Object id" value={f.objectId} error={err('objectId')} />
        <Field name="from" label="From (UTC)" type="datetime-local" value={f.from} error={err('from')} />
        <Field name="to" label="To (UTC)" type="datetime-local" value={f.to} error={err('to')} />
        <div>
          <button type="submit">Filter</button>
        </div>
      </form>
      <FormError error={v.error && !['actor', 'objectType', 'objectId', 'from', 'to'].includes(v.error.field ?? '') ? v.error.message : null} />
      <table aria-label="Audit records, newest first">
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Who</th>
            <th scope="col">What</th>
            <th scope="col">Changes (old → new)</th>
          </tr>
        </thead>
        <tbody>
          {v.records.map((r) => (
            <tr>
              <td class="small">
                <Time at={r.at} />
              </td>
              <td>
                {r.actor.name} <span class="muted small">{r.actor.role}</span>
              </td>
              <td>
                {r.action} {r.objectType} <span class="mono">{r.objectId}</span>
              </td>
              <td>
                {(r.changes as Row[]).slice(0, 12).map((ch) => (
                  <div class="change">
                    <span class="mono">{ch.property}</span>: <del>{show(ch.old)}</del> → <ins>{show(ch.new)}</ins>
                  </div>
                ))}
                {r.changes.length > 12 ? <div class="muted small">and {r.changes.length - 12} more</div> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {v.records.length === 0 ? <p class="muted">No records match.</p> : null}
      {next ? (
        <p>
          <a href={next}>Older records</a>
        </p>
      ) : null}
    </>
  );
};
