import {
  ADDRESS_LIMIT,
  combineAddress,
  GuestMemory,
  isPlatformError,
  type PlatformError,
  PlatformErrorCode,
} from "@pvkit/platform";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

function expectError(value: unknown, code: PlatformErrorCode): void {
  expect(isPlatformError(value)).toBe(true);
  expect((value as PlatformError).code).toBe(code);
}

/** Every byte of every region, concatenated (for "nothing else changed" checks). */
function snapshot(mem: GuestMemory): Uint8Array[] {
  return mem.regions.map((r) => r.bytes.slice());
}

describe("GuestMemory: flat", () => {
  it("creates one region at 0 over an ArrayBuffer", () => {
    const mem = GuestMemory.create(4096);
    expect(mem.regions).toHaveLength(1);
    expect(mem.regions[0]!.base).toBe(0);
    expect(mem.regions[0]!.end).toBe(4096);
    expect(mem.end).toBe(4096);
    expect(mem.shared).toBe(false);
    expect(mem.regions[0]!.bytes.buffer).toBeInstanceOf(ArrayBuffer);
    expect(mem.locate(0, 4096)).toBe(0);
    expect(mem.locate(1, 4096)).toBe(-1);
    expect(mem.locate(4096, 0)).toBe(0);
    expect(mem.locate(4097, 0)).toBe(-1);
  });

  it("stores integers little-endian, at any alignment", () => {
    const mem = GuestMemory.create(64);
    expect(mem.writeU16(1, 0xbeef)).toBeUndefined();
    expect(mem.writeU32(5, 0x11223344)).toBeUndefined();
    expect(mem.writeU8(12, 0x1ff)).toBeUndefined();
    const bytes = mem.slice(0, 16) as Uint8Array;
    expect([...bytes.subarray(1, 3)]).toEqual([0xef, 0xbe]);
    expect([...bytes.subarray(5, 9)]).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(bytes[12]).toBe(0xff);
    expect(mem.readU16(1)).toBe(0xbeef);
    expect(mem.readU32(5)).toBe(0x11223344);
    expect(mem.readU8(12)).toBe(0xff);
    // A u32 with the top bit set comes back unsigned.
    mem.writeU32(20, -1);
    expect(mem.readU32(20)).toBe(0xffff_ffff);
    mem.writeU32(24, 0x8000_0000);
    expect(mem.readU32(24)).toBe(0x8000_0000);
  });

  it("reads and writes u64 as bigint, little-endian, truncated to 64 bits", () => {
    const mem = GuestMemory.create(64);
    expect(mem.writeU64(3, 0x0102_0304_0506_0708n)).toBeUndefined();
    expect([...(mem.slice(3, 8) as Uint8Array)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(mem.readU64(3)).toBe(0x0102_0304_0506_0708n);
    mem.writeU64(16, -1n);
    expect(mem.readU64(16)).toBe(0xffff_ffff_ffff_ffffn);
    mem.writeU64(24, (1n << 64n) + 5n);
    expect(mem.readU64(24)).toBe(5n);
    expectError(mem.readU64(57), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.writeU64(60, 1n), PlatformErrorCode.OUT_OF_RANGE);
    expect(mem.readU64(56)).toBe(0n);
  });

  it("slice is a zero-copy alias of guest memory in both directions", () => {
    const mem = GuestMemory.create(256);
    const view = mem.slice(100, 10) as Uint8Array;
    expect(view.length).toBe(10);
    view[0] = 0x42;
    expect(mem.readU8(100)).toBe(0x42);
    mem.writeU32(104, 0xa1b2c3d4);
    expect([...view.subarray(4, 8)]).toEqual([0xd4, 0xc3, 0xb2, 0xa1]);
    expect(view.buffer).toBe(mem.regions[0]!.bytes.buffer);
    expect((mem.slice(256, 0) as Uint8Array).length).toBe(0);
  });

  it("copies with read/write/fill and checks ranges first", () => {
    const mem = GuestMemory.create(128);
    expect(mem.write(10, Uint8Array.of(1, 2, 3))).toBeUndefined();
    const dst = new Uint8Array(5);
    expect(mem.read(9, dst)).toBeUndefined();
    expect([...dst]).toEqual([0, 1, 2, 3, 0]);
    expect(mem.fill(20, 4, 0xee)).toBeUndefined();
    expect(mem.readU32(20)).toBe(0xeeee_eeee);
    const before = snapshot(mem);
    expectError(mem.write(126, Uint8Array.of(9, 9, 9)), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.fill(120, 9, 1), PlatformErrorCode.OUT_OF_RANGE);
    expect(snapshot(mem)).toEqual(before);
    const out = new Uint8Array(4).fill(7);
    expectError(mem.read(126, out), PlatformErrorCode.OUT_OF_RANGE);
    expect([...out]).toEqual([7, 7, 7, 7]);
  });

  it("rejects invalid layouts (host configuration errors throw)", () => {
    expect(() => new GuestMemory([])).toThrow();
    expect(
      () =>
        new GuestMemory([
          { base: 0, size: 4096 },
          { base: 4095, size: 16 },
        ]),
    ).toThrow(/overlaps/);
    expect(() => new GuestMemory([{ base: -16, size: 16 }])).toThrow();
    expect(() => new GuestMemory([{ base: 0, size: 0 }])).toThrow();
    expect(() => new GuestMemory([{ base: 0, size: 1.5 }])).toThrow();
    expect(() => new GuestMemory([{ base: ADDRESS_LIMIT - 8, size: 16 }])).toThrow();
    expect(() => new GuestMemory([{ base: 0, size: 64, backing: new ArrayBuffer(32) }])).toThrow();
    expect(
      () =>
        new GuestMemory([{ base: 0, size: 16, backing: new ArrayBuffer(64), backingOffset: 4 }]),
    ).toThrow(/multiple of 8/);
    expect(
      () =>
        new GuestMemory([{ base: 0, size: 64, backing: new ArrayBuffer(64), backingOffset: 8 }]),
    ).toThrow(/does not fit/);
  });

  it("honours backingOffset: guest address base maps to backing[offset]", () => {
    const backing = new ArrayBuffer(256);
    const mem = new GuestMemory([{ base: 0x1000, size: 64, backing, backingOffset: 128 }]);
    mem.writeU8(0x1000, 0x5a);
    expect(new Uint8Array(backing)[128]).toBe(0x5a);
    expectError(mem.readU8(0), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.readU8(0x1040), PlatformErrorCode.OUT_OF_RANGE);
  });
});

describe("GuestMemory: several regions", () => {
  // [0x0000, 0x1000) · [0x1000, 0x2000) adjacent · hole · [0x4000, 0x5000) · hole · [0x10000, 0x10100)
  function layout(): GuestMemory {
    return new GuestMemory([
      { base: 0x4000, size: 0x1000 },
      { base: 0, size: 0x1000 },
      { base: 0x10000, size: 0x100 },
      { base: 0x1000, size: 0x1000 },
    ]);
  }

  it("sorts regions and locates ranges inside exactly one of them", () => {
    const mem = layout();
    expect(mem.regions.map((r) => r.base)).toEqual([0, 0x1000, 0x4000, 0x10000]);
    expect(mem.end).toBe(0x10100);
    expect(mem.locate(0, 0x1000)).toBe(0);
    expect(mem.locate(0x1000, 1)).toBe(1);
    expect(mem.locate(0x1fff, 1)).toBe(1);
    expect(mem.locate(0x4000, 0x1000)).toBe(2);
    expect(mem.locate(0x100ff, 1)).toBe(3);
    expect(mem.locate(0xfff, 2)).toBe(-1); // spans two adjacent regions
    expect(mem.locate(0x2000, 1)).toBe(-1); // hole
    expect(mem.locate(0x3fff, 2)).toBe(-1); // hole into region
    expect(mem.locate(0x4fff, 2)).toBe(-1); // region into hole
    expect(mem.locate(0x10100, 1)).toBe(-1); // past the end
  });

  it("reports a hole as OUT_OF_RANGE and keeps every region separate", () => {
    const mem = layout();
    expectError(mem.readU8(0x2000), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.readU32(0x3ffe), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.writeU16(0x4fff, 1), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.slice(0x5000, 1), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.slice(0xffc, 8), PlatformErrorCode.OUT_OF_RANGE); // slices never span
    mem.writeU32(0x4000, 0xcafebabe);
    expect(mem.readU32(0x4000)).toBe(0xcafebabe);
    expect(mem.regions[2]!.bytes[0]).toBe(0xbe);
    expect(mem.regions[0]!.bytes.every((b) => b === 0)).toBe(true);
  });

  it("copies across adjacent regions but never into a hole", () => {
    const mem = layout();
    const src = Uint8Array.from({ length: 12 }, (_, i) => i + 1);
    expect(mem.write(0xffa, src)).toBeUndefined();
    expect([...mem.regions[0]!.bytes.subarray(0xffa)]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...mem.regions[1]!.bytes.subarray(0, 6)]).toEqual([7, 8, 9, 10, 11, 12]);
    const back = new Uint8Array(12);
    expect(mem.read(0xffa, back)).toBeUndefined();
    expect(back).toEqual(src);
    // A copy that would run from region 1 into the hole changes nothing at all.
    const before = snapshot(mem);
    expectError(mem.write(0x1ffe, Uint8Array.of(1, 2, 3, 4)), PlatformErrorCode.OUT_OF_RANGE);
    expectError(mem.write(0xff0, new Uint8Array(0x1020).fill(9)), PlatformErrorCode.OUT_OF_RANGE);
    expect(snapshot(mem)).toEqual(before);
    const dst = new Uint8Array(0x1101).fill(3);
    expectError(mem.read(0xf00, dst), PlatformErrorCode.OUT_OF_RANGE);
    expect(dst.every((b) => b === 3)).toBe(true);
    // fill stays inside one region.
    expectError(mem.fill(0xfff, 2, 1), PlatformErrorCode.OUT_OF_RANGE);
    expect(snapshot(mem)).toEqual(before);
  });
});

describe("GuestMemory: every error value", () => {
  const mem = new GuestMemory([
    { base: 0, size: 0x100 },
    { base: 0x200, size: 0x100 },
  ]);

  it.each([
    ["hole", 0x100, 1, PlatformErrorCode.OUT_OF_RANGE],
    ["past the end", 0x300, 1, PlatformErrorCode.OUT_OF_RANGE],
    ["straddling the end", 0x2ff, 2, PlatformErrorCode.OUT_OF_RANGE],
    ["negative address", -1, 1, PlatformErrorCode.BAD_ADDRESS],
    ["fractional address", 1.5, 1, PlatformErrorCode.BAD_ADDRESS],
    ["NaN address", Number.NaN, 1, PlatformErrorCode.BAD_ADDRESS],
    ["infinite address", Number.POSITIVE_INFINITY, 1, PlatformErrorCode.BAD_ADDRESS],
    ["address 2^53", 2 ** 53, 1, PlatformErrorCode.BAD_ADDRESS],
    ["address 2^64", 2 ** 64, 1, PlatformErrorCode.BAD_ADDRESS],
    ["negative length", 0, -1, PlatformErrorCode.BAD_LENGTH],
    ["fractional length", 0, 0.5, PlatformErrorCode.BAD_LENGTH],
    ["NaN length", 0, Number.NaN, PlatformErrorCode.BAD_LENGTH],
    ["address + length overflows 2^53", 2 ** 53 - 4, 8, PlatformErrorCode.BAD_LENGTH],
    ["length 2^53 at 1", 1, 2 ** 53, PlatformErrorCode.BAD_LENGTH],
  ])("%s → %s", (_name, address, length, code) => {
    expect(mem.locate(address, length)).toBe(-1);
    const err = mem.check(address, length);
    expectError(err, code);
    expect(err!.address).toBe(address);
    expect(err!.length).toBe(length);
    expect(err!.message.length).toBeGreaterThan(10);
    expectError(mem.slice(address, length), code);
    expectError(mem.fill(address, length, 1), code);
  });

  it("a region ending exactly at 2^53 refuses accesses whose end rounds onto 2^53", () => {
    // (2^53 - 1) + 2 is 2^53 + 1, which a double rounds to 2^53: the end must not be computed
    // by adding first, or a 2-byte access at the last byte would pass the range check.
    const top = new GuestMemory([{ base: 2 ** 53 - 4096, size: 4096 }]);
    expect(top.locate(2 ** 53 - 1, 1)).toBe(0);
    expect(top.locate(2 ** 53 - 1, 2)).toBe(-1);
    expect(() => top.readU16(2 ** 53 - 1)).not.toThrow();
    expectError(top.readU16(2 ** 53 - 1), PlatformErrorCode.BAD_LENGTH);
    expectError(top.readU64(2 ** 53 - 3), PlatformErrorCode.BAD_LENGTH);
    expectError(top.slice(2 ** 53 - 1, 2), PlatformErrorCode.BAD_LENGTH);
    expectError(top.write(2 ** 53 - 1, Uint8Array.of(1, 2)), PlatformErrorCode.BAD_LENGTH);
    expect(top.writeU8(2 ** 53 - 1, 7)).toBeUndefined();
    expect(top.readU8(2 ** 53 - 1)).toBe(7);
  });

  it("every accessor returns the error value instead of throwing", () => {
    for (const a of [-8, 0x100, 0x1ff, 0x2ff, 2 ** 53, Number.NaN, 0.25]) {
      // 0x2ff is the last byte of memory: one byte fits, nothing wider does.
      expect(isPlatformError(mem.readU8(a))).toBe(a !== 0x2ff);
      expect(isPlatformError(mem.readU32(a))).toBe(true);
      expect(isPlatformError(mem.readU64(a))).toBe(true);
      expect(isPlatformError(mem.writeU16(a, 1))).toBe(true);
      expect(isPlatformError(mem.writeU32(a, 1))).toBe(true);
      expect(isPlatformError(mem.writeU64(a, 1n))).toBe(true);
      expect(isPlatformError(mem.read(a, new Uint8Array(4)))).toBe(true);
      expect(isPlatformError(mem.write(a, new Uint8Array(4)))).toBe(true);
    }
    expect(mem.regions.every((r) => r.bytes.every((b) => b === 0))).toBe(true);
  });

  it("combineAddress refuses 64-bit addresses at or above 2^53", () => {
    expect(combineAddress(0x1234, 0)).toBe(0x1234);
    expect(combineAddress(0xffff_ffff, 0)).toBe(0xffff_ffff);
    expect(combineAddress(-1, 0)).toBe(0xffff_ffff); // low word taken unsigned
    expect(combineAddress(0, 1)).toBe(2 ** 32);
    expect(combineAddress(0xffff_ffff, 0x1f_ffff)).toBe(2 ** 53 - 1);
    expect(combineAddress(0, 0x20_0000)).toBe(-1);
    expect(combineAddress(0, 0xffff_ffff)).toBe(-1);
    expect(ADDRESS_LIMIT).toBe(2 ** 53);
  });
});

describe("GuestMemory: SharedArrayBuffer", () => {
  it("is flagged shared and aliases the SharedArrayBuffer", () => {
    const mem = GuestMemory.create(1024, { shared: true });
    expect(mem.shared).toBe(true);
    const sab = mem.regions[0]!.bytes.buffer;
    expect(sab).toBeInstanceOf(SharedArrayBuffer);
    mem.writeU32(8, 0x01020304);
    expect(new Uint8Array(sab)[8]).toBe(4);
    expect(Atomics.load(new Uint32Array(sab), 2)).toBe(0x01020304);
  });

  it("is shared when any region is shared", () => {
    const mem = new GuestMemory([
      { base: 0, size: 64 },
      { base: 128, size: 64, backing: new SharedArrayBuffer(64) },
    ]);
    expect(mem.shared).toBe(true);
    expect(GuestMemory.over(new ArrayBuffer(64)).shared).toBe(false);
    expect(GuestMemory.over(new SharedArrayBuffer(64)).shared).toBe(true);
  });
});

describe("GuestMemory: WebAssembly.Memory", () => {
  it("follows grow: views are refreshed and epoch increments once", () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 4 });
    const mem = GuestMemory.over(wasm);
    expect(mem.end).toBe(65536);
    expect(mem.epoch).toBe(0);
    mem.writeU32(0x100, 0xdeadbeef);
    const oldView = mem.regions[0]!.bytes;
    wasm.grow(1); // detaches the old ArrayBuffer
    expect(oldView.length).toBe(0);
    // The next access refreshes, reads the same bytes, and bumps the epoch exactly once.
    expect(mem.readU32(0x100)).toBe(0xdeadbeef);
    expect(mem.epoch).toBe(1);
    expect(mem.regions[0]!.bytes.buffer).toBe(wasm.buffer);
    expect(mem.readU8(0)).toBe(0);
    expect(mem.epoch).toBe(1);
    // The region keeps the size it was created with.
    expectError(mem.readU8(65536), PlatformErrorCode.OUT_OF_RANGE);
    mem.writeU16(2, 0x1234);
    expect(new Uint8Array(wasm.buffer)[2]).toBe(0x34);
    wasm.grow(1);
    mem.refresh();
    expect(mem.epoch).toBe(2);
    mem.refresh();
    expect(mem.epoch).toBe(2);
  });

  it("slices taken after a grow alias the new buffer", () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 2 });
    const mem = new GuestMemory([
      { base: 0x1000, size: 0x1000, backing: wasm, backingOffset: 0x2000 },
    ]);
    wasm.grow(1);
    const s = mem.slice(0x1000, 4) as Uint8Array;
    expect(s.buffer).toBe(wasm.buffer);
    s[0] = 0x77;
    expect(new Uint8Array(wasm.buffer)[0x2000]).toBe(0x77);
  });
});

describe("GuestMemory: property — any range succeeds inside backed memory or fails untouched", () => {
  // A [0,256) and B [256,512) are adjacent; a hole; C [1024,1280) on a SharedArrayBuffer.
  function build(): GuestMemory {
    return new GuestMemory([
      { base: 0, size: 256 },
      { base: 256, size: 256 },
      { base: 1024, size: 256, backing: new SharedArrayBuffer(256) },
    ]);
  }
  const regions: Array<readonly [number, number]> = [
    [0, 256],
    [256, 512],
    [1024, 1280],
  ];
  const insideOne = (a: number, n: number): boolean =>
    Number.isInteger(a) &&
    Number.isInteger(n) &&
    n >= 0 &&
    regions.some(([b, e]) => a >= b && a + n <= e);
  /** For copies: every byte backed and contiguous (A and B join up). */
  const copyable = (a: number, n: number): boolean =>
    Number.isInteger(a) &&
    a >= 0 &&
    (n === 0 ? a <= 512 || (a >= 1024 && a <= 1280) : a + n <= 512 || (a >= 1024 && a + n <= 1280));

  const weird = fc.constantFrom(
    -1,
    -0,
    0.5,
    255.5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    2 ** 53,
    2 ** 53 - 1,
    2 ** 53 + 2,
    2 ** 64,
    2 ** 32,
  );
  const address = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: -16, max: 1400 }) },
    { weight: 1, arbitrary: weird },
    { weight: 1, arbitrary: fc.double() },
  );
  const length = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 600 }) },
    { weight: 1, arbitrary: fc.integer({ min: -4, max: -1 }) },
    { weight: 1, arbitrary: weird },
  );
  const seed = 0x5eed_0001;

  it("slice/fill/check: success iff inside one region; failure writes nothing", () => {
    fc.assert(
      fc.property(address, length, fc.integer({ min: 1, max: 255 }), (a, n, byte) => {
        const mem = build();
        const ok = insideOne(a, n);
        const s = mem.slice(a, n);
        expect(isPlatformError(s)).toBe(!ok);
        expect(mem.check(a, n) === undefined).toBe(ok);
        expect(mem.locate(a, n) >= 0).toBe(ok);
        if (ok && (s as Uint8Array).length !== n) return false;
        const err = mem.fill(a, n, byte);
        expect(err === undefined).toBe(ok);
        // Exactly [a, a+n) changed on success; nothing on failure.
        for (const r of mem.regions) {
          for (let i = 0; i < r.size; i++) {
            const addr = r.base + i;
            const inRange = ok && addr >= a && addr < a + n;
            if (r.bytes[i] !== (inRange ? byte : 0)) return false;
          }
        }
        return true;
      }),
      { seed, numRuns: 2000 },
    );
  });

  it("write/read copies: success iff every byte is backed contiguously", () => {
    fc.assert(
      fc.property(address, fc.integer({ min: 0, max: 600 }), (a, n) => {
        const mem = build();
        const ok = copyable(a, n);
        const src = Uint8Array.from({ length: n }, (_, i) => (i % 251) + 1);
        const err = mem.write(a, src);
        expect(err === undefined).toBe(ok);
        for (const r of mem.regions) {
          for (let i = 0; i < r.size; i++) {
            const addr = r.base + i;
            const expected = ok && addr >= a && addr < a + n ? ((addr - a) % 251) + 1 : 0;
            if (r.bytes[i] !== expected) return false;
          }
        }
        const back = new Uint8Array(n).fill(0xcc);
        const rerr = mem.read(a, back);
        expect(rerr === undefined).toBe(ok);
        if (ok) expect(back).toEqual(src);
        else expect(back.every((b) => b === 0xcc)).toBe(true);
        return true;
      }),
      { seed: seed + 1, numRuns: 2000 },
    );
  });
});

describe("GuestMemory: write observer", () => {
  it("reports every successful write with its exact range, and nothing for reads or faults", () => {
    const mem = new GuestMemory([
      { base: 0, size: 0x1000 },
      { base: 0x1000, size: 0x1000 },
    ]);
    const seen: Array<[number, number]> = [];
    mem.writeObserver = (a, n) => seen.push([a, n]);
    mem.writeU8(1, 0xff);
    mem.writeU16(2, 0xffff);
    mem.writeU32(4, 1);
    mem.writeU64(8, 1n);
    mem.write(0x10, new Uint8Array(5));
    mem.write(0xffe, new Uint8Array(4)); // spans the two regions
    mem.fill(0x20, 7, 0xaa);
    mem.fill(0x30, 0, 0xaa); // empty: nothing written
    mem.read(0, new Uint8Array(16));
    mem.readU32(4);
    expect(mem.writeU32(0x2000, 1)).toBeDefined(); // out of range: nothing written
    expect(mem.write(0x1ffe, new Uint8Array(4))).toBeDefined();
    mem.noteWrite(0x40, 3);
    expect(seen).toEqual([
      [1, 1],
      [2, 2],
      [4, 4],
      [8, 8],
      [0x10, 5],
      [0xffe, 4],
      [0x20, 7],
      [0x40, 3],
    ]);
    mem.writeObserver = null;
    mem.writeU8(1, 0);
    expect(seen).toHaveLength(8);
  });
});
