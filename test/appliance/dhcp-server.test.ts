/**
 * The ProxyDHCP server on loopback (no root needed: high ports, 127.0.0.1):
 * where replies go, what is logged and counted, bind errors, ProxyDHCP off,
 * and a flood of garbage and mutated real packets that never stops it from
 * answering the next valid request.
 *
 * The server is always bound to 127.0.0.1 here, so even its broadcast replies
 * leave through `lo` only (Linux routes a datagram to 255.255.255.255 by the
 * socket's bound address). The 0.0.0.0 + reply-socket path needs a network
 * namespace: see dhcp-e2e.test.ts.
 */
import { createSocket, type Socket } from 'node:dgram';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BROADCAST_FLAG, DhcpDecodeError, decodeDhcp, encodeDhcp, type DhcpPacket } from '../../appliance/dhcp/codec.js';
import { messageType } from '../../appliance/dhcp/options.js';
import { DEFAULT_BOOT_FILES, type ProxyConfig } from '../../appliance/dhcp/proxy.js';
import { replyDestination, startProxyDhcp, type ProxyDhcpServer } from '../../appliance/dhcp/server.js';
import type { LogLevel } from '../../appliance/log.js';
import { loadFixture, mutatedRealPacket } from './fixtures/dhcp/support.js';

const cfg: ProxyConfig = {
  serverIp: '127.0.0.1',
  scriptUrl: 'http://127.0.0.1:8080/boot.ipxe',
  httpBootUrl: null,
  files: { ...DEFAULT_BOOT_FILES },
};

interface LogLine {
  level: LogLevel;
  msg: string;
  fields: Record<string, unknown>;
}

/** A client socket that collects what it receives. */
class Client {
  readonly received: { packet: DhcpPacket; from: string }[] = [];
  private waiters: (() => void)[] = [];
  private constructor(readonly sock: Socket) {
    sock.on('message', (msg, rinfo) => {
      this.received.push({ packet: decodeDhcp(msg), from: `${rinfo.address}:${rinfo.port}` });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async open(address = '127.0.0.1'): Promise<Client> {
    const sock = createSocket('udp4');
    await new Promise<void>((resolve) => sock.bind(0, address, resolve));
    return new Client(sock);
  }

  get port(): number {
    return this.sock.address().port;
  }

  send(bytes: Uint8Array, port: number): Promise<void> {
    return new Promise((resolve, reject) => this.sock.send(bytes, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
  }

  /** Wait until `n` packets have arrived (or fail after `ms`). */
  async waitFor(n: number, ms = 3000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.received.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`received ${this.received.length} packet(s), expected ${n}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.sock.close(() => resolve()));
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await pause(5);
  }
}

let server: ProxyDhcpServer | undefined;
let client: Client;
let logs: LogLine[];
let config: () => ProxyConfig | null;

async function start(extra: { client?: number } = {}): Promise<ProxyDhcpServer> {
  server = await startProxyDhcp({
    bindAddress: '127.0.0.1',
    ports: { dhcp: 0, pxe: 0, client: extra.client ?? client.port },
    config: () => config(),
    log: (level, msg, fields) => logs.push({ level, msg, fields: fields ?? {} }),
  });
  return server;
}

beforeEach(async () => {
  logs = [];
  config = () => cfg;
  client = await Client.open();
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  await client.close();
});

/** The EDK2 4011 REQUEST as captured. */
const request4011 = () => loadFixture('edk2-x64-request-4011');
/** The EDK2 DISCOVER, changed to come from a client that already has 127.0.0.1 (unicast reply). */
function unicastDiscover(): Buffer {
  return encodeDhcp({ ...decodeDhcp(loadFixture('edk2-x64-discover')), ciaddr: '127.0.0.1', flags: 0 });
}

describe('replies', () => {
  it('answers a REQUEST on the PXE port back to the sender address and port', async () => {
    const s = await start();
    await client.send(request4011(), s.ports.pxe);
    await client.waitFor(1);
    const { packet, from } = client.received[0]!;
    expect(from).toBe(`127.0.0.1:${s.ports.pxe}`);
    expect(messageType(packet)).toBe(5);
    expect(packet.file).toBe('snponly.efi');
    expect(packet.xid).toBe(decodeDhcp(request4011()).xid);
    expect(s.stats()).toMatchObject({ received: 1, replied: 1, malformed: 0, ignored: 0, errors: 0 });
    expect(logs.find((l) => l.msg === 'proxydhcp: reply sent')?.fields).toMatchObject({ port: 4011, reply: 'DHCPACK', bootFile: 'snponly.efi', arch: 7, firmware: 'uefi', ipxe: false, mac: '52:54:00:00:02:20' });
  });

  it('answers a DISCOVER from a client with an address (broadcast flag clear) by unicast to ciaddr:68', async () => {
    const s = await start();
    await client.send(unicastDiscover(), s.ports.dhcp);
    await client.waitFor(1);
    expect(messageType(client.received[0]!.packet)).toBe(2);
    expect(client.received[0]!.from).toBe(`127.0.0.1:${s.ports.dhcp}`);
  });

  it('broadcasts the reply to a client without an address (here through lo, the bound interface)', async () => {
    const listener = await Client.open('0.0.0.0'); // receives 255.255.255.255 on lo; sends nothing
    try {
      const s = await start({ client: listener.port });
      await client.send(loadFixture('edk2-x64-discover'), s.ports.dhcp);
      await listener.waitFor(1);
      expect(listener.received[0]!.packet.file).toBe('snponly.efi');
      expect(logs.find((l) => l.msg === 'proxydhcp: reply sent')?.fields.to).toBe(`255.255.255.255:${listener.port}`);
    } finally {
      await listener.close();
    }
  });

  it('ignores what is not for it, logs why at debug, and counts it', async () => {
    const s = await start();
    await client.send(loadFixture('edk2-x64-request'), s.ports.dhcp); // REQUEST to the site DHCP server
    await client.send(encodeDhcp({ ...decodeDhcp(unicastDiscover()), options: [{ code: 53, data: Buffer.from([1]) }] }), s.ports.dhcp); // not PXE
    await pause(200);
    expect(client.received).toEqual([]);
    expect(s.stats()).toMatchObject({ received: 2, ignored: 2, replied: 0 });
    const reasons = logs.filter((l) => l.msg === 'proxydhcp: ignored').map((l) => [l.level, l.fields.reason]);
    expect(reasons).toEqual([
      ['debug', 'DHCPREQUEST for server 192.0.2.1, not us'],
      ['debug', 'not a PXE client (no option 60 or 93)'],
    ]);
  });

  it('ignores everything while the site has ProxyDHCP off (config() returns null), and serves again when it is on', async () => {
    let on = false;
    config = () => (on ? cfg : null);
    const s = await start();
    await client.send(request4011(), s.ports.pxe);
    await pause(200);
    expect(client.received).toEqual([]);
    expect(logs.some((l) => l.msg === 'proxydhcp: ignored, ProxyDHCP is off for this site')).toBe(true);
    on = true;
    await client.send(request4011(), s.ports.pxe);
    await client.waitFor(1);
    expect(s.stats()).toMatchObject({ received: 2, ignored: 1, replied: 1 });
  });

  it('survives a config() that throws: the packet is counted as an error, the next one is served', async () => {
    let calls = 0;
    config = () => {
      if (calls++ === 0) throw new Error('snapshot unreadable');
      return cfg;
    };
    const s = await start();
    await client.send(request4011(), s.ports.pxe);
    await pause(100);
    await client.send(request4011(), s.ports.pxe);
    await client.waitFor(1);
    expect(s.stats()).toMatchObject({ errors: 1, replied: 1 });
    expect(logs.find((l) => l.level === 'error')?.fields.error).toBe('snapshot unreadable');
  });
});

describe('a bad packet never kills the server', () => {
  it('logs a malformed packet at debug with its error code and drops it', async () => {
    const s = await start();
    await client.send(Buffer.from('definitely not DHCP'), s.ports.dhcp);
    await client.send(request4011(), s.ports.pxe);
    await client.waitFor(1);
    expect(s.stats()).toMatchObject({ malformed: 1, replied: 1 });
    expect(logs.find((l) => l.msg === 'proxydhcp: malformed packet dropped')).toMatchObject({ level: 'debug', fields: { code: 'too-short', bytes: 19 } });
  });

  it('after a flood of random bytes and mutated real packets on both ports, a valid request still gets its answer', async () => {
    const s = await start();
    const garbage = [
      ...fc.sample(fc.uint8Array({ maxLength: 600 }), { numRuns: 300, seed: 5 }).map((u) => Buffer.from(u)),
      ...fc.sample(mutatedRealPacket, { numRuns: 300, seed: 7 }),
      Buffer.alloc(0),
      Buffer.alloc(1500, 0xff),
    ];
    let expectMalformed = 0;
    for (const [i, g] of garbage.entries()) {
      // ciaddr and giaddr zeroed: a mutated packet that still decodes would
      // otherwise get a unicast reply to whatever address the mutation wrote
      // there. Zeroed, every reply is a broadcast through lo or goes back to us.
      if (g.length >= 28) {
        g.fill(0, 12, 16);
        g.fill(0, 24, 28);
      }
      try {
        decodeDhcp(g);
      } catch (err) {
        if (err instanceof DhcpDecodeError) expectMalformed++;
      }
      await client.send(g, i % 2 ? s.ports.pxe : s.ports.dhcp);
      // Paced in bursts of 25 so the kernel does not drop datagrams from a full
      // receive buffer: every one of them must reach the handler to be counted.
      if (i % 25 === 24) await until(() => s.stats().received === i + 1);
    }
    await until(() => s.stats().received === garbage.length);
    const before = client.received.length;
    await client.send(request4011(), s.ports.pxe);
    await client.waitFor(before + 1);
    const last = client.received.at(-1)!.packet;
    expect(last.xid).toBe(decodeDhcp(request4011()).xid);
    const st = s.stats();
    expect(st.received).toBe(garbage.length + 1);
    expect(st.malformed).toBe(expectMalformed);
    expect(st.errors).toBe(0);
    expect(st.malformed + st.ignored + st.replied).toBe(st.received);
    // The seeded flood really reaches the decision, not just the decoder.
    expect(st.ignored + st.replied).toBeGreaterThan(100);
  });
});

describe('sockets', () => {
  it('a port already in use rejects the start with a clear message, and leaves nothing bound', async () => {
    const first = await start();
    const attempt = startProxyDhcp({ bindAddress: '127.0.0.1', ports: { dhcp: 0, pxe: first.ports.pxe }, config: () => cfg, log: () => undefined });
    await expect(attempt).rejects.toThrow(new RegExp(`ProxyDHCP cannot bind UDP 127\\.0\\.0\\.1:${first.ports.pxe}: .*EADDRINUSE`));
    // The first server still answers.
    await client.send(request4011(), first.ports.pxe);
    await client.waitFor(1);
  });

  it('an address that is not on this host rejects the start (nothing is sent)', async () => {
    await expect(startProxyDhcp({ bindAddress: '192.0.2.77', ports: { dhcp: 0, pxe: 0 }, config: () => cfg, log: () => undefined })).rejects.toThrow(/cannot bind UDP 192\.0\.2\.77:0: .*not on any interface/);
  });

  it('close() frees both ports', async () => {
    const s = await start();
    const ports = s.ports;
    await s.close();
    server = undefined;
    const again = await startProxyDhcp({ bindAddress: '127.0.0.1', ports: { dhcp: ports.dhcp, pxe: ports.pxe }, config: () => cfg, log: () => undefined });
    expect(again.ports).toEqual(ports);
    await again.close();
    await again.close(); // idempotent
  });
});

describe('replyDestination (RFC 2131 §4.1, PXE 2.1 §2.2.1)', () => {
  const base = decodeDhcp(loadFixture('edk2-x64-discover'));
  const ports = { dhcp: 67, client: 68 };
  const sender = { address: '192.0.2.106', port: 4011 };

  it('4011: back to the sender', () => {
    expect(replyDestination(base, 4011, sender, ports)).toEqual({ address: '192.0.2.106', port: 4011 });
  });

  it('67 relayed: to the relay agent giaddr on the server port', () => {
    expect(replyDestination({ ...base, giaddr: '192.0.2.254' }, 67, sender, ports)).toEqual({ address: '192.0.2.254', port: 67 });
  });

  it('67 from a client with an address: unicast to ciaddr unless it set the broadcast flag', () => {
    expect(replyDestination({ ...base, ciaddr: '192.0.2.50', flags: 0 }, 67, sender, ports)).toEqual({ address: '192.0.2.50', port: 68 });
    expect(replyDestination({ ...base, ciaddr: '192.0.2.50', flags: BROADCAST_FLAG }, 67, sender, ports)).toEqual({ address: '255.255.255.255', port: 68 });
  });

  it('67 from a client without an address: broadcast (a proxy has no yiaddr to unicast to)', () => {
    expect(replyDestination({ ...base, flags: 0 }, 67, sender, ports)).toEqual({ address: '255.255.255.255', port: 68 });
  });
});
