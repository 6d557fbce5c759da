/**
 * `bootfarm image build-linux`: a diskless Linux vDisk from Debian packages
 * (images/linux/README.md).
 *
 *   1. a minimal Debian root (debootstrap --variant=minbase), cached per suite,
 *      mirror and package list, trimmed (no docs, man pages, locales, apt lists),
 *      with /etc/bootfarm-release and the login-less check;
 *   2. an initramfs: busybox (static), bootfarm-nbd (built here, static), the
 *      kernel modules the root needs (from the kernel package's modules.dep)
 *      and initramfs/init;
 *   3. a raw disk: DOS partition table, the boot area (model/linux-boot.ts:
 *      header, kernel, initramfs) and an ext4 root made by `mkfs.ext4 -d`
 *      straight into the image at its offset (no loop device, no mount).
 *
 * Results are cached under `cacheDir` by a key over every input (these files,
 * the options, the kernel, busybox): a second build with the same inputs
 * takes no time. Runs as root (debootstrap; the root file system's owners and
 * device nodes).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, open, readFile, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { writeFileAtomic } from '../../appliance/fs-atomic.js';
import { BOOT_HEADER_SIZE, BOOT_PARTITION_TYPE, ROOT_PARTITION_TYPE, encodeBootHeader, encodeMbr } from '../../model/linux-boot.js';

const run = promisify(execFile);
const HERE = fileURLToPath(new URL('.', import.meta.url));
const MiB = 2 ** 20;
/** Bumped when the image layout or the build steps change in a way the input files do not show. */
const BUILDER_VERSION = 2;

export interface BuildLinuxOptions {
  /** Where the finished raw image goes; absent: it stays in the cache (`path` of the result). */
  out?: string;
  /** Debootstrapped roots and finished images, kept between builds. */
  cacheDir: string;
  /** @default 'bookworm' */
  suite?: string;
  /** @default 'http://deb.debian.org/debian' */
  mirror?: string;
  /** Extra Debian packages in the root (debootstrap --include). */
  packages?: readonly string[];
  /** A kernel installed here (/boot/vmlinuz-V, /lib/modules/V); @default the newest with both */
  kernelVersion?: string;
  /** @default 512 */
  sizeMiB?: number;
  /** The root's init. @default '/usr/local/sbin/bootfarm-check' (the login-less check) */
  init?: string;
  /** The image's default kernel command line (the appliance appends bootfarm's parameters). @default 'console=ttyS0,115200 panic=30' */
  cmdline?: string;
  /** First line of /etc/bootfarm-release in the image. @default one naming the suite, kernel and build key */
  release?: string;
  log?: (line: string) => void;
}

export interface BuildLinuxResult {
  path: string;
  sizeBytes: number;
  key: string;
  /** True when the cache already had this image. */
  reused: boolean;
  seconds: number;
  kernelVersion: string;
  kernelBytes: number;
  initrdBytes: number;
  /** Bytes of files in the root file system. */
  rootBytes: number;
  /** The first line of /etc/bootfarm-release. */
  release: string;
  cmdline: string;
}

/** Kernel modules the initramfs loads, in this order, with their dependencies first (CRC32C: ext4's checksums; nbd: partitions). */
const MODULES: readonly (readonly [string, string])[] = [
  ['crc32c_generic', ''],
  ['nbd', 'nbds_max=4 max_part=8'],
  ['e1000', ''],
  ['e1000e', ''],
  ['virtio_pci', ''],
  ['virtio_net', ''],
  ['ext4', ''],
  ['overlay', ''],
];

/**
 * Boot code for the MBR (nasm, 16 bit, org 0x7c00): prints the message that
 * follows it through the BIOS (int 10h teletype: the screen, and the serial
 * console where the BIOS mirrors it), then int 18h (the BIOS tries its next
 * boot device). A BIOS that boots this disk directly says why it cannot.
 *   xor ax,ax / mov ds,ax / mov si,msg / .next: lodsb / test al,al / jz .done /
 *   mov ah,0x0e / mov bx,7 / int 0x10 / jmp .next / .done: int 0x18 / .halt: hlt / jmp .halt / msg:
 */
const MBR_STUB = Buffer.concat([
  Buffer.from('31c08ed8be1a7cac84c07409b40ebb0700cd10ebf2cd18f4ebfd', 'hex'),
  Buffer.from('bootfarm: a Linux vDisk, booted by a bootfarm appliance (not the BIOS)\r\n\0', 'latin1'),
]);

const INPUT_FILES = ['initramfs/init', 'initramfs/udhcpc-script', 'initramfs/bootfarm-nbd.c', 'rootfs/bootfarm-check'];

export class BuildError extends Error {}

export async function buildLinuxImage(o: BuildLinuxOptions): Promise<BuildLinuxResult> {
  const started = Date.now();
  const log = o.log ?? (() => undefined);
  if (process.getuid?.() !== 0) throw new BuildError('building a Linux image needs root (debootstrap, and the root file system keeps its owners and device nodes)');
  for (const [tool, pkg] of [['debootstrap', 'debootstrap'], ['mkfs.ext4', 'e2fsprogs'], ['cpio', 'cpio'], ['gzip', 'gzip'], ['gcc', 'gcc and libc6-dev'], ['busybox', 'busybox-static']] as const)
    if (!(await which(tool))) throw new BuildError(`${tool} not found (Debian package ${pkg})`);
  const suite = o.suite ?? 'bookworm';
  const mirror = o.mirror ?? 'http://deb.debian.org/debian';
  const packages = [...(o.packages ?? [])].sort();
  const sizeMiB = o.sizeMiB ?? 512;
  const init = o.init ?? '/usr/local/sbin/bootfarm-check';
  const cmdline = o.cmdline ?? 'console=ttyS0,115200 panic=30';
  if (!/^\/[A-Za-z0-9._/-]+$/.test(init)) throw new BuildError(`--init ${init}: an absolute path of letters, digits and . _ - /`);
  if (!Number.isInteger(sizeMiB) || sizeMiB < 64 || sizeMiB > 1024 * 1024) throw new BuildError(`--size ${sizeMiB}: between 64 and 1048576 MiB`);
  const kver = o.kernelVersion ?? (await newestKernel());
  const vmlinuz = `/boot/vmlinuz-${kver}`;
  const modulesDir = `/lib/modules/${kver}`;
  if (!(await exists(vmlinuz)) || !(await exists(join(modulesDir, 'modules.dep'))))
    throw new BuildError(`kernel ${kver}: ${vmlinuz} and ${modulesDir}/modules.dep are needed (Debian package linux-image-${kver})`);
  const busybox = (await which('busybox'))!;
  if (!(await run('file', ['-b', busybox]).then((r) => /statically linked/.test(r.stdout), () => true))) throw new BuildError(`${busybox} is not statically linked (Debian package busybox-static)`);

  const fullCmdline = `${cmdline} init=${init}`;
  const inputs = {
    builder: BUILDER_VERSION,
    suite,
    mirror,
    packages,
    sizeMiB,
    init,
    cmdline: fullCmdline,
    release: o.release ?? null,
    kernel: await fileId(vmlinuz),
    busybox: await fileId(busybox),
    files: Object.fromEntries(await Promise.all(INPUT_FILES.map(async (f) => [f, sha256(await readFile(join(HERE, f)))]))),
  };
  const key = sha256(Buffer.from(JSON.stringify(inputs))).slice(0, 16);
  const release = o.release ?? `bootfarm Linux image ${key} (Debian ${suite}, kernel ${kver})`;
  if (/[\r\n]/.test(release)) throw new BuildError('--release: one line');
  const imagesDir = join(o.cacheDir, 'images');
  const cached = join(imagesDir, `linux-${key}.raw`);
  const meta = `${cached}.json`;
  await mkdir(imagesDir, { recursive: true });

  const fromCache = async () => {
    log(`image ${key} is in the cache: ${cached}`);
    const m = JSON.parse(await readFile(meta, 'utf8')) as BuildLinuxResult;
    const path = o.out ? await place(cached, o.out) : cached;
    return { ...m, path, reused: true, seconds: (Date.now() - started) / 1000 };
  };
  if (await exists(meta)) return fromCache();
  // One build per cache folder at a time (two test files, two shells): the second waits and finds the image made.
  return withLock(join(o.cacheDir, '.build.lock'), log, async () => {
    if (await exists(meta)) return fromCache();
    return build();
  });

  async function build(): Promise<BuildLinuxResult> {
    const work = await mkdtemp(join(o.cacheDir, 'work-'));
    try {
      const base = await debianRoot({ cacheDir: o.cacheDir, suite, mirror, packages, log });
      log('preparing the root file system');
      const root = join(work, 'root');
      await run('cp', ['-a', '--reflink=auto', `${base}/.`, root]);
      await trimRoot(root);
      await writeFile(join(root, 'etc/bootfarm-release'), `${release}\n`);
      await mkdir(join(root, 'usr/local/sbin'), { recursive: true });
      await copyFile(join(HERE, 'rootfs/bootfarm-check'), join(root, 'usr/local/sbin/bootfarm-check'));
      await chmod(join(root, 'usr/local/sbin/bootfarm-check'), 0o755);
      // The initramfs sets the host name from the boot script; a file here would override it.
      await rm(join(root, 'etc/hostname'), { force: true });
      await writeFile(join(root, 'etc/fstab'), '# The root file system is mounted by the bootfarm initramfs (images/linux/README.md).\n');
      const rootBytes = Number((await run('du', ['-sb', root])).stdout.split(/\s/)[0]);

      log('making the initramfs');
      const initrd = await buildInitramfs({ work, busybox, modulesDir, log });
      const kernel = await readFile(vmlinuz);
      const initrdBytes = await readFile(initrd);

      log('writing the disk');
      const tmp = join(work, 'image.raw');
      const layout = await writeDisk({ path: tmp, sizeBytes: sizeMiB * MiB, kernel, initrd: initrdBytes, cmdline: fullCmdline });
      if (rootBytes > layout.rootSize * 0.85) throw new BuildError(`the root file system (${Math.ceil(rootBytes / MiB)} MiB) does not fit a ${sizeMiB} MiB image: --size`);
      const uuid = `${key.slice(0, 8)}-${key.slice(8, 12)}-4${key.slice(13, 16)}-8000-000000000000`;
      await run(
        'mkfs.ext4',
        ['-q', '-F', '-L', 'bootfarm-root', '-U', uuid, '-b', '4096', '-I', '256', '-E', `offset=${layout.rootOffset},nodiscard,lazy_itable_init=0,lazy_journal_init=0,hash_seed=${uuid}`, '-d', root, tmp, String(layout.rootSize / 4096)],
        // Fixed time stamps in the file system's own structures (e2fsprogs' test hook; file times come from the files).
        { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1700000000' }, maxBuffer: 16 * MiB },
      );
      const result: BuildLinuxResult = {
        path: cached,
        sizeBytes: sizeMiB * MiB,
        key,
        reused: false,
        seconds: 0,
        kernelVersion: kver,
        kernelBytes: kernel.length,
        initrdBytes: initrdBytes.length,
        rootBytes,
        release,
        cmdline: fullCmdline,
      };
      await rename(tmp, cached);
      // The cache's completion mark: atomic, so an interrupted build never leaves a half-written one every later build trips on.
      await writeFileAtomic(meta, JSON.stringify(result, null, 2));
      const path = o.out ? await place(cached, o.out) : cached;
      return { ...result, path, seconds: (Date.now() - started) / 1000 };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
}

/** Runs `f` holding a lock file (its owner's pid inside; a lock whose owner is gone is taken over). */
async function withLock<T>(path: string, log: (l: string) => void, f: () => Promise<T>): Promise<T> {
  let said = false;
  for (;;) {
    try {
      const fh = await open(path, 'wx');
      await fh.write(String(process.pid));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(await readFile(path, 'utf8').catch(() => ''));
      let alive = false;
      try {
        if (pid > 0) process.kill(pid, 0);
        alive = pid > 0;
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
      if (!alive) {
        await rm(path, { force: true });
        continue;
      }
      if (!said) log(`another build (pid ${pid}) holds ${path}: waiting for it`);
      said = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await f();
  } finally {
    await rm(path, { force: true });
  }
}

/** A minbase Debian root, debootstrapped once per suite, mirror and package list. */
async function debianRoot(o: { cacheDir: string; suite: string; mirror: string; packages: string[]; log: (l: string) => void }): Promise<string> {
  const id = sha256(Buffer.from(JSON.stringify([o.suite, o.mirror, o.packages]))).slice(0, 12);
  const dir = join(o.cacheDir, 'rootfs', `${o.suite}-${id}`);
  if (await exists(join(dir, '.bootfarm-complete'))) return dir;
  await mkdir(join(o.cacheDir, 'rootfs'), { recursive: true });
  const tmp = `${dir}.partial`;
  await rm(tmp, { recursive: true, force: true });
  o.log(`debootstrap ${o.suite} (minbase${o.packages.length ? ` + ${o.packages.join(', ')}` : ''}) from ${o.mirror}`);
  const args = ['--variant=minbase', ...(o.packages.length ? [`--include=${o.packages.join(',')}`] : []), o.suite, tmp, o.mirror];
  await run('debootstrap', args, { maxBuffer: 64 * MiB }).catch((e: { stdout?: string; stderr?: string; message: string }) => {
    throw new BuildError(`debootstrap failed: ${(e.stderr || e.stdout || e.message).trim().split('\n').slice(-5).join('\n')}`);
  });
  await writeFile(join(tmp, '.bootfarm-complete'), new Date().toISOString());
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  return dir;
}

/** What a diskless target never reads: package lists, caches, documentation, man pages, translations, logs. */
async function trimRoot(root: string): Promise<void> {
  for (const d of ['var/cache/apt', 'var/lib/apt/lists', 'usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'var/log', 'tmp']) {
    const p = join(root, d);
    for (const f of await readdir(p).catch(() => [] as string[])) await rm(join(p, f), { recursive: true, force: true });
  }
  await rm(join(root, '.bootfarm-complete'), { force: true });
}

/** The initramfs as a gzip'd newc cpio, reproducible (sorted names, fixed times and owners). */
async function buildInitramfs(o: { work: string; busybox: string; modulesDir: string; log: (l: string) => void }): Promise<string> {
  const dir = join(o.work, 'initramfs');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'run', 'root', 'lib/modules', 'tmp']) await mkdir(join(dir, d), { recursive: true });
  await copyFile(o.busybox, join(dir, 'bin/busybox'));
  await chmod(join(dir, 'bin/busybox'), 0o755);
  const applets = (await run(o.busybox, ['--list'])).stdout.split('\n').filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== 'busybox');
  for (const a of applets) await symlink('busybox', join(dir, 'bin', a));
  await symlink('bin', join(dir, 'sbin'));
  await run('gcc', ['-static', '-Os', '-s', '-Wall', '-Wextra', '-Werror', '-o', join(dir, 'bin/bootfarm-nbd'), join(HERE, 'initramfs/bootfarm-nbd.c')]).catch((e: { stderr?: string; message: string }) => {
    throw new BuildError(`building bootfarm-nbd failed: ${(e.stderr || e.message).trim()}`);
  });
  for (const [from, to] of [['initramfs/init', 'init'], ['initramfs/udhcpc-script', 'bin/udhcpc-script']]) {
    await copyFile(join(HERE, from!), join(dir, to!));
    await chmod(join(dir, to!), 0o755);
  }
  // The console must exist before /init runs: the kernel opens it for /init's stdin, stdout and stderr.
  await run('mknod', ['-m', '600', join(dir, 'dev/console'), 'c', '5', '1']);
  await run('mknod', ['-m', '666', join(dir, 'dev/null'), 'c', '1', '3']);

  const order = await moduleLoadOrder(o.modulesDir, MODULES.map(([m]) => m));
  const params = new Map(MODULES.map(([m, p]) => [m, p]));
  const lines: string[] = [];
  for (const rel of order) {
    const name = moduleName(rel);
    const target = join(dir, 'lib/modules', rel.replace(/\.(xz|zst|gz)$/, ''));
    await mkdir(join(target, '..'), { recursive: true });
    if (rel.endsWith('.ko')) await copyFile(join(o.modulesDir, rel), target);
    else {
      const tool = rel.endsWith('.xz') ? ['xz', '-dc'] : rel.endsWith('.zst') ? ['zstd', '-dc'] : ['gzip', '-dc'];
      const { stdout } = await run(tool[0]!, [tool[1]!, join(o.modulesDir, rel)], { encoding: 'buffer', maxBuffer: 64 * MiB });
      await writeFile(target, stdout);
    }
    lines.push(`${rel.replace(/\.(xz|zst|gz)$/, '')}${params.get(name) ? ` ${params.get(name)}` : ''}`);
  }
  await writeFile(join(dir, 'lib/modules/load-order'), `${lines.join('\n')}\n`);
  o.log(`initramfs: busybox (${applets.length} applets), bootfarm-nbd, ${order.length} modules (${order.map(moduleName).join(' ')})`);

  const out = join(o.work, 'initrd.img');
  await run('sh', ['-c', 'set -e; find . -exec touch -h -d @1700000000 {} +; find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --reproducible --owner=0:0 --quiet | gzip -9n > "$1"', 'sh', out], { cwd: dir });
  return out;
}

function moduleName(rel: string): string {
  return rel.split('/').pop()!.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

/** The modules (paths relative to the modules folder) to load for `wanted`, each after its dependencies; built-in and missing ones are skipped. */
export async function moduleLoadOrder(modulesDir: string, wanted: readonly string[]): Promise<string[]> {
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of (await readFile(join(modulesDir, 'modules.dep'), 'utf8')).split('\n')) {
    const [path, rest] = line.split(':');
    if (!path || rest === undefined) continue;
    deps.set(moduleName(path), { path, deps: rest.trim().split(/\s+/).filter(Boolean).map(moduleName) });
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    if (seen.has(name)) return;
    if (chain.includes(name)) throw new BuildError(`modules.dep has a cycle: ${[...chain, name].join(' -> ')}`);
    const m = deps.get(name);
    if (!m) return;
    for (const d of m.deps) visit(d, [...chain, name]);
    seen.add(name);
    order.push(m.path);
  };
  for (const w of wanted) visit(w.replace(/-/g, '_'), []);
  return order;
}

export interface DiskLayout {
  bootOffset: number;
  kernelOffset: number;
  initrdOffset: number;
  rootOffset: number;
  rootSize: number;
}

/** Writes the partition table and the boot area into a new sparse file of `sizeBytes`; the root partition is left for mkfs. */
export async function writeDisk(o: { path: string; sizeBytes: number; kernel: Buffer; initrd: Buffer; cmdline: string }): Promise<DiskLayout> {
  const align = (n: number, a: number) => Math.ceil(n / a) * a;
  const bootOffset = MiB;
  const kernelOffset = bootOffset + BOOT_HEADER_SIZE;
  const initrdOffset = align(kernelOffset + o.kernel.length, 4096);
  const rootOffset = align(initrdOffset + o.initrd.length, MiB);
  const rootSize = o.sizeBytes - rootOffset;
  if (rootSize < 32 * MiB) throw new BuildError(`a ${o.sizeBytes / MiB} MiB image leaves no room for a root file system after ${rootOffset / MiB} MiB of kernel and initramfs`);
  const header = encodeBootHeader({
    kernel: { offset: kernelOffset, size: o.kernel.length, sha256: sha256(o.kernel) },
    initrd: { offset: initrdOffset, size: o.initrd.length, sha256: sha256(o.initrd) },
    cmdline: o.cmdline,
  });
  const mbr = encodeMbr(
    [
      { type: BOOT_PARTITION_TYPE, startLba: bootOffset / 512, sectors: (rootOffset - bootOffset) / 512 },
      { type: ROOT_PARTITION_TYPE, startLba: rootOffset / 512, sectors: rootSize / 512 },
    ],
    { diskSignature: 0x62666c31, bootCode: MBR_STUB },
  );
  const fh = await open(o.path, 'w');
  try {
    await fh.truncate(o.sizeBytes);
    await fh.write(mbr, 0, mbr.length, 0);
    await fh.write(header, 0, header.length, bootOffset);
    await fh.write(o.kernel, 0, o.kernel.length, kernelOffset);
    await fh.write(o.initrd, 0, o.initrd.length, initrdOffset);
  } finally {
    await fh.close();
  }
  return { bootOffset, kernelOffset, initrdOffset, rootOffset, rootSize };
}

async function newestKernel(): Promise<string> {
  const versions: string[] = [];
  for (const v of await readdir('/lib/modules').catch(() => [] as string[])) if (await exists(`/boot/vmlinuz-${v}`)) versions.push(v);
  if (!versions.length) throw new BuildError('no kernel: /boot/vmlinuz-V with /lib/modules/V (Debian package linux-image-amd64)');
  return versions.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1)!;
}

/** A copy of the cached image at `out` (sparse, reflinked where the file system can). */
async function place(from: string, out: string): Promise<string> {
  await run('cp', ['--sparse=always', '--reflink=auto', from, out]);
  return out;
}

async function which(tool: string): Promise<string | null> {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin']))
    if (dir && (await exists(join(dir, tool)))) return join(dir, tool);
  return null;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function fileId(p: string): Promise<string> {
  const s = await stat(p);
  return `${p}:${s.size}:${s.mtimeMs}`;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
