/**
 * The ProxyDHCP decision: a pure function of (request, config, port). It never
 * hands out addresses (the site's DHCP server owns them); it only tells PXE
 * clients which first-stage file to load, and iPXE which boot script to run.
 *
 * Behaviour and its sources:
 * - PXE 2.1 spec §2.2.1 (ProxyDHCP on UDP 67 and 4011), §2.4.5 (option 43).
 * - RFC 4578 (options 93, 94, 97), RFC 3004 (77), RFC 2131 table 3 (reply fields).
 * - EDK2 NetworkPkg/UefiPxeBcDxe/PxeBcDhcp4.c (PxeBcParseDhcp4Packet,
 *   PxeBcRetryBinlOffer): how UEFI firmware classifies and uses a proxy offer.
 */
import { BOOTREPLY, BOOTREQUEST, hardwareAddress, isIpv4, messageTypeName, type DhcpOption, type DhcpPacket } from './codec.js';
import {
  ARCH,
  DISCOVERY_CONTROL_USE_BOOTFILE,
  MSG,
  OPT,
  PXE_SUBOPT,
  archName,
  byteOption,
  clientArchs,
  encodePxeVendorOptions,
  getOption,
  ipOption,
  messageType,
  parameterRequestList,
  serverId,
  stringOption,
  userClasses,
  vendorClass,
  vendorClassArch,
} from './options.js';

export interface ProxyConfig {
  /** This appliance's address on the clients' network: option 54, siaddr (the TFTP server). */
  serverIp: string;
  /** HTTP URL of the generic iPXE boot script, given to clients already running iPXE. */
  scriptUrl: string;
  /** Full URL of the first stage for UEFI HTTP Boot clients (arch 16), or null to ignore them. */
  httpBootUrl: string | null;
  /** First-stage files on the appliance's TFTP server, by firmware. */
  files: {
    bios: string;
    uefiX64: string;
    uefiIa32?: string | null;
    arm64?: string | null;
  };
}

/** What Debian's `ipxe` package ships (/usr/lib/ipxe) and most sites use. */
export const DEFAULT_BOOT_FILES = { bios: 'undionly.kpxe', uefiX64: 'snponly.efi' } as const;

export type Firmware = 'bios' | 'uefi' | 'uefi-http';

/** Who asked, as the decision understood it (for logs and boot events). */
export interface PxeClient {
  mac: string;
  arch: number;
  archName: string;
  firmware: Firmware;
  /** The client is iPXE (user class contains "iPXE"): it gets the boot script. */
  ipxe: boolean;
}

export type ProxyDecision =
  | { reply: DhcpPacket; client: PxeClient; bootFile: string; reason?: undefined }
  | { reply: null; reason: string; client?: PxeClient };

/** The file name fits `file` with its NUL terminator (RFC 2131 §2: 128 octets). */
const FILE_FIELD_MAX = 127;

/**
 * Decide the reply to one request received on `port` (67: DHCP server port,
 * 4011: PXE boot server / "BINL" port). Returns the reply, or null and the
 * reason it is ignored (for a debug log).
 */
export function proxyReply(request: DhcpPacket, cfg: ProxyConfig, port: 67 | 4011): ProxyDecision {
  if (request.op !== BOOTREQUEST) return ignore('not a BOOTREQUEST');
  if (!isIpv4(cfg.serverIp) || cfg.serverIp === '0.0.0.0') return ignore(`config: serverIp ${JSON.stringify(cfg.serverIp)} is not a usable IPv4 address`);

  const type = messageType(request);
  let replyType: number;
  if (port === 67) {
    if (type === MSG.DISCOVER) {
      replyType = MSG.OFFER;
    } else if (type === MSG.REQUEST) {
      // RFC 2131 §4.3.2: a REQUEST in SELECTING state names the server it chose.
      // One naming us comes from a client that took our offer as its DHCP
      // server's; any other REQUEST belongs to the site's DHCP server.
      const sid = serverId(request);
      if (sid !== cfg.serverIp) return ignore(sid ? `DHCPREQUEST for server ${sid}, not us` : 'DHCPREQUEST without server id (renewal or reboot), for the DHCP server');
      // A REQUEST that names us but asks for an address (option 50, RFC 2131
      // §4.3.2) selects a DHCP server that shares our address (dnsmasq on the
      // appliance itself): an ACK from us, without an address, could be taken
      // for that server's and leave the client with none.
      const requested = getOption(request, OPT.REQUESTED_IP);
      if (requested && !(requested.length === 4 && requested.readUInt32BE(0) === 0)) {
        return ignore(`DHCPREQUEST for address ${[...requested].join('.')}: for the DHCP server that shares our server id`);
      }
      replyType = MSG.ACK;
    } else {
      return ignore(`${messageTypeName(type)} on port 67: only DISCOVER and REQUEST are answered`);
    }
  } else {
    // PXE 2.1 §2.2.1: on 4011 the client already has its address and asks for
    // the boot file with a REQUEST (or INFORM); the answer is an ACK.
    if (type !== MSG.REQUEST && type !== MSG.INFORM) return ignore(`${messageTypeName(type)} on port 4011: only REQUEST and INFORM are answered`);
    replyType = MSG.ACK;
  }

  const vc = vendorClass(request);
  const archs = clientArchs(request);
  const isPxeClass = vc?.startsWith('PXEClient') ?? false;
  const isHttpClass = vc?.startsWith('HTTPClient') ?? false;
  if (!isPxeClass && !isHttpClass && archs.length === 0) {
    return ignore(vc === undefined ? 'not a PXE client (no option 60 or 93)' : `not a PXE client (vendor class ${JSON.stringify(vc)}, no option 93)`);
  }

  const mac = hardwareAddress(request);
  const ipxe = userClasses(request).some((c) => c.includes('iPXE'));
  // Option 93 may list several types in the client's order (RFC 4578 §2.1):
  // take the first we can serve. Without 93 the vendor class names the arch;
  // a bare "PXEClient" is a legacy BIOS ROM.
  const candidates = archs.length > 0 ? archs : [vendorClassArch(vc) ?? ARCH.BIOS];
  let choice: { arch: number; firmware: Firmware; file: string } | undefined;
  const refusals: string[] = [];
  for (const arch of candidates) {
    const r = bootFileFor(arch, isHttpClass, ipxe, cfg);
    if ('file' in r) {
      choice = { arch, ...r };
      break;
    }
    refusals.push(r.reason);
  }
  if (!choice) {
    const arch = candidates[0]!;
    return { reply: null, reason: refusals.join('; '), client: { mac, arch, archName: archName(arch), firmware: firmwareOf(arch, isHttpClass), ipxe } };
  }

  const client: PxeClient = { mac, arch: choice.arch, archName: archName(choice.arch), firmware: choice.firmware, ipxe };
  const options: DhcpOption[] = [
    byteOption(OPT.MESSAGE_TYPE, replyType),
    ipOption(OPT.SERVER_ID, cfg.serverIp),
    // PXE 2.1 §2.2.1.2 / UEFI 2.x §24.7 (HTTP Boot): the reply names the class
    // it serves; EDK2 compares the first 9 ("PXEClient") or 10 ("HTTPClient") octets.
    stringOption(OPT.VENDOR_CLASS, choice.firmware === 'uefi-http' ? 'HTTPClient' : 'PXEClient'),
  ];
  // PXE 2.1 §2.2.1.2: echo the client's machine id. (Some ROMs ignore replies without it.)
  const machineId = getOption(request, OPT.CLIENT_MACHINE_ID);
  if (machineId !== undefined && machineId.length <= 255) options.push({ code: OPT.CLIENT_MACHINE_ID, data: machineId });
  // Option 43 sub-option 6 = 8: "boot the file named here, no boot server
  // discovery, no menu" (PXE 2.1 §2.4.5.2). BIOS PXE ROMs need it to use the
  // proxy offer's file directly. UEFI firmware gets no option 43: EDK2 then
  // classifies the offer as "ProxyBinl" and asks for the file again with a
  // REQUEST on 4011, which is answered below; an offer with discovery options
  // ("ProxyPxe10") is dropped by some EDK2 builds (PxeBcCacheDhcp4Offer kept
  // only a second such offer) or sends them into boot server discovery.
  if (choice.firmware === 'bios') {
    options.push({ code: OPT.VENDOR_SPECIFIC, data: encodePxeVendorOptions([byteOption(PXE_SUBOPT.DISCOVERY_CONTROL, DISCOVERY_CONTROL_USE_BOOTFILE)]) });
  }
  // The file goes in `file` (every PXE ROM reads it). Option 67 is added when
  // the client asked for it (RFC 2132 §9.8; EDK2 and iPXE both do, and both
  // prefer 67 when present) or when the name is too long for `file` (URLs).
  // Option 66 is never sent: it is a server *name* that firmware would have to
  // resolve, while every PXE client takes the TFTP server from siaddr.
  const fits = Buffer.byteLength(choice.file, 'latin1') <= FILE_FIELD_MAX;
  if (!fits || parameterRequestList(request).includes(OPT.BOOTFILE_NAME)) {
    if (Buffer.byteLength(choice.file, 'latin1') > 255) return ignore(`boot file name is ${choice.file.length} characters, option 67 holds 255`);
    options.push(stringOption(OPT.BOOTFILE_NAME, choice.file));
  }

  const reply: DhcpPacket = {
    op: BOOTREPLY,
    htype: request.htype,
    hlen: request.hlen,
    hops: 0,
    xid: request.xid,
    secs: 0,
    // RFC 2131 table 3: flags and giaddr are copied from the request.
    flags: request.flags,
    // RFC 2131 table 3: ciaddr is 0 in an OFFER, the client's in an ACK.
    ciaddr: replyType === MSG.ACK ? request.ciaddr : '0.0.0.0',
    // Never an address: the site's DHCP server owns them. EDK2 treats yiaddr
    // 0.0.0.0 as the mark of a proxy offer (IS_PROXY_DHCP_OFFER).
    yiaddr: '0.0.0.0',
    siaddr: cfg.serverIp,
    giaddr: request.giaddr,
    chaddr: Buffer.from(request.chaddr),
    sname: '',
    file: fits ? choice.file : '',
    options,
  };
  return { reply, client, bootFile: choice.file };

  function ignore(reason: string): ProxyDecision {
    return { reply: null, reason };
  }
}

function firmwareOf(arch: number, httpClass: boolean): Firmware {
  if (httpClass || HTTP_ARCHS.includes(arch)) return 'uefi-http';
  return arch === ARCH.BIOS ? 'bios' : 'uefi';
}

const HTTP_ARCHS: number[] = [ARCH.EFI_IA32_HTTP, ARCH.EFI_X64_HTTP, ARCH.EFI_ARM32_HTTP, ARCH.EFI_ARM64_HTTP];

/** The first stage for one architecture, or why there is none. */
function bootFileFor(arch: number, httpClass: boolean, ipxe: boolean, cfg: ProxyConfig): { firmware: Firmware; file: string } | { reason: string } {
  const firmware = firmwareOf(arch, httpClass);
  let file: string | null | undefined;
  let missing: string;
  if (firmware === 'uefi-http') {
    // UEFI 2.x §24.7: an HTTP Boot client needs a full URL; x86-64 is the one configured.
    if (arch !== ARCH.EFI_X64_HTTP && arch !== ARCH.EFI_X64 && arch !== ARCH.EFI_BC) return { reason: `HTTP Boot for ${archName(arch)} is not supported` };
    file = cfg.httpBootUrl;
    missing = 'UEFI HTTP Boot client, but no httpBootUrl configured';
  } else {
    switch (arch) {
      case ARCH.BIOS:
        file = cfg.files.bios;
        missing = 'BIOS client, but no bios boot file configured';
        break;
      case ARCH.EFI_X64:
      case ARCH.EFI_BC:
        file = cfg.files.uefiX64;
        missing = 'EFI x86-64 client, but no uefiX64 boot file configured';
        break;
      case ARCH.EFI_IA32:
        file = cfg.files.uefiIa32;
        missing = 'EFI IA32 client, but no uefiIa32 boot file configured';
        break;
      case ARCH.EFI_ARM64:
        file = cfg.files.arm64;
        missing = 'EFI ARM64 client, but no arm64 boot file configured';
        break;
      default:
        return { reason: `unsupported architecture ${arch} (${archName(arch)})` };
    }
  }
  // Step 4 of the boot chain: iPXE already runs, so hand it the script, not
  // the binary it came from (that would chainload forever).
  if (ipxe) return { firmware, file: cfg.scriptUrl };
  return file ? { firmware, file } : { reason: missing };
}
