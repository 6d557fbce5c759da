/**
 * ProxyDHCP server: a thin shell of UDP sockets around `decodeDhcp`,
 * `proxyReply` and `encodeDhcp`. Both listening sockets are bound before it
 * serves (a bind error rejects the start); after that nothing a client sends
 * can stop it: a malformed packet is counted, logged at debug and dropped.
 *
 * Sockets (see README.md "Sockets and addresses"):
 * - `bindAddress:67` receives the broadcasts (bound to 0.0.0.0, as it must be to
 *   see packets sent to 255.255.255.255). Opened with SO_REUSEADDR so that a
 *   second socket can hold serverIp:67.
 * - `serverIp:67` (opened on first use, only when bindAddress is 0.0.0.0)
 *   sends the broadcast replies. Linux routes a datagram to 255.255.255.255
 *   through the interface of the socket's bound address, and through the
 *   default route (or nowhere: ENETUNREACH) for a socket bound to 0.0.0.0.
 *   Binding serverIp makes the reply leave by the clients' network even on a
 *   multi-homed appliance. Unicast requests to serverIp:67 land on it and are
 *   served like the others.
 * - `bindAddress:4011` without SO_REUSEADDR: a second ProxyDHCP process on
 *   the same host fails to start with EADDRINUSE instead of silently sharing
 *   the ports. (Tests that want two servers give them other ports.)
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { LogFn } from '../log.js';
import { BROADCAST_FLAG, DhcpDecodeError, decodeDhcp, encodeDhcp, hardwareAddress, messageTypeName, type DhcpPacket } from './codec.js';
import { messageType } from './options.js';
import { proxyReply, type ProxyConfig } from './proxy.js';

export interface ProxyDhcpOptions {
  /** @default '0.0.0.0' (needed to receive broadcast DISCOVERs) */
  bindAddress?: string;
  /**
   * dhcp: the DHCP server port (67), pxe: the PXE boot server port (4011),
   * client: where broadcast/unicast replies to port-67 requests go (68).
   * 0 picks a free port (tests).
   * @default { dhcp: 67, pxe: 4011, client: 68 }
   */
  ports?: { dhcp?: number; pxe?: number; client?: number };
  /** Read on every packet; null means ProxyDHCP is off for the site: every packet is ignored. */
  config: () => ProxyConfig | null;
  log: LogFn;
}

export interface ProxyDhcpStats {
  /** Datagrams received on all sockets. */
  received: number;
  /** Not a DHCP packet we can read (DhcpDecodeError). */
  malformed: number;
  /** Read but not answered: not PXE, not for us, ProxyDHCP off, no file for the arch. */
  ignored: number;
  replied: number;
  /** Replies the kernel refused to send, and unexpected errors while handling a packet. */
  errors: number;
}

export interface ProxyDhcpServer {
  /** The ports actually bound (differs from the options only when 0 was asked). */
  readonly ports: { dhcp: number; pxe: number };
  stats(): ProxyDhcpStats;
  /** Closes every socket; packets in flight are dropped. */
  close(): Promise<void>;
}

type LogicalPort = 67 | 4011;

export interface ReplyDestination {
  address: string;
  port: number;
}

/**
 * Where a reply goes (pure, for tests).
 * Port 4011: back to the sender's address and port (PXE 2.1 §2.2.1.4).
 * Port 67, RFC 2131 §4.1 ("If the 'giaddr' field in a DHCP message from a client
 * is non-zero, the server sends any return messages to the 'DHCP server' port
 * on the BOOTP relay agent whose address appears in 'giaddr'..."):
 * - giaddr set: the relay, giaddr:67 (here: the dhcp port);
 * - else ciaddr set and broadcast flag clear: unicast ciaddr:68. (RFC 2131 would
 *   unicast to ciaddr even with the flag set; honouring the flag costs nothing
 *   on the local link and suits clients that cannot receive unicast yet);
 * - else broadcast 255.255.255.255:68: the RFC's "unicast to yiaddr" case does
 *   not exist for a proxy, whose yiaddr is always 0.0.0.0.
 */
export function replyDestination(request: DhcpPacket, port: LogicalPort, sender: Pick<RemoteInfo, 'address' | 'port'>, ports: { dhcp: number; client: number }): ReplyDestination {
  if (port === 4011) return { address: sender.address, port: sender.port };
  if (request.giaddr !== '0.0.0.0') return { address: request.giaddr, port: ports.dhcp };
  if (request.ciaddr !== '0.0.0.0' && (request.flags & BROADCAST_FLAG) === 0) return { address: request.ciaddr, port: ports.client };
  return { address: '255.255.255.255', port: ports.client };
}

export async function startProxyDhcp(opts: ProxyDhcpOptions): Promise<ProxyDhcpServer> {
  const bindAddress = opts.bindAddress ?? '0.0.0.0';
  const clientPort = opts.ports?.client ?? 68;
  const { log, config } = opts;
  const counters: ProxyDhcpStats = { received: 0, malformed: 0, ignored: 0, replied: 0, errors: 0 };
  const sockets: Socket[] = [];
  let closed = false;

  const dhcpSocket = await bindSocket(bindAddress, opts.ports?.dhcp ?? 67, true);
  sockets.push(dhcpSocket);
  let pxeSocket: Socket;
  try {
    pxeSocket = await bindSocket(bindAddress, opts.ports?.pxe ?? 4011, false);
  } catch (err) {
    await closeSocket(dhcpSocket);
    throw err;
  }
  sockets.push(pxeSocket);
  const ports = { dhcp: dhcpSocket.address().port, pxe: pxeSocket.address().port };

  /** serverIp -> socket bound to serverIp:dhcp, or null when that bind failed (fall back to dhcpSocket). */
  const broadcastSockets = new Map<string, Promise<Socket | null>>();

  function broadcastSocketFor(serverIp: string): Promise<Socket | null> {
    let s = broadcastSockets.get(serverIp);
    if (!s) {
      s = bindSocket(serverIp, ports.dhcp, true).then(
        (sock) => {
          if (closed) {
            void closeSocket(sock);
            return null;
          }
          sockets.push(sock);
          serve(sock, 67);
          return sock;
        },
        (err: Error) => {
          log('warn', 'proxydhcp: cannot bind the reply socket on serverIp; broadcast replies follow the routing table (the default route) instead', { serverIp, error: err.message });
          // Tried again a moment later: a floating address may arrive on this host (site HA).
          const forget = setTimeout(() => broadcastSockets.delete(serverIp), 1000);
          forget.unref();
          return null;
        },
      );
      broadcastSockets.set(serverIp, s);
    }
    return s;
  }

  function serve(sock: Socket, port: LogicalPort): void {
    sock.on('message', (msg, rinfo) => {
      // Nothing a client sends may escape this handler.
      handle(msg, rinfo, port).catch((err: unknown) => {
        counters.errors++;
        log('error', 'proxydhcp: unexpected error handling a packet', { error: err instanceof Error ? err.message : String(err), from: `${rinfo.address}:${rinfo.port}` });
      });
    });
    // Errors after bind (e.g. ICMP unreachable surfaced by the kernel) are logged, not fatal.
    sock.on('error', (err) => log('warn', 'proxydhcp: socket error', { port, error: err.message }));
  }

  async function handle(msg: Buffer, rinfo: RemoteInfo, port: LogicalPort): Promise<void> {
    counters.received++;
    const from = `${rinfo.address}:${rinfo.port}`;
    let request: DhcpPacket;
    try {
      request = decodeDhcp(msg);
    } catch (err) {
      if (!(err instanceof DhcpDecodeError)) throw err;
      counters.malformed++;
      log('debug', 'proxydhcp: malformed packet dropped', { from, port, bytes: msg.length, code: err.code, error: err.message });
      return;
    }
    const cfg = config();
    if (!cfg) {
      counters.ignored++;
      log('debug', 'proxydhcp: ignored, ProxyDHCP is off for this site', { from, port });
      return;
    }
    const decision = proxyReply(request, cfg, port);
    const fields = { from, port, mac: hardwareAddress(request), xid: request.xid, type: messageTypeName(messageType(request)) };
    if (!decision.reply) {
      counters.ignored++;
      log('debug', 'proxydhcp: ignored', { ...fields, reason: decision.reason, ...(decision.client ? { arch: decision.client.arch } : {}) });
      return;
    }
    const dest = replyDestination(request, port, rinfo, { dhcp: ports.dhcp, client: clientPort });
    let sock = port === 4011 ? pxeSocket : dhcpSocket;
    if (port === 67 && dest.address === '255.255.255.255' && bindAddress === '0.0.0.0') {
      sock = (await broadcastSocketFor(cfg.serverIp)) ?? dhcpSocket;
    }
    if (closed) {
      counters.ignored++;
      return;
    }
    const bytes = encodeDhcp(decision.reply);
    try {
      await send(sock, bytes, dest);
    } catch (err) {
      counters.errors++;
      log('warn', 'proxydhcp: reply not sent', { ...fields, to: `${dest.address}:${dest.port}`, error: (err as Error).message });
      return;
    }
    counters.replied++;
    log('info', 'proxydhcp: reply sent', {
      ...fields,
      reply: messageTypeName(messageType(decision.reply)),
      to: `${dest.address}:${dest.port}`,
      arch: decision.client.arch,
      firmware: decision.client.firmware,
      ipxe: decision.client.ipxe,
      bootFile: decision.bootFile,
    });
  }

  serve(dhcpSocket, 67);
  serve(pxeSocket, 4011);
  // Open the broadcast reply socket now when the config is known, so the warning
  // about a serverIp that is not ours shows at start rather than at first boot.
  if (bindAddress === '0.0.0.0') {
    try {
      const cfg = config();
      if (cfg) await broadcastSocketFor(cfg.serverIp);
    } catch (err) {
      log('warn', 'proxydhcp: config() failed at start', { error: (err as Error).message });
    }
  }
  log('info', 'proxydhcp: listening', { bindAddress, dhcpPort: ports.dhcp, pxePort: ports.pxe });

  return {
    ports,
    stats: () => ({ ...counters }),
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(broadcastSockets.values());
      await Promise.all(sockets.map(closeSocket));
    },
  };
}

function bindSocket(address: string, port: number, reuseAddr: boolean): Promise<Socket> {
  const sock = createSocket({ type: 'udp4', reuseAddr });
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      sock.close();
      const hint =
        err.code === 'EACCES'
          ? ' (ports below 1024 need root or CAP_NET_BIND_SERVICE)'
          : err.code === 'EADDRINUSE'
            ? ' (another DHCP/ProxyDHCP server, e.g. dnsmasq, already holds it)'
            : err.code === 'EADDRNOTAVAIL'
              ? ' (the address is not on any interface of this host)'
              : '';
      reject(new Error(`ProxyDHCP cannot bind UDP ${address}:${port}: ${err.message}${hint}`, { cause: err }));
    };
    sock.once('error', onError);
    sock.bind({ address, port }, () => {
      sock.off('error', onError);
      sock.setBroadcast(true);
      resolve(sock);
    });
  });
}

function send(sock: Socket, bytes: Buffer, dest: ReplyDestination): Promise<void> {
  return new Promise((resolve, reject) => sock.send(bytes, dest.port, dest.address, (err) => (err ? reject(err) : resolve())));
}

function closeSocket(sock: Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      sock.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}
