/**
 * Floating addresses on this machine's LAN interface: `ip addr add/del`,
 * a gratuitous ARP after each add (iputils `arping -U`), so that switches
 * and clients (iPXE, Linux) move the address to this MAC at once, and the
 * interface's carrier.
 *
 * A guard process outlives a crash of the appliance: a tiny shell that waits
 * for EOF on a pipe only the appliance holds, then deletes every address
 * listed in the state file. The appliance writes an address into the file
 * before adding it and takes it out after deleting it, so whatever way it
 * dies (kill -9 included), it leaves no address behind that a peer would
 * then answer for too. (systemd's ExecStopPost runs the same clean-up.)
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { LogFn } from '../log.js';
import { writeFileAtomic } from '../fs-atomic.js';

const run = promisify(execFile);

export interface AddressManagerOptions {
  /** The LAN interface, e.g. eth0. */
  iface: string;
  prefixLength: number;
  /** File listing the addresses this appliance may hold (`<address>/<prefix> <iface>` per line). */
  statePath: string;
  log: LogFn;
  /** Gratuitous ARPs sent after an add (1 s apart). */
  arpCount?: number;
}

export interface AddressManager {
  readonly iface: string;
  /** Floating addresses on the interface now (as this manager added them). */
  held(): Set<string>;
  linkUp(): Promise<boolean>;
  add(address: string): Promise<void>;
  remove(address: string): Promise<void>;
  /** Removes everything it holds and ends the guard. */
  close(): Promise<void>;
}

/** The shell guard: EOF on stdin means the appliance is gone; then every listed address goes. TERM is ignored so systemd's stop cannot cut it short. */
const GUARD = `trap '' TERM INT HUP
cat >/dev/null
while read -r addr dev; do [ -n "$addr" ] && ip addr del "$addr" dev "$dev" 2>/dev/null; done < "$1"
exit 0`;

/** Addresses listed in a state file (what a crashed appliance may have left). */
export async function readState(statePath: string): Promise<{ cidr: string; iface: string }[]> {
  const text = await readFile(statePath, 'utf8').catch(() => '');
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((p) => p.length === 2 && /^[\d.]+\/\d+$/.test(p[0]!) && /^[\w.-]{1,15}$/.test(p[1]!))
    .map(([cidr, iface]) => ({ cidr: cidr!, iface: iface! }));
}

/** Deletes every address of a state file (start-up after a crash whose guard did not run, and systemd's ExecStopPost). */
export async function releaseState(statePath: string, log: LogFn): Promise<string[]> {
  const gone: string[] = [];
  for (const { cidr, iface } of await readState(statePath)) {
    const ok = await run('ip', ['addr', 'del', cidr, 'dev', iface]).then(
      () => true,
      () => false,
    );
    if (ok) {
      gone.push(cidr);
      log('warn', 'removed a floating address left by an earlier run', { address: cidr, iface });
    }
  }
  await writeFile(statePath, '').catch(() => undefined);
  return gone;
}

export async function startAddressManager(o: AddressManagerOptions): Promise<AddressManager> {
  if (!/^[\w.-]{1,15}$/.test(o.iface)) throw new Error(`ha.interface ${o.iface}: not an interface name`);
  await releaseState(o.statePath, o.log);
  const held = new Set<string>();
  const write = () => writeFileAtomic(o.statePath, [...held].map((a) => `${a}/${o.prefixLength} ${o.iface}\n`).join(''), 0o600);
  await write();

  const guard: ChildProcess = spawn('/bin/sh', ['-c', GUARD, 'bootfarm-address-guard', o.statePath], { stdio: ['pipe', 'ignore', 'ignore'] });
  guard.on('error', (e) => o.log('error', 'address guard could not start: a crash would leave floating addresses behind', { reason: e.message }));
  guard.unref();
  (guard.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  guard.stdin?.on('error', () => undefined);

  let chain: Promise<unknown> = Promise.resolve();
  let closed = false;
  /** arping processes still announcing an address: stopped when it goes (neighbours must not be pointed back here). */
  const announcing = new Map<string, Set<ChildProcess>>();
  const stopAnnouncing = (address: string) => {
    for (const c of announcing.get(address) ?? []) c.kill('SIGKILL');
    announcing.delete(address);
  };
  // One change at a time, in order.
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const p = chain.then(f, f);
    chain = p.catch(() => undefined);
    return p;
  };

  return {
    iface: o.iface,
    held: () => new Set(held),
    async linkUp() {
      const [carrier, state] = await Promise.all([
        readFile(`/sys/class/net/${o.iface}/carrier`, 'utf8').then((s) => s.trim() === '1', () => false),
        readFile(`/sys/class/net/${o.iface}/operstate`, 'utf8').then((s) => s.trim(), () => 'missing'),
      ]);
      return carrier && (state === 'up' || state === 'unknown');
    },
    add: (address) =>
      serial(async () => {
        if (closed) throw new Error(`not adding ${address}: the appliance is stopping`);
        if (held.has(address)) return;
        held.add(address);
        try {
          await write();
        } catch (e) {
          // Not recorded for the guard: not added either.
          held.delete(address);
          throw new Error(`cannot record ${address} in ${o.statePath} before adding it: ${(e as Error).message}`);
        }
        try {
          await run('ip', ['addr', 'add', `${address}/${o.prefixLength}`, 'dev', o.iface]);
        } catch (e) {
          const msg = (e as { stderr?: string }).stderr ?? (e as Error).message;
          if (!/File exists/.test(msg)) {
            held.delete(address);
            await write();
            throw new Error(`ip addr add ${address}/${o.prefixLength} dev ${o.iface}: ${msg.trim()}`);
          }
        }
        // Gratuitous ARP (source = target = the address), as a request (-U) and as a reply (-A): some stacks update
        // their neighbour entry only on one of them. Neighbours move the address to this MAC now.
        for (const mode of ['-U', '-A']) {
          const child = execFile('arping', ['-q', mode, '-c', String(o.arpCount ?? 3), '-I', o.iface, address], (e) => {
            announcing.get(address)?.delete(child);
            if (e && !(e as { killed?: boolean }).killed && !child.killed) o.log('warn', 'gratuitous ARP failed: neighbours learn the new MAC only when their ARP entry expires', { address, mode, reason: (e as Error).message });
          });
          announcing.set(address, (announcing.get(address) ?? new Set()).add(child));
        }
      }),
    remove: (address) =>
      serial(async () => {
        if (!held.has(address)) return;
        stopAnnouncing(address);
        await run('ip', ['addr', 'del', `${address}/${o.prefixLength}`, 'dev', o.iface]).catch((e: { stderr?: string; message: string }) => {
          const msg = e.stderr ?? e.message;
          if (!/Cannot assign|not found|No such/i.test(msg)) throw new Error(`ip addr del ${address}/${o.prefixLength} dev ${o.iface}: ${msg.trim()}`);
        });
        held.delete(address);
        await write();
      }),
    async close() {
      closed = true;
      for (const a of [...held]) await serial(async () => {
        stopAnnouncing(a);
        // One that cannot be deleted stays listed: the guard tries again when the daemon is gone.
        const gone = await run('ip', ['addr', 'del', `${a}/${o.prefixLength}`, 'dev', o.iface]).then(
          () => true,
          (e: { stderr?: string; message: string }) => /Cannot assign|not found|No such/i.test(e.stderr ?? e.message),
        );
        if (gone) held.delete(a);
        else o.log('error', 'cannot remove a floating address at stop: the guard will', { address: a });
      });
      await write().catch(() => undefined);
      guard.stdin?.end();
    },
  };
}
