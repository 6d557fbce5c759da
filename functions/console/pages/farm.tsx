/** The farm at a glance: the PVS console tree (farm > sites > appliances, collections; stores > vDisks). */
import type { FC } from 'hono/jsx';
import { Time } from '../layout.js';

type Row = Record<string, any>;

export interface FarmView {
  farm: Row;
  sites: Row[];
  appliances: Row[];
  stores: Row[];
  vdisks: Row[];
  collections: Row[];
  targetsPerCollection: Map<string, number>;
  now: Date;
  offlineAfterMs: number;
}

/** Online: heard from within the offline threshold (the replication matrix's rule). */
export function isOnline(a: Row, now: Date, offlineAfterMs: number): boolean {
  return !!a.lastHeartbeat && now.getTime() - Date.parse(a.lastHeartbeat) <= offlineAfterMs;
}

export const ApplianceLine: FC<{ a: Row; now: Date; offlineAfterMs: number }> = ({ a, now, offlineAfterMs }) => {
  const online = isOnline(a, now, offlineAfterMs);
  const s = a.status as Row | null | undefined;
  return (
    <span>
      <span class={`badge ${online ? 'on' : 'offline'}`}>{online ? 'online' : 'offline'}</span> <strong>{a.name}</strong>{' '}
      <span class="muted small">
        {s ? `load ${Number(s.load).toFixed(2)} · ${s.sessions} session${s.sessions === 1 ? '' : 's'} · v${s.softwareVersion}` : 'never reported'}
        {!online && a.lastHeartbeat ? (
          <>
            {' · offline since '}
            <Time at={a.lastHeartbeat} />
          </>
        ) : s?.offlineSince ? (
          <>
            {' · lost the cloud at '}
            <Time at={s.offlineSince} />
          </>
        ) : null}
      </span>
    </span>
  );
};

export const FarmPage: FC<{ v: FarmView }> = ({ v }) => (
  <>
    <h1>Farm {v.farm.name ? `“${v.farm.name}”` : ''}</h1>
    <div class="card">
      <ul class="tree" aria-label="Farm tree">
        <li>
          <details open>
            <summary>
              <strong>Sites</strong> <span class="muted small">({v.sites.length})</span>
            </summary>
            <ul>
              {v.sites.map((s) => {
                const apps = v.appliances.filter((a) => a.siteId === s.id);
                const cols = v.collections.filter((c) => c.siteId === s.id);
                return (
                  <li>
                    <details open>
                      <summary>
                        <a href={`/console/sites/${s.id}`}>{s.name}</a>{' '}
                        <span class="muted small">
                          {apps.filter((a) => isOnline(a, v.now, v.offlineAfterMs)).length}/{apps.length} appliances online
                        </span>
                      </summary>
                      <ul>
                        <li>
                          Appliances
                          <ul>
                            {apps.length ? apps.map((a) => <li><ApplianceLine a={a} now={v.now} offlineAfterMs={v.offlineAfterMs} /></li>) : <li class="muted">none enrolled</li>}
                          </ul>
                        </li>
                        <li>
                          Device collections
                          <ul>
                            {cols.length ? (
                              cols.map((c) => (
                                <li>
                                  <a href={`/console/targets?collection=${c.id}`}>{c.name}</a> <span class="muted small">{v.targetsPerCollection.get(c.id) ?? 0} targets</span>
                                </li>
                              ))
                            ) : (
                              <li class="muted">none</li>
                            )}
                          </ul>
                        </li>
                      </ul>
                    </details>
                  </li>
                );
              })}
            </ul>
          </details>
        </li>
        <li>
          <details open>
            <summary>
              <strong>Stores</strong> <span class="muted small">({v.stores.length})</span>
            </summary>
            <ul>
              {v.stores.map((st) => {
                const disks = v.vdisks.filter((d) => d.storeId === st.id);
                return (
                  <li>
                    {st.name} <span class="muted small mono">{st.s3Prefix}</span>
                    <ul>
                      {disks.length ? (
                        disks.map((d) => (
                          <li>
                            <a href={`/console/vdisks/${d.id}`}>{d.name}</a> <span class="muted small">{d.writeCacheType} · {d.accessMode}</span>
                          </li>
                        ))
                      ) : (
                        <li class="muted">no vDisks</li>
                      )}
                    </ul>
                  </li>
                );
              })}
            </ul>
          </details>
        </li>
      </ul>
    </div>
  </>
);
