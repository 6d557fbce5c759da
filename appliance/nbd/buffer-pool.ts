/**
 * Read buffers used again once their reply has left: a disk streamed in
 * 256 KiB reads would otherwise allocate a gigabyte of short-lived buffers per
 * gigabyte served, and the garbage collector measured at a fifth of the
 * server's time. Buffers are kept by size, up to `maxBytes` in all.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private held = 0;

  constructor(private readonly maxBytes: number) {}

  take(length: number): Buffer {
    const list = this.free.get(length);
    const b = list?.pop();
    if (b) {
      this.held -= b.length;
      return b;
    }
    return Buffer.allocUnsafeSlow(length);
  }

  give(b: Buffer): void {
    if (this.held + b.length > this.maxBytes) return;
    let list = this.free.get(b.length);
    if (!list) this.free.set(b.length, (list = []));
    list.push(b);
    this.held += b.length;
  }

  bytes(): number {
    return this.held;
  }
}
