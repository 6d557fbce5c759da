/** A site: bootstrap ("Configure Bootstrap" in PVS), ProxyDHCP, rebalance, and its appliances. */
import type { FC } from 'hono/jsx';
import { Field, FormError, Select } from '../layout.js';
import { ApplianceLine } from './farm.js';
import { Activity, type ApplianceActivity } from './activity.js';

type Row = Record<string, any>;

export interface SiteView {
  site: Row;
  appliances: Row[];
  vdiskNames: Map<string, string>;
  activity: ApplianceActivity[];
  canEdit: boolean;
  now: Date;
  offlineAfterMs: number;
  error: { message: string; field: string | null } | null;
  /** What was typed, shown again when the API refused it. */
  typed?: Record<string, string>;
}

const fieldError = (v: SiteView, field: string) => (v.error?.field === field ? v.error.message : null);

export const SitePage: FC<{ v: SiteView }> = ({ v }) => {
  const s = v.site;
  const b = s.bootstrap;
  const val = (name: string, current: unknown) => v.typed?.[name] ?? (current === null || current === undefined ? '' : String(current));
  const servers = [0, 1, 2, 3].map((i) => b.servers[i] as Row | undefined);
  return (
    <>
      <h1>Site {s.name}</h1>
      <h2>Appliances</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Appliance</th>
            <th scope="col">Sessions per vDisk</th>
            <th scope="col">Cache</th>
          </tr>
        </thead>
        <tbody>
          {v.appliances.map((a) => {
            const held = ((a.inventory?.versions as Row[] | undefined) ?? []).map((x) => x.vdiskId as string);
            const per = Object.entries((a.status?.sessionsByVdisk as Record<string, number> | undefined) ?? {}).filter(([, n]) => n > 0);
            return (
              <tr>
                <td>
                  <ApplianceLine a={a} now={v.now} offlineAfterMs={v.offlineAfterMs} />
                </td>
                <td class="small" data-sessions={a.name}>
                  {per.length ? per.map(([id, n]) => <div>{`${v.vdiskNames.get(id) ?? id}: ${n}`}</div>) : <div>{a.status?.sessions ?? 0} open</div>}
                  {held.length ? <div class="muted">holds {[...new Set(held)].map((id) => v.vdiskNames.get(id) ?? id).join(', ')}</div> : null}
                </td>
                <td class="small">{a.status ? `${(a.status.cacheBytes / 2 ** 30).toFixed(2)} GiB` : '—'}</td>
              </tr>
            );
          })}
        </tbody>
      </table>

      <h2 id="activity">Activity</h2>
      <div class="card" data-refresh={`/console/sites/${s.id}/activity`} data-every="15" aria-labelledby="activity">
        <Activity appliances={v.activity} now={v.now} />
      </div>

      <form method="post" action={`/console/sites/${s.id}`}>
        <input type="hidden" name="version" value={String(s.version)} />
        <fieldset disabled={!v.canEdit} class="plain">
        <h2>Bootstrap</h2>
        <div class="card">
          <p class="muted small">The servers a booting target tries, in order (at most 4), and its timeouts (PVS: Configure Bootstrap).</p>
          <div class="row">
            {servers.map((srv, i) => (
              <Field name={`server${i}`} label={`Server ${i + 1} address`} value={val(`server${i}`, srv ? serverText(srv as { address: string; port: number }) : '')} placeholder="192.0.2.10 or host:port" error={fieldError(v, `bootstrap.servers.${i}.address`) ?? fieldError(v, `bootstrap.servers.${i}.port`)} />
            ))}
          </div>
          <div class="row">
            <Field name="pollingTimeoutMs" label="Polling timeout (ms)" type="number" value={val('pollingTimeoutMs', b.pollingTimeoutMs)} error={fieldError(v, 'bootstrap.pollingTimeoutMs')} />
            <Field name="generalTimeoutMs" label="General timeout (ms)" type="number" value={val('generalTimeoutMs', b.generalTimeoutMs)} error={fieldError(v, 'bootstrap.generalTimeoutMs')} />
            <Select name="recovery" label="When a target loses its appliance" value={v.typed?.recovery ?? b.networkRecovery.action} options={[['restore-connection', 'Restore the connection'], ['reboot-local', 'Reboot to the local disk']]} />
            <Field name="rebootDelaySeconds" label="Reboot after (seconds)" type="number" value={val('rebootDelaySeconds', b.networkRecovery.rebootDelaySeconds)} error={fieldError(v, 'bootstrap.networkRecovery.rebootDelaySeconds')} />
          </div>
        </div>
        <h2>ProxyDHCP and rebalance</h2>
        <div class="card">
          <div class="row">
            <div>
              <label for="f-proxyDhcp">
                <input id="f-proxyDhcp" type="checkbox" name="proxyDhcp" value="on" checked={v.typed ? v.typed.proxyDhcp === 'on' : s.proxyDhcp.enabled} /> Answer PXE (ProxyDHCP)
              </label>
            </div>
            <div>
              <label for="f-rebalance">
                <input id="f-rebalance" type="checkbox" name="rebalance" value="on" checked={v.typed ? v.typed.rebalance === 'on' : s.rebalance.enabled} /> Rebalance targets
              </label>
            </div>
            <Field name="triggerPercent" label="Rebalance trigger (%)" type="number" value={val('triggerPercent', s.rebalance.triggerPercent)} error={fieldError(v, 'rebalance.triggerPercent')} />
            <Field name="intervalSeconds" label="Check every (seconds)" type="number" value={val('intervalSeconds', s.rebalance.intervalSeconds)} error={fieldError(v, 'rebalance.intervalSeconds')} />
          </div>
        </div>
        </fieldset>
        {v.canEdit ? (
          <>
            <FormError error={v.error && !['bootstrap.', 'rebalance.'].some((p) => v.error!.field?.startsWith(p)) ? v.error.message : null} />
            <button type="submit">Save site settings</button>
          </>
        ) : (
          <p class="muted">Read-only: your token may not change this site.</p>
        )}
      </form>
    </>
  );
};

/** A bootstrap server as the form shows it: IPv6 in brackets when a port follows. */
export function serverText(srv: { address: string; port: number }): string {
  if (srv.port === 80) return srv.address;
  return srv.address.includes(':') ? `[${srv.address}]:${srv.port}` : `${srv.address}:${srv.port}`;
}
