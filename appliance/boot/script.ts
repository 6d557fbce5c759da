/**
 * iPXE boot scripts (PVS: the bootstrap's login and the server's answer).
 * Pure: a decision in, script text out. Every script ends in a defined way:
 * the disk boots, the local disk boots, or the target waits and retries or
 * reboots with a message a person at the screen can act on.
 */
import type { Site, StreamMode } from '../../model/index.js';

export interface DiskPath {
  /** Appliance name, for messages. */
  name: string;
  /** Full URL of the disk on that appliance. */
  url: string;
  /** A Linux vDisk's kernel and initramfs on that appliance (with `linux` in the plan). */
  kernelUrl?: string;
  initrdUrl?: string;
}

export type BootPlan =
  | {
      kind: 'vdisk';
      target: { name: string; mac: string };
      vdisk: { name: string };
      version: number;
      paths: DiskPath[];
      reason: string;
      /** Where the running OS streams the disk (NBD), in the same order as `paths`; null when not offered. */
      nbd?: { exportName: string; mode: StreamMode; servers: string[] } | null;
      /**
       * A Linux vDisk: iPXE loads the kernel and initramfs from its boot area (`kernelUrl`, `initrdUrl` of each path)
       * and boots them with this command line, instead of sanbooting the disk.
       */
      linux?: { cmdline: string } | null;
    }
  | { kind: 'local-disk'; target: { name: string; mac: string } }
  /** Wait and ask again (the version is still being copied to the site, say). */
  | { kind: 'wait'; message: string; retryUrl: string; seconds: number }
  /** Show why, then reboot (unknown or disabled target, nothing to boot). */
  | { kind: 'refuse'; message: string; seconds: number };

export type Bootstrap = Site['bootstrap'];

/** Free text inside an iPXE `echo`: no settings expansion (`${`), no command separators, no comments. */
export function ipxeText(s: string): string {
  return s.replace(/[^A-Za-z0-9 ._:()/,%=@+-]/g, '?');
}

/** An URL as an iPXE argument: no spaces, no `${`, nothing that ends the command. */
function ipxeUrl(u: string): string {
  if (!/^https?:\/\/[A-Za-z0-9.\-:[\]]+(\/[A-Za-z0-9._~%/=?&:-]*)?$/.test(u)) throw new Error(`not a URL an iPXE script can carry safely: ${u}`);
  return u;
}

/**
 * A kernel command line as iPXE `kernel` arguments: words of characters that
 * are neither iPXE syntax (`${`, `||`, `&&`, quotes, `#`) nor line ends. The
 * boot plan builds it from such words; anything else is a bug, refused.
 */
function linuxWords(cmdline: string): string {
  const words = cmdline.split(' ').filter(Boolean);
  for (const w of words) if (!/^[A-Za-z0-9._~%=:,/@+[\]-]+$/.test(w)) throw new Error(`not a kernel command line word an iPXE script can carry safely: ${w.slice(0, 80)}`);
  return words.join(' ');
}

/** A single word an iPXE `set` can carry: no spaces, no `${`, nothing that ends the command. */
function isIpxeWord(w: string): boolean {
  return /^[A-Za-z0-9._:[\]-]+$/.test(w);
}

export function bootScript(plan: BootPlan, bootstrap: Bootstrap): string {
  const lines = ['#!ipxe'];
  const say = (s: string) => lines.push(`echo bootfarm: ${ipxeText(s)}`);
  const verbose = (s: string) => bootstrap.verbose && say(s);
  switch (plan.kind) {
    case 'refuse':
      say(plan.message);
      say(`restarting in ${plan.seconds} s`);
      lines.push(`sleep ${plan.seconds}`, 'reboot');
      break;
    case 'wait':
      say(plan.message);
      say(`asking again in ${plan.seconds} s`);
      // --replace: the new script takes this one's place; a plain chain would nest scripts until iPXE runs out of memory.
      lines.push(`sleep ${plan.seconds}`, `chain --replace --autofree ${ipxeUrl(plan.retryUrl)} || reboot`);
      break;
    case 'local-disk':
      say(`${plan.target.name} (${plan.target.mac}) boots from its local disk`);
      // BIOS: the first hard disk; UEFI: back to the firmware, which tries its next boot option.
      lines.push('iseq ${platform} efi && exit ||', 'sanboot --no-describe --drive 0x80 || exit');
      break;
    case 'vdisk': {
      say(`${plan.target.name} (${plan.target.mac}): vDisk ${plan.vdisk.name} version ${plan.version} from ${plan.paths[0]!.name}`);
      verbose(plan.reason);
      if (plan.paths.length > 1) verbose(`failover: ${plan.paths.slice(1).map((p) => p.name).join(', ')}`);
      // For the OS's initramfs (kernel command line, issue 10): where its disk is once iPXE's HTTP disk is gone.
      // Values that are not plain words are left out: the HTTP boot does not need them.
      const words = plan.nbd ? [plan.nbd.exportName, ...plan.nbd.servers] : [];
      if (plan.nbd && plan.nbd.servers.length && words.every(isIpxeWord)) {
        lines.push(`set bootfarm-nbd-export ${plan.nbd.exportName}`);
        lines.push(`set bootfarm-nbd-server ${plan.nbd.servers[0]!}`);
        lines.push(`set bootfarm-nbd-servers ${plan.nbd.servers.join(',')}`);
        lines.push(`set bootfarm-write-cache ${plan.nbd.mode}`);
      }
      const pause = Math.max(1, Math.round(bootstrap.pollingTimeoutMs / 1000));
      const recovery = bootstrap.networkRecovery;
      let attempt: (onFailure: string) => string[];
      if (plan.linux) {
        // Each path in turn: its kernel, its initramfs, boot. imgfree first: a path that failed half-way leaves no image behind.
        const cmdline = linuxWords(plan.linux.cmdline);
        const tries = plan.paths.map((p) => {
          if (!p.kernelUrl || !p.initrdUrl) throw new Error(`Linux boot path ${p.name} has no kernel or initrd URL`);
          return ['imgfree', `kernel ${ipxeUrl(p.kernelUrl)} ${cmdline} && initrd ${ipxeUrl(p.initrdUrl)} && boot ||`];
        });
        attempt = (onFailure) => [...tries.flat(), `goto ${onFailure}`];
      } else {
        // Multipath: iPXE uses whichever URI answers and retries all of them if the disk goes away.
        const sanboot = `sanboot --no-describe --drive 0x80 ${plan.paths.map((p) => ipxeUrl(p.url)).join(' ')}`;
        attempt = (onFailure) => [`${sanboot} || goto ${onFailure}`];
        // A read the OS's int 13h is waiting for: iPXE retries it 10 times by default, and a single path's failures can come
        // fast (connection refused while an appliance dies, before its floating address moves). "Restore the connection"
        // keeps retrying (127 is the setting's maximum; reopening waits 5 s between tries).
        if (recovery.action === 'restore-connection') lines.push('set san-retries 127');
      }
      lines.push(...attempt('bf_retry_1'));
      if (recovery.action === 'restore-connection') {
        // PVS "restore network connection": keep trying, every polling timeout.
        lines.push(':bf_retry_1');
        say(`cannot reach the disk: trying again in ${pause} s`);
        lines.push(`sleep ${pause}`, ...attempt('bf_retry_1'));
      } else {
        // PVS "reboot to hard drive after N s": as many attempts as fit in the delay, then the local disk.
        const attempts = Math.max(1, Math.min(60, Math.ceil(recovery.rebootDelaySeconds / pause)));
        for (let i = 1; i <= attempts; i++) {
          lines.push(`:bf_retry_${i}`);
          say(`cannot reach the disk: attempt ${i + 1} of ${attempts + 1} in ${pause} s`);
          lines.push(`sleep ${pause}`, ...attempt(`bf_retry_${i + 1}`));
        }
        lines.push(`:bf_retry_${attempts + 1}`);
        say(`the disk did not answer for ${recovery.rebootDelaySeconds} s: booting from the local disk`);
        lines.push('iseq ${platform} efi && exit ||', 'sanboot --no-describe --drive 0x80 || exit');
      }
      break;
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The generic entry for clients that do not say who they are in the URL (the
 * ProxyDHCP answer, DHCP option 67): it asks again with its MAC and
 * architecture. Relative, so it resolves against wherever it was loaded from.
 */
export function genericScript(fallbacks: readonly string[] = []): string {
  const path = 'boot/${mac:hexhyp}.ipxe?arch=${buildarch}&platform=${platform}';
  // The site's other appliances answer the same request alike (PVS: the bootstrap's login servers in order).
  const others = fallbacks.map((base) => ` || chain --replace --autofree ${ipxeUrl(`${base}/`)}${path}`).join('');
  return `#!ipxe\nchain --replace --autofree ${path}${others} || goto bf_none\n:bf_none\necho bootfarm: no appliance of this site answered: restarting in 30 s\nsleep 30\nreboot\n`;
}

/** A script that waits and asks again, for answers that cannot be the target's script yet. Served with 200: iPXE runs no error body. */
export function retryScript(message: string, url: string, seconds: number): string {
  return bootScript({ kind: 'wait', message, retryUrl: url, seconds }, { verbose: false } as Bootstrap);
}
