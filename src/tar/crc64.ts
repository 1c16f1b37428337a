// CRC-64/ISO exactly as Go's hash/crc64 with crc64.ISO (polynomial x^64 + x^4 + x^3 + x + 1,
// reflected 0xD800000000000000; initial value and final xor all ones): tar-split stores it for
// every file in a layer.
//
// No tables are needed: the reflected polynomial has only bits 63, 62, 60 and 59 set, so
// shifting the low k bits t out of the 64-bit state (k <= 32) xors in
// t<<(64-k) ^ t<<(63-k) ^ t<<(61-k) ^ t<<(60-k), none of which reaches the bits still to be
// shifted out. The state is kept as two uint32 halves; bulk input goes 32 bits per step.

/** Streaming CRC-64/ISO. */
export class Crc64 {
  // The running value, finalised (inverted) as Go keeps it between Write calls.
  private lo = 0;
  private hi = 0;

  update(data: Uint8Array): this {
    let lo = ~this.lo;
    let hi = ~this.hi;
    const n = data.length;
    let i = 0;
    // Single bytes up to a 4-byte aligned address, so the bulk can be read as 32-bit words.
    let head = (4 - ((data.byteOffset + i) & 3)) & 3;
    if (n - head < 16) head = n;
    for (; i < head; i++) {
      const t = (lo ^ data[i]) & 0xff;
      lo = (lo >>> 8) | (hi << 24);
      hi = (hi >>> 8) ^ (t << 24) ^ (t << 23) ^ (t << 21) ^ (t << 20);
    }
    const words = (n - i) >>> 2;
    if (words > 0) {
      const w = new Int32Array(data.buffer, data.byteOffset + i, words); // little-endian host
      for (let k = 0; k < words; k++) {
        const t = lo ^ w[k];
        lo = hi ^ (t << 31) ^ (t << 29) ^ (t << 28);
        hi = t ^ (t >>> 1) ^ (t >>> 3) ^ (t >>> 4);
      }
      i += words * 4;
    }
    for (; i < n; i++) {
      const t = (lo ^ data[i]) & 0xff;
      lo = (lo >>> 8) | (hi << 24);
      hi = (hi >>> 8) ^ (t << 24) ^ (t << 23) ^ (t << 21) ^ (t << 20);
    }
    this.lo = ~lo >>> 0;
    this.hi = ~hi >>> 0;
    return this;
  }

  /** High and low 32 bits of the sum (unsigned). */
  get high(): number {
    return this.hi;
  }

  get low(): number {
    return this.lo;
  }

  /** The 8-byte big-endian sum, as Go's Sum(nil) returns it. */
  digest(): Buffer {
    const out = Buffer.allocUnsafe(8);
    out.writeUInt32BE(this.hi, 0);
    out.writeUInt32BE(this.lo, 4);
    return out;
  }

  reset(): void {
    this.lo = 0;
    this.hi = 0;
  }
}

/** CRC-64/ISO of one buffer, 8 bytes big-endian. */
export function crc64(data: Uint8Array): Buffer {
  return new Crc64().update(data).digest();
}
