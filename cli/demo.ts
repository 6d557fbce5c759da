/**
 * `npm run demo:boot` (`bootfarm demo boot`): a QEMU VM boots the demo target
 * from the local appliance of `npm start`, over QEMU's user-mode network (no
 * root): its DHCP hands iPXE the appliance's boot script URL; the script
 * sanboots the demo vDisk over HTTP; the disk's boot sector reads sectors
 * through int 13h and prints a checksum and its message on the serial port.
 * Succeeds only when the VM printed them.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEMO_TARGET_MAC } from '../functions/local/seed.js';

export interface DemoBootOptions {
  /** The local appliance, e.g. http://127.0.0.1:7071 */
  applianceUrl: string;
  timeoutMs: number;
  log: (line: string) => void;
}

const RESULT = /BOOTFARM-DISK (OK sum=[0-9a-f]{8} sectors=\d+|READ-ERROR ah=[0-9a-f]{2} lba=\d+)/;
const MESSAGE = /BOOTFARM-DISK message: ([^\r\n]*)/;

export class DemoError extends Error {}

export async function demoBoot(o: DemoBootOptions): Promise<{ seconds: number; message: string }> {
  if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) throw new DemoError('needs QEMU: apt-get install qemu-system-x86 (Debian), then run it again');
  const url = new URL(o.applianceUrl);
  if (!['127.0.0.1', 'localhost'].includes(url.hostname)) throw new DemoError(`--appliance ${o.applianceUrl}: the demo VM reaches the host's loopback only (http://127.0.0.1:PORT)`);
  // The appliance must hold the demo disk before the VM asks for it.
  const deadline = Date.now() + 60_000;
  for (;;) {
    const health = (await fetch(`${o.applianceUrl}/healthz`).then((r) => r.json(), () => null)) as { cache?: { versions?: { state: string }[] } } | null;
    if (!health) throw new DemoError(`no appliance answers at ${o.applianceUrl}: start the local farm with npm start first`);
    if (health.cache?.versions?.some((v) => v.state === 'verified')) break;
    if (Date.now() > deadline) throw new DemoError(`the appliance at ${o.applianceUrl} holds no verified vDisk yet (is the demo vDisk pushed? see npm start's output)`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-demo-'));
  const serial = join(dir, 'serial.log');
  // QEMU's user network shows the host's loopback as 10.0.2.2.
  const bootfile = `http://10.0.2.2:${url.port || 80}/boot.ipxe`;
  const args = ['-accel', 'tcg', '-m', '256', '-display', 'none', '-monitor', 'none', '-no-reboot', '-serial', `file:${serial}`, '-netdev', `user,id=n0,bootfile=${bootfile}`, '-device', `e1000,netdev=n0,mac=${DEMO_TARGET_MAC}`, '-boot', 'n', '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04'];
  o.log(`booting a VM (MAC ${DEMO_TARGET_MAC}) from ${bootfile} ...`);
  const started = Date.now();
  const vm = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  vm.stderr.on('data', (d) => (stderr += d));
  let exited = false;
  vm.once('exit', () => (exited = true));
  try {
    for (;;) {
      const text = (await readFile(serial, 'utf8').catch(() => '')).replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
      const m = RESULT.exec(text);
      if (m) {
        const message = MESSAGE.exec(text)?.[1]?.trim() ?? '';
        if (!m[1]!.startsWith('OK')) throw new DemoError(`the VM booted the disk but a read failed: ${m[0]}`);
        return { seconds: (Date.now() - started) / 1000, message };
      }
      if (exited) throw new DemoError(`QEMU ended before the disk answered${stderr ? `: ${stderr.trim().split('\n')[0]}` : ''}\n${tail(text)}`);
      if (Date.now() - started > o.timeoutMs) throw new DemoError(`no answer from the disk within ${o.timeoutMs / 1000} s; the VM printed:\n${tail(text)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    vm.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

const tail = (text: string) => text.split(/\r?\n/).filter(Boolean).slice(-15).join('\n');
