/** Targets: search by MAC or name, assignments, last boot; add one by MAC; bulk edit a collection (PVS: device collection properties). */
import type { FC } from 'hono/jsx';
import type { LastBoot } from '../../../model/index.js';
import { Field, FormError, Select, Time } from '../layout.js';

type Row = Record<string, any>;

export interface TargetsView {
  q: string;
  collectionId: string;
  targets: Row[];
  /** Targets that match the search (the page shows the first of them). */
  matching: number;
  collections: Row[];
  vdisks: Row[];
  appliances: Row[];
  canCreate: boolean;
  /** May change what a collection's targets boot (assignment, type). */
  canBulk: boolean;
  /** May operate them (enable, disable, boot from the local disk): device operators too. */
  canOperate: boolean;
  add: { typed: Record<string, string>; error: { message: string; field: string | null } | null };
  bulk: { error: string | null };
}

const nameOf = (rows: Row[], id: string | null | undefined) => (id ? (rows.find((r) => r.id === id)?.name ?? id) : '');

export const TargetsPage: FC<{ v: TargetsView }> = ({ v }) => {
  const err = (field: string) => (v.add.error?.field === field ? v.add.error.message : null);
  const colOptions = v.collections.map((c): [string, string] => [c.id, c.name]);
  const diskOptions = v.vdisks.map((d): [string, string] => [d.id, d.name]);
  return (
    <>
      <h1>Targets</h1>
      <form method="get" action="/console/targets" class="row card" role="search">
        <div>
          <label for="f-q">MAC or name</label>
          <input id="f-q" name="q" type="search" value={v.q} placeholder="52:54:00 or pc-01" />
        </div>
        <Select name="collection" label="Collection" value={v.collectionId} options={[['', 'All collections'], ...colOptions]} />
        <div>
          <button type="submit">Search</button>
        </div>
      </form>
      <p class="muted small" role="status">
        {v.targets.length < v.matching ? `The first ${v.targets.length} of ${v.matching} matching targets: narrow the search` : `${v.matching} target${v.matching === 1 ? '' : 's'}`}
      </p>
      <table aria-label="Targets">
        <thead>
          <tr>
            <th scope="col">MAC</th>
            <th scope="col">Name</th>
            <th scope="col">Collection</th>
            <th scope="col">vDisks</th>
            <th scope="col">Type</th>
            <th scope="col">Last boot</th>
          </tr>
        </thead>
        <tbody>
          {v.targets.map((t) => {
            const lb = t.lastBoot as LastBoot | null;
            return (
              <tr>
                <td class="mono">{t.mac}</td>
                <td>
                  {t.name}
                  {t.disabled ? <span class="badge offline"> disabled</span> : null}
                </td>
                <td>{nameOf(v.collections, t.collectionId)}</td>
                <td>{(t.assignments as Row[]).map((a) => nameOf(v.vdisks, a.vdiskId)).join(', ') || <span class="muted">none</span>}</td>
                <td>{t.bootFrom === 'local-disk' ? 'local disk' : t.type}</td>
                <td class="small">
                  {lb ? (
                    <>
                      <Time at={lb.at} />
                      {lb.outcome === 'vdisk' ? (
                        <div>
                          {`${nameOf(v.vdisks, lb.vdiskId)} v${lb.version ?? '?'} from ${nameOf(v.appliances, lb.completedOn ?? lb.streamingApplianceId) || 'an appliance'}`}
                          {lb.durationMs !== null ? <span data-boot-seconds={(lb.durationMs / 1000).toFixed(1)}>{` · up in ${(lb.durationMs / 1000).toFixed(1)} s`}</span> : <span class="muted"> · OS not attached yet</span>}
                        </div>
                      ) : (
                        <div>{lb.outcome === 'local-disk' ? 'local disk' : `refused: ${lb.message}`}</div>
                      )}
                    </>
                  ) : (
                    <span class="muted">never</span>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>

      {v.canCreate ? (
        <>
          <h2 id="add">Add a target</h2>
          <form method="post" action="/console/targets" class="card" aria-labelledby="add">
            <div class="row">
              <Field name="mac" label="MAC address" value={v.add.typed.mac} required placeholder="52:54:00:12:34:56" error={err('mac')} />
              <Field name="name" label="Name (computer name)" value={v.add.typed.name} required placeholder="pc-0001" error={err('name')} />
              <Select name="collectionId" label="Collection" value={v.add.typed.collectionId ?? v.collectionId} options={colOptions} error={err('collectionId')} />
              <Select name="vdiskId" label="vDisk" value={v.add.typed.vdiskId} options={[['', '(none)'], ...diskOptions]} error={err('assignments') ?? err('assignments.0.vdiskId')} />
              <Select name="type" label="Type" value={v.add.typed.type ?? 'production'} options={[['production', 'Production'], ['test', 'Test'], ['maintenance', 'Maintenance']]} error={err('type')} />
              <div>
                <button type="submit">Add target</button>
              </div>
            </div>
            <FormError error={v.add.error && !['mac', 'name', 'collectionId', 'assignments', 'assignments.0.vdiskId', 'type'].includes(v.add.error.field ?? '') ? v.add.error.message : null} />
          </form>
        </>
      ) : null}

      {v.canBulk || v.canOperate ? (
        <>
          <h2 id="bulk">Edit a whole collection</h2>
          <form method="post" action="/console/targets/bulk" class="card" aria-labelledby="bulk" data-confirm="Change every target of this collection?">
            <div class="row">
              <Select name="collectionId" label="Collection" value={v.collectionId} options={colOptions} />
              {v.canBulk ? (
                <>
                  <Select name="vdiskId" label="Assign vDisk (replaces each target's assignments)" value="" options={[['', '(leave as is)'], ['-', '(no vDisk)'], ...diskOptions]} />
                  <Select name="type" label="Type" value="" options={[['', '(leave as is)'], ['production', 'Production'], ['test', 'Test'], ['maintenance', 'Maintenance']]} />
                </>
              ) : null}
              <Select name="disabled" label="Enabled" value="" options={[['', '(leave as is)'], ['false', 'Enable all'], ['true', 'Disable all']]} />
              <Select name="bootFrom" label="Boot from" value="" options={[['', '(leave as is)'], ['vdisk', 'vDisk'], ['local-disk', 'Local disk']]} />
              <div>
                <button type="submit">Apply to the collection</button>
              </div>
            </div>
            <FormError error={v.bulk.error} />
          </form>
        </>
      ) : null}
    </>
  );
};
