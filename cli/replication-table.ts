/**
 * `bootfarm vdisk status`: the replication matrix of GET
 * /v1/vdisks/{id}/replication as a table, versions down, appliances across.
 */
import { table, type Column } from './output.js';

export interface ReplicationBody {
  siteId: string | null;
  offlineAfterSeconds: number;
  sitesNeeding: string[];
  appliances: { id: string; name: string; siteId: string; lastHeartbeat: string | null; reachable: boolean; needed: boolean }[];
  versions: { number: number; state: string; pending: boolean; waitingFor: string[]; cells: Record<string, { state: string; percent?: number }> }[];
}

/** Short cell text: ok, missing, 42%, CORRUPT (shouts: a bad copy is served nowhere but must be looked at), offline. */
export function cellText(c: { state: string; percent?: number } | undefined): string {
  switch (c?.state) {
    case 'up-to-date':
      return 'ok';
    case 'missing':
      return 'missing';
    case 'in-progress':
      return `${c.percent ?? 0}%`;
    case 'corrupt':
      return 'CORRUPT';
    case 'unreachable':
      return 'offline';
    default:
      return '?';
  }
}

export function replicationTable(m: ReplicationBody): string {
  type Row = ReplicationBody['versions'][number];
  const columns: Column<Row>[] = [
    ['version', (v) => v.number],
    ['state', (v) => v.state],
    ['pending', (v) => (v.pending ? 'yes' : '')],
    ...m.appliances.map((a): Column<Row> => [a.name, (v) => cellText(v.cells[a.id])]),
  ];
  const lines = [m.versions.length ? table(m.versions, columns) : 'no versions'];
  if (!m.appliances.length) lines.push(m.siteId ? `no appliances in site ${m.siteId}` : 'no appliances');
  const name = new Map(m.appliances.map((a) => [a.id, a.name]));
  for (const v of m.versions) if (v.pending) lines.push(`version ${v.number} pending: waiting for ${v.waitingFor.map((id) => name.get(id) ?? id).join(', ')}`);
  const offline = m.appliances.filter((a) => !a.reachable);
  if (offline.length)
    lines.push(`offline (no heartbeat for ${m.offlineAfterSeconds} s): ${offline.map((a) => `${a.name} (${a.lastHeartbeat ? `last ${a.lastHeartbeat}` : 'never reported'})`).join(', ')}`);
  lines.push(m.sitesNeeding.length ? `sites that need this vDisk: ${m.sitesNeeding.join(', ')}` : 'no target is assigned this vDisk: nothing is pending');
  return lines.join('\n');
}
