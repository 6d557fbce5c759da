/**
 * QEMU boot targets for tests, always under TCG (iPXE hangs under the nested
 * KVM of these machines):
 * - `bios`: SeaBIOS and an e1000 whose option ROM is iPXE, on a site's tap;
 * - `uefi`: q35 + OVMF with virtio-net and an empty romfile, so the firmware's
 *   own PXE (PxeBcDxe, arch 7, then TFTP) does the work, on a site's tap;
 * - `localDisk`: boots a raw image as an IDE disk, no network (no root needed);
 * - `userNet`: e1000/iPXE on QEMU's user-mode network whose DHCP points iPXE at
 *   `bootfile` (e.g. http://10.0.2.2:PORT/boot.ipxe, 10.0.2.2 being the host's
 *   loopback), no root needed.
 * Every VM has `isa-debug-exit` at port 0xf4 (the guest writes v, QEMU exits
 * with 2v+1) and its COM1 in a file.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OVMF_CODE, OVMF_VARS, QEMU_BINARY, spawnProcess, type ManagedProcess, type ProcessExit, type Site } from './netns.js';

export interface VmExit extends ProcessExit {
  /**
   * The value the guest wrote to isa-debug-exit ((code - 1) / 2 for an odd exit
   * code), null otherwise. QEMU's own start-up errors also exit 1 (which reads as
   * 0 here): `error` then says so; assert on the serial output too.
   */
  guestStatus: number | null;
  /** QEMU's first error line on stderr, if any. */
  error?: string;
}

export interface Vm {
  readonly name: string;
  /** QEMU's arguments, for messages and for reproducing a run by hand. */
  readonly args: readonly string[];
  readonly serialFile: string;
  readonly process: ManagedProcess;
  /** Date.now() at start, for timing boots. */
  readonly startedAt: number;
  /** What the guest printed on COM1 so far (raw, with the firmware's escape sequences). */
  serial(): Promise<string>;
  /**
   * Polls the serial file until `pattern` matches; rejects when QEMU exits first,
   * when `failOn` matches first (e.g. NO_BOOTABLE_DEVICE), or after `timeoutMs` (default 120 s).
   */
  waitForSerial(pattern: RegExp, timeoutMs?: number, failOn?: RegExp): Promise<RegExpExecArray>;
  readonly exited: Promise<VmExit>;
  /** Stops QEMU (SIGTERM, then SIGKILL). Idempotent. */
  kill(): Promise<VmExit>;
  /** kill() and remove the temp folder this VM created for itself (host VMs only). */
  dispose(): Promise<void>;
}

interface CommonOptions {
  /** @default 256 */
  memoryMiB?: number;
  /** @default `<dir>/<name>.serial` */
  serialFile?: string;
  /** Appended after the harness's arguments. */
  extraArgs?: readonly string[];
  /** A label for messages and file names. @default kind and MAC */
  name?: string;
  log?: (line: string) => void;
}

export interface SiteVmOptions extends CommonOptions {
  site: Site;
  /** A tap of the site (`site.addTap()`). */
  tap: string;
  mac: string;
}

export interface LocalDiskVmOptions extends CommonOptions {
  /** A raw image, booted as the first IDE disk. */
  disk: string;
}

export interface UserNetVmOptions extends CommonOptions {
  /** What QEMU's DHCP hands iPXE as its boot file, e.g. `http://10.0.2.2:8080/boot.ipxe`. */
  bootfile: string;
  /** @default '52:54:00:12:34:56' */
  mac?: string;
}

/** SeaBIOS's last words once every boot device failed (iPXE's own failure lines come before it). */
export const NO_BOOTABLE_DEVICE = /No bootable device/;

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const QEMU_ERROR = /^qemu-system-\S+: (?!.*warning)/i;

function checkMac(mac: string): string {
  if (!MAC.test(mac)) throw new Error(`${mac}: not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return mac.toLowerCase();
}

/** A -serial/-drive path cannot carry QEMU's option separators. */
function checkPath(path: string): string {
  if (/[,\s]/.test(path)) throw new Error(`${path}: QEMU paths here may not contain commas or spaces`);
  return path;
}

function common(memoryMiB: number, serialFile: string): string[] {
  return [
    '-accel', 'tcg',
    '-m', String(memoryMiB),
    '-nographic',
    '-display', 'none',
    '-monitor', 'none',
    '-no-reboot',
    '-serial', `file:${checkPath(serialFile)}`,
    '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04',
  ];
}

const tapNetdev = (tap: string) => ['-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`];

/** SeaBIOS, e1000 (iPXE ROM) on a tap, network boot. */
export function biosArgs(o: { tap: string; mac: string; serialFile: string; memoryMiB?: number; extraArgs?: readonly string[] }): string[] {
  return [
    ...common(o.memoryMiB ?? 256, o.serialFile),
    '-device', `e1000,netdev=n0,mac=${checkMac(o.mac)}`,
    ...tapNetdev(o.tap),
    '-boot', 'n',
    ...(o.extraArgs ?? []),
  ];
}

/** q35 + OVMF (code read-only, `varsFile` a writable copy of the variables), virtio-net without option ROM. */
export function uefiArgs(o: {
  tap: string;
  mac: string;
  serialFile: string;
  varsFile: string;
  memoryMiB?: number;
  extraArgs?: readonly string[];
}): string[] {
  return [
    '-machine', 'q35',
    ...common(o.memoryMiB ?? 256, o.serialFile),
    '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
    '-drive', `if=pflash,format=raw,unit=1,file=${checkPath(o.varsFile)}`,
    '-device', `virtio-net-pci,netdev=n0,mac=${checkMac(o.mac)},romfile=`,
    ...tapNetdev(o.tap),
    '-boot', 'n',
    ...(o.extraArgs ?? []),
  ];
}

/** SeaBIOS booting `disk` (raw) from IDE, no network. */
export function localDiskArgs(o: { disk: string; serialFile: string; memoryMiB?: number; extraArgs?: readonly string[] }): string[] {
  return [
    ...common(o.memoryMiB ?? 256, o.serialFile),
    '-drive', `file=${checkPath(o.disk)},format=raw,if=ide`,
    '-nic', 'none',
    '-boot', 'c',
    ...(o.extraArgs ?? []),
  ];
}

/** SeaBIOS, e1000 (iPXE ROM) on QEMU's user-mode network, whose DHCP hands out `bootfile`. */
export function userNetArgs(o: { bootfile: string; mac: string; serialFile: string; memoryMiB?: number; extraArgs?: readonly string[] }): string[] {
  if (/[,\s]/.test(o.bootfile)) throw new Error(`${o.bootfile}: no commas or spaces in a bootfile URL`);
  return [
    ...common(o.memoryMiB ?? 256, o.serialFile),
    '-netdev', `user,id=n0,bootfile=${o.bootfile}`,
    '-device', `e1000,netdev=n0,mac=${checkMac(o.mac)}`,
    '-boot', 'n',
    ...(o.extraArgs ?? []),
  ];
}

/** Strips ANSI escape sequences and carriage returns, for messages. */
export function plainSerial(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b(\[[0-9;?]*[A-Za-z]|[@-Z\\-_]|c)/g, '').replace(/\r/g, '');
}

function wrap(name: string, args: string[], serialFile: string, proc: ManagedProcess, ownDir?: string): Vm {
  const startedAt = Date.now();
  const serial = () => readFile(serialFile, 'latin1').catch(() => '');
  const exited = proc.exited.then((e): VmExit => {
    const error = proc.stderr.find((l) => QEMU_ERROR.test(l));
    const odd = e.code !== null && e.code % 2 === 1;
    return { ...e, guestStatus: odd ? (e.code! - 1) / 2 : null, ...(error ? { error } : {}) };
  });
  const describe = async () =>
    `\n--- serial (last 2000 chars) ---\n${plainSerial(await serial()).slice(-2000)}\n--- qemu stderr ---\n${proc.stderr.slice(-10).join('\n')}`;
  return {
    name,
    args,
    serialFile,
    process: proc,
    startedAt,
    serial,
    async waitForSerial(pattern, timeoutMs = 120_000, failOn) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const gone = proc.exit !== undefined;
        const text = await serial();
        pattern.lastIndex = 0;
        const m = pattern.exec(text);
        if (m) return m;
        if (failOn?.test(text)) throw new Error(`${name}: ${failOn} on serial before ${pattern}${await describe()}`);
        if (gone) {
          const e = await exited;
          throw new Error(`${name}: QEMU exited (code ${e.code ?? e.signal}) before ${pattern} appeared on serial${await describe()}`);
        }
        if (Date.now() > deadline) throw new Error(`${name}: ${pattern} not on serial within ${timeoutMs} ms${await describe()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    exited,
    async kill() {
      await proc.kill();
      return exited;
    },
    async dispose() {
      await proc.kill();
      if (ownDir) await rm(ownDir, { recursive: true, force: true });
    },
  };
}

function label(kind: string, mac: string, name?: string): string {
  return name ?? `${kind}-${mac.replace(/:/g, '').slice(-6)}`;
}

/** A BIOS target (e1000, iPXE ROM) on a site's tap, QEMU running inside the site's namespace. */
export async function bios(o: SiteVmOptions): Promise<Vm> {
  const name = label('bios', o.mac, o.name);
  const serialFile = o.serialFile ?? join(o.site.dir, `${name}.serial`);
  const args = biosArgs({ ...o, serialFile });
  return wrap(name, args, serialFile, o.site.spawn(QEMU_BINARY, args, { name, ...(o.log ? { log: o.log } : {}) }));
}

/** A UEFI target (OVMF, virtio-net, firmware PXE) on a site's tap, inside the site's namespace. */
export async function uefi(o: SiteVmOptions): Promise<Vm> {
  const name = label('uefi', o.mac, o.name);
  const serialFile = o.serialFile ?? join(o.site.dir, `${name}.serial`);
  const varsFile = join(o.site.dir, `${name}.vars.fd`);
  await copyFile(OVMF_VARS, varsFile);
  const args = uefiArgs({ ...o, serialFile, varsFile });
  return wrap(name, args, serialFile, o.site.spawn(QEMU_BINARY, args, { name, ...(o.log ? { log: o.log } : {}) }));
}

async function hostVm(kind: string, mac: string, o: CommonOptions, build: (serialFile: string) => string[]): Promise<Vm> {
  const name = label(kind, mac, o.name);
  const ownDir = o.serialFile ? undefined : await mkdtemp(join(tmpdir(), `bootfarm-${name}-`));
  const serialFile = o.serialFile ?? join(ownDir!, `${name}.serial`);
  const args = build(serialFile);
  return wrap(name, args, serialFile, spawnProcess(QEMU_BINARY, args, { name, ...(o.log ? { log: o.log } : {}) }), ownDir);
}

/** Boots a raw disk image from IDE with no network: checks an image without any server. */
export function localDisk(o: LocalDiskVmOptions): Promise<Vm> {
  return hostVm('disk', '52:54:00:00:00:00', o, (serialFile) => localDiskArgs({ ...o, serialFile }));
}

/** A BIOS target on QEMU's user-mode network (no root): iPXE fetches `bootfile` over HTTP. */
export function userNet(o: UserNetVmOptions): Promise<Vm> {
  const mac = o.mac ?? '52:54:00:12:34:56';
  return hostVm('user', mac, o, (serialFile) => userNetArgs({ ...o, mac, serialFile }));
}
