/** A vDisk: versions and their actions, the replication matrix, load balancing (PVS: vDisk Versions, Replication Status, Load Balancing). */
import type { FC } from 'hono/jsx';
import { FormError, Select, StateBadge, Time } from '../layout.js';

type Row = Record<string, any>;

export interface VdiskView {
  vdisk: Row;
  store: Row | null;
  versions: Row[];
  matrix: Row;
  appliances: Row[];
  canEdit: boolean;
  errors: { versions?: string | null; loadBalancing?: string | null; field?: string | null };
}

/** The transitions the API allows (model/vdisk.ts checkVersionTransition), as buttons. */
function transitions(state: string, isNewest: boolean): [string, string][] {
  if (state === 'maintenance') return [['test', 'Promote to test'], ['production', 'Promote to production']];
  if (state === 'test') return [['production', 'Promote to production'], ...(isNewest ? [['maintenance', 'Revert to maintenance'] as [string, string]] : [])];
  if (state === 'production') return [['test', 'Revert to test']];
  return [];
}

export const Matrix: FC<{ m: Row }> = ({ m }) => {
  const appliances = m.appliances as Row[];
  const versions = m.versions as Row[];
  if (!versions.length) return <p class="muted">No versions yet.</p>;
  return (
    <table class="matrix" aria-label="Replication: versions by appliance">
      <thead>
        <tr>
          <th scope="col">Version</th>
          {appliances.map((a) => (
            <th scope="col">
              {a.name}
              <div class="small muted">{a.reachable ? (a.needed ? 'needs it' : 'not needed') : 'unreachable'}</div>
            </th>
          ))}
          <th scope="col">Pending</th>
        </tr>
      </thead>
      <tbody>
        {versions.map((v) => (
          <tr>
            <th scope="row">
              {v.number} <StateBadge state={v.state} />
            </th>
            {appliances.map((a) => {
              const cell = (v.cells as Record<string, Row>)[a.id] ?? { state: 'missing' };
              return (
                <td class={`cell cell-${cell.state}`} data-appliance={a.name} data-version={v.number} data-state={cell.state}>
                  {cell.state}
                  {cell.state === 'in-progress' && cell.percent !== undefined ? ` ${cell.percent}%` : ''}
                </td>
              );
            })}
            <td class="small">{v.pending ? `waiting for ${(v.waitingFor as string[]).map((id) => appliances.find((a) => a.id === id)?.name ?? id).join(', ')}` : 'no'}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
};

export const VdiskPage: FC<{ v: VdiskView }> = ({ v }) => {
  const d = v.vdisk;
  const live = v.versions.filter((x) => x.state !== 'merged');
  const newest = v.versions.at(-1);
  // Only the newest test or production version can be merged from here: merging an older one would retire newer versions
  // (a rollback), which the CLI can still do on purpose. The new base keeps the state of what it merges.
  const newestMergeable = live.filter((x) => x.state === 'test' || x.state === 'production').at(-1);
  return (
    <>
      <h1>vDisk {d.name}</h1>
      <p class="muted">
        {v.store ? `Store ${v.store.name}` : ''} · {(d.sizeBytes / 2 ** 30).toFixed(1)} GiB · write cache {d.writeCacheType} · {d.accessMode} · {d.chunkSize / 2 ** 20} MiB chunks
      </p>

      <h2 id="versions">Versions</h2>
      <FormError error={v.errors.versions} />
      <table aria-labelledby="versions">
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">State</th>
            <th scope="col">Created</th>
            <th scope="col">Promoted</th>
            <th scope="col">Description</th>
            {v.canEdit ? <th scope="col">Actions</th> : null}
          </tr>
        </thead>
        <tbody>
          {v.versions.map((x) => (
            <tr>
              <td>{x.number}</td>
              <td>
                <StateBadge state={x.state} />
              </td>
              <td class="small">
                <Time at={x.createdAt} />
              </td>
              <td class="small">{x.promotedAt ? <Time at={x.promotedAt} /> : '—'}</td>
              <td>{x.description}</td>
              {v.canEdit ? (
                <td>
                  {transitions(x.state, x.number === newest?.number).map(([to, label]) => (
                    <form class="inline" method="post" action={`/console/vdisks/${d.id}/versions/${x.number}/state`}>
                      <input type="hidden" name="state" value={to} />
                      <input type="hidden" name="version" value={String(x.version)} />
                      <button type="submit" class={to === 'maintenance' || (x.state === 'production' && to === 'test') ? 'secondary' : ''} aria-label={`${label}: version ${x.number}`}>
                        {label}
                      </button>{' '}
                    </form>
                  ))}
                  {x.number === newestMergeable?.number ? (
                    <form class="inline" method="post" action={`/console/vdisks/${d.id}/merge`} data-confirm={`Merge version ${x.number} into a new base version? The new base is in ${x.state}, and every version before it becomes merged.`}>
                      <input type="hidden" name="from" value={String(x.number)} />
                      <input type="hidden" name="state" value={x.state} />
                      <button type="submit" class="secondary" aria-label={`Merge into a new base: version ${x.number}`}>
                        Merge
                      </button>{' '}
                    </form>
                  ) : null}
                  {x.number === newest?.number && x.state !== 'merged' ? (
                    <form class="inline" method="post" action={`/console/vdisks/${d.id}/versions/${x.number}/delete`} data-confirm={`Delete version ${x.number}? Targets booting it move to the previous one.`}>
                      <button type="submit" class="danger" aria-label={`Delete version ${x.number}`}>
                        Delete
                      </button>
                    </form>
                  ) : null}
                </td>
              ) : null}
            </tr>
          ))}
        </tbody>
      </table>
      {v.canEdit && !live.some((x) => x.state === 'maintenance') ? (
        <form method="post" action={`/console/vdisks/${d.id}/versions`} class="row mt">
          <div>
            <label for="f-new-description">Description of the new maintenance version</label>
            <input id="f-new-description" name="description" type="text" />
          </div>
          <div>
            <button type="submit">New maintenance version</button>
          </div>
        </form>
      ) : null}

      <h2 id="replication">Replication</h2>
      <p class="muted small">Each version by each appliance; refreshed every 5 seconds. A version is pending until every appliance of a site that needs it holds it.</p>
      <div data-refresh={`/console/vdisks/${d.id}/matrix`} data-every="5" aria-live="polite">
        <Matrix m={v.matrix} />
      </div>

      <h2 id="lb">Load balancing</h2>
      <div class="card">
        {v.canEdit ? (
          <form method="post" action={`/console/vdisks/${d.id}/load-balancing`}>
            <input type="hidden" name="version" value={String(d.version)} />
            <div class="row">
              <Select name="mode" label="Mode" value={d.loadBalancing.mode} options={[['algorithm', 'Balance across the site’s appliances'], ['fixed', 'One fixed appliance']]} />
              <Select
                name="applianceId"
                label="Fixed appliance"
                value={d.loadBalancing.applianceId ?? ''}
                options={[['', '(none)'], ...v.appliances.map((a): [string, string] => [a.id, a.name])]}
                error={v.errors.field === 'loadBalancing.applianceId' ? v.errors.loadBalancing : null}
              />
              <Select name="subnetAffinity" label="Subnet affinity" value={d.subnetAffinity} options={[['none', 'None'], ['best-effort', 'Best effort'], ['fixed', 'Fixed']]} />
              <div>
                <button type="submit">Save load balancing</button>
              </div>
            </div>
            {v.errors.field !== 'loadBalancing.applianceId' ? <FormError error={v.errors.loadBalancing} /> : null}
          </form>
        ) : (
          <p>
            Mode {d.loadBalancing.mode}
            {d.loadBalancing.applianceId ? ` (appliance ${v.appliances.find((a) => a.id === d.loadBalancing.applianceId)?.name ?? d.loadBalancing.applianceId})` : ''}, subnet affinity {d.subnetAffinity}.
          </p>
        )}
      </div>
    </>
  );
};
