import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import {
  acpiEarlyCpio,
  amlInteger,
  amlPkgLength,
  type VirtioMmioAcpiDevice,
  virtioMmioSsdt,
} from "../src/acpi.js";

// ---------------------------------------------------------------------------------------
// Small independent readers (written against the specs, not against src/acpi.ts).

const latin1 = (b: Uint8Array): string => String.fromCharCode(...b);
const u32 = (b: Uint8Array, at: number): number =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
const byteSum = (b: Uint8Array): number => b.reduce((s, x) => (s + x) & 0xff, 0);

/** Index of the first differing byte, -1 if equal (lengths must match too). */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Decodes a PkgLength (ACPI 6.x §20.2.4) at `at`: total value and encoded byte count. */
function readPkgLength(b: Uint8Array, at: number): { value: number; bytes: number } {
  const lead = b[at]!;
  const follow = lead >> 6;
  if (follow === 0) return { value: lead & 0x3f, bytes: 1 };
  expect(lead & 0x30, "PkgLength bits 4-5 must be 0 in multi-byte form").toBe(0);
  let value = lead & 0x0f;
  for (let i = 1; i <= follow; i++) value |= b[at + i]! << (4 + 8 * (i - 1));
  return { value, bytes: 1 + follow };
}

interface WalkedDevice {
  name: string;
  pkgLengthBytes: number;
  pkgLength: number;
  body: Uint8Array;
}

/** Walks `Scope(\_SB_) { Device... }` in an SSDT and returns the scope and its devices. */
function walkSsdt(t: Uint8Array): {
  scopePkgLengthBytes: number;
  devices: WalkedDevice[];
} {
  let at = 36;
  expect(t[at], "ScopeOp").toBe(0x10);
  const scope = readPkgLength(t, at + 1);
  const scopeEnd = at + 1 + scope.value;
  expect(scopeEnd, "Scope ends where the table ends").toBe(t.length);
  at += 1 + scope.bytes;
  expect(latin1(t.subarray(at, at + 5))).toBe("\\_SB_");
  at += 5;
  const devices: WalkedDevice[] = [];
  while (at < scopeEnd) {
    expect([t[at], t[at + 1]], "DeviceOp").toEqual([0x5b, 0x82]);
    const pl = readPkgLength(t, at + 2);
    const end = at + 2 + pl.value;
    const bodyStart = at + 2 + pl.bytes;
    devices.push({
      name: latin1(t.subarray(bodyStart, bodyStart + 4)),
      pkgLengthBytes: pl.bytes,
      pkgLength: pl.value,
      body: t.subarray(bodyStart + 4, end),
    });
    at = end;
  }
  expect(at).toBe(scopeEnd);
  return { scopePkgLengthBytes: scope.bytes, devices };
}

interface CpioMember {
  name: string;
  mode: number;
  nlink: number;
  data: Uint8Array;
}

/** Reads a newc cpio (magic 070701) up to and including TRAILER!!!. */
function readNewc(a: Uint8Array): { members: CpioMember[]; end: number } {
  const members: CpioMember[] = [];
  const align4 = (n: number): number => (n + 3) & ~3;
  let at = 0;
  for (;;) {
    const hdr = latin1(a.subarray(at, at + 110));
    expect(hdr.slice(0, 6), `magic at ${at}`).toBe("070701");
    const field = (i: number): number => Number.parseInt(hdr.slice(6 + 8 * i, 14 + 8 * i), 16);
    const mode = field(1);
    const nlink = field(4);
    const fileSize = field(6);
    const nameSize = field(11);
    const name = latin1(a.subarray(at + 110, at + 110 + nameSize - 1));
    expect(a[at + 110 + nameSize - 1], "name NUL").toBe(0);
    const dataAt = align4(at + 110 + nameSize);
    const data = a.subarray(dataAt, dataAt + fileSize);
    at = align4(dataAt + fileSize);
    if (name === "TRAILER!!!") return { members, end: at };
    members.push({ name, mode, nlink, data });
  }
}

// ---------------------------------------------------------------------------------------
// iasl (Debian package acpica-tools)

const work = mkdtempSync(join(tmpdir(), "pvkit-acpi-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function iasl(args: string[]): string {
  const r = spawnSync("iasl", args, { cwd: work, encoding: "utf8" });
  if (r.error) throw new Error(`cannot run iasl (apt-get install acpica-tools): ${r.error}`);
  const out = `${r.stdout}\n${r.stderr}`;
  expect(r.status, out).toBe(0);
  // Anything mentioning an error, warning or remark, apart from the clean compile summary.
  const clean = out.replace(/Compilation successful\. 0 Errors, 0 Warnings, 0 Remarks/, "");
  expect(clean, "iasl reported a problem").not.toMatch(/error|warning|remark/i);
  return out;
}

/** Disassembles `table` with `iasl -d` and returns the .dsl text. */
function disassemble(stem: string, table: Uint8Array): string {
  writeFileSync(join(work, `${stem}.aml`), table);
  const out = iasl(["-d", `${stem}.aml`]);
  expect(out).toMatch(/Disassembly completed/);
  return readFileSync(join(work, `${stem}.dsl`), "utf8");
}

/** Compiles `<stem>.dsl` with iasl into `<stem>-rt.aml` and returns its bytes. */
function compile(stem: string): Uint8Array {
  const out = iasl(["-p", `${stem}-rt`, `${stem}.dsl`]);
  expect(out).toMatch(/Compilation successful\. 0 Errors, 0 Warnings, 0 Remarks/);
  return new Uint8Array(readFileSync(join(work, `${stem}-rt.aml`)));
}

interface DecodedDevice {
  name: string;
  hid: string;
  uid: number;
  cca: string;
  access: string;
  address: number;
  size: number;
  interrupt: string;
  irqs: number[];
}

const amlNum = (s: string): number => (s === "Zero" ? 0 : s === "One" ? 1 : Number(s));

/** Pulls the devices out of iasl's disassembly. */
function decodeDsl(dsl: string): DecodedDevice[] {
  const re =
    /Device \((\w{4})\)\s*\{\s*Name \(_HID, "([^"]*)"\)[^\n]*\n\s*Name \(_UID, (\w+)\)[^\n]*\n\s*Name \(_CCA, (\w+)\)[^\n]*\n\s*Name \(_CRS, ResourceTemplate \(\)[^\n]*\n\s*\{\s*Memory32Fixed \((\w+),\s*(0x[0-9A-F]+),[^\n]*\n\s*(0x[0-9A-F]+),[^\n]*\n\s*\)\s*Interrupt \(([^)]*)\)\s*\{([^}]*)\}\s*\}\)\s*\}/g;
  return [...dsl.matchAll(re)].map((m) => ({
    name: m[1]!,
    hid: m[2]!,
    uid: amlNum(m[3]!),
    cca: m[4]!,
    access: m[5]!,
    address: Number(m[6]),
    size: Number(m[7]),
    interrupt: m[8]!.replace(/[\s,]+$/, ""),
    irqs: m[9]!
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "")
      .map(Number),
  }));
}

const INTERRUPT_FLAGS = "ResourceConsumer, Level, ActiveHigh, Exclusive";

function expectDecoded(dsl: string, devices: readonly VirtioMmioAcpiDevice[]): void {
  const decoded = decodeDsl(dsl);
  expect(decoded.map((d) => d.name)).toEqual(
    devices.map((_, i) => `VR${i.toString(16).toUpperCase().padStart(2, "0")}`),
  );
  decoded.forEach((d, i) => {
    const want = devices[i]!;
    expect(d.hid).toBe("LNRO0005");
    expect(d.uid).toBe(i);
    expect(d.cca).toBe("One");
    expect(d.access).toBe("ReadWrite");
    expect(d.address).toBe(want.address);
    expect(d.size).toBe(want.size);
    expect(d.interrupt).toBe(INTERRUPT_FLAGS);
    expect(d.irqs).toEqual([want.irq]);
  });
}

/** Compares our table with iasl's recompilation: all bytes but checksum and creator fields. */
function expectSameAsIasl(mine: Uint8Array, theirs: Uint8Array): void {
  expect(theirs.length).toBe(mine.length);
  expect(firstDiff(mine.subarray(0, 9), theirs.subarray(0, 9)), "signature/length/rev").toBe(-1);
  expect(firstDiff(mine.subarray(10, 28), theirs.subarray(10, 28)), "OEM fields").toBe(-1);
  expect(latin1(theirs.subarray(28, 32))).toBe("INTL");
  expect(firstDiff(mine.subarray(36), theirs.subarray(36)), "AML body").toBe(-1);
  expect(byteSum(theirs)).toBe(0);
}

const ONE: VirtioMmioAcpiDevice[] = [{ address: 0xfe840000, size: 0x200, irq: 3 }];
const THREE: VirtioMmioAcpiDevice[] = [
  { address: 0xfe840000, size: 0x200, irq: 3 },
  { address: 0xfe841000, size: 0x1000, irq: 10 },
  { address: 0x80000000, size: 0x200, irq: 23 },
];
const many = (n: number): VirtioMmioAcpiDevice[] =>
  Array.from({ length: n }, (_, i) => ({ address: 0xd0000000 + i * 0x1000, size: 0x200, irq: i }));

// ---------------------------------------------------------------------------------------

describe("virtioMmioSsdt: header (ACPI §5.2.6)", () => {
  test("fields, length and checksum", () => {
    const t = virtioMmioSsdt(THREE);
    expect(latin1(t.subarray(0, 4))).toBe("SSDT");
    expect(u32(t, 4)).toBe(t.length);
    expect(t[8]).toBe(2);
    expect(byteSum(t)).toBe(0);
    expect(latin1(t.subarray(10, 16))).toBe("PVKIT\0");
    expect(latin1(t.subarray(16, 24))).toBe("VIRTMMIO");
    expect(u32(t, 24)).toBe(1);
    expect(latin1(t.subarray(28, 32))).toBe("PVKT");
    expect(u32(t, 32)).toBe(1);
  });

  test("the checksum byte is what makes the sum 0", () => {
    const t = virtioMmioSsdt(ONE);
    const copy = t.slice();
    copy[9] = (copy[9]! + 1) & 0xff;
    expect(byteSum(copy)).toBe(1);
  });

  test("oemTableId is NUL-padded to 8 bytes and changes the checksum", () => {
    const a = virtioMmioSsdt(ONE);
    const b = virtioMmioSsdt(ONE, { oemTableId: "VMMIO2" });
    expect(latin1(b.subarray(16, 24))).toBe("VMMIO2\0\0");
    expect(byteSum(b)).toBe(0);
    expect(b[9]).not.toBe(a[9]);
  });

  test("deterministic", () => {
    expect(firstDiff(virtioMmioSsdt(THREE), virtioMmioSsdt(THREE))).toBe(-1);
  });
});

describe("virtioMmioSsdt: AML structure", () => {
  test("one device: hand-encoded names and resource template (§6.4.3.4, §6.4.3.6, §6.4.2.9)", () => {
    const { devices, scopePkgLengthBytes } = walkSsdt(virtioMmioSsdt(ONE));
    expect(scopePkgLengthBytes).toBe(2);
    expect(devices).toHaveLength(1);
    const d = devices[0]!;
    expect(d.name).toBe("VR00");
    const hid = [0x08, ...Buffer.from("_HID"), 0x0d, ...Buffer.from("LNRO0005"), 0x00];
    const uid = [0x08, ...Buffer.from("_UID"), 0x00];
    const cca = [0x08, ...Buffer.from("_CCA"), 0x01];
    const crs = [0x08, ...Buffer.from("_CRS"), 0x11, 26, 0x0a, 23];
    const resources = [
      ...[0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x84, 0xfe, 0x00, 0x02, 0x00, 0x00],
      ...[0x89, 0x06, 0x00, 0x01, 0x01, 0x03, 0x00, 0x00, 0x00],
      ...[0x79, 0x00],
    ];
    expect([...d.body]).toEqual([...hid, ...uid, ...cca, ...crs, ...resources]);
  });

  test("PkgLength 63/64 boundary: a 63-byte device body needs the 2-byte form (65)", () => {
    const { devices } = walkSsdt(virtioMmioSsdt(many(3)));
    // VR00 and VR01 have _UID Zero/One (1 byte): body 63, so 1 + 63 = 64 does not fit one byte.
    expect(devices.map((d) => [d.pkgLengthBytes, d.pkgLength])).toEqual([
      [2, 65],
      [2, 65],
      [2, 66], // _UID 2 is BytePrefix 0x02
    ]);
  });

  test("PkgLength 4095/4096 boundary: the scope moves to 3 bytes between 60 and 61 devices", () => {
    const sixty = virtioMmioSsdt(many(60));
    const sixtyOne = virtioMmioSsdt(many(61));
    expect(walkSsdt(sixty).scopePkgLengthBytes).toBe(2);
    expect(readPkgLength(sixty, 37).value).toBeLessThanOrEqual(4095);
    expect(walkSsdt(sixtyOne).scopePkgLengthBytes).toBe(3);
    expect(readPkgLength(sixtyOne, 37).value).toBeGreaterThan(4095);
    const all = virtioMmioSsdt(many(256));
    const walked = walkSsdt(all);
    expect(walked.scopePkgLengthBytes).toBe(3);
    expect(walked.devices.map((d) => d.name).slice(-3)).toEqual(["VRFD", "VRFE", "VRFF"]);
    expect(u32(all, 4)).toBe(all.length);
    expect(byteSum(all)).toBe(0);
  });

  test("amlPkgLength at every boundary (§20.2.4)", () => {
    expect([...amlPkgLength(0)]).toEqual([0x01]);
    expect([...amlPkgLength(62)]).toEqual([0x3f]); // 63 in one byte
    expect([...amlPkgLength(63)]).toEqual([0x41, 0x04]); // 65 = 0x041
    expect([...amlPkgLength(4093)]).toEqual([0x4f, 0xff]); // 4095 = 0xFFF
    expect([...amlPkgLength(4094)]).toEqual([0x81, 0x00, 0x01]); // 4097 = 0x1001
    expect([...amlPkgLength(0xfffff - 3)]).toEqual([0x8f, 0xff, 0xff]); // 0xFFFFF
    expect([...amlPkgLength(0xfffff - 2)]).toEqual([0xc1, 0x00, 0x00, 0x01]); // 0x100001
    expect([...amlPkgLength(0xfffffff - 4)]).toEqual([0xcf, 0xff, 0xff, 0xff]);
    expect(() => amlPkgLength(0xfffffff - 3)).toThrow(/PkgLength/);
    expect(() => amlPkgLength(-1)).toThrow();
    expect(() => amlPkgLength(1.5)).toThrow();
    for (const n of [0, 62, 63, 64, 4093, 4094, 70000]) {
      const enc = amlPkgLength(n);
      const dec = readPkgLength(enc, 0);
      expect(dec.bytes).toBe(enc.length);
      expect(dec.value).toBe(n + enc.length);
    }
  });

  test("amlInteger picks the shortest form (§20.2.3)", () => {
    expect([...amlInteger(0)]).toEqual([0x00]);
    expect([...amlInteger(1)]).toEqual([0x01]);
    expect([...amlInteger(2)]).toEqual([0x0a, 0x02]);
    expect([...amlInteger(0xff)]).toEqual([0x0a, 0xff]);
    expect([...amlInteger(0x100)]).toEqual([0x0b, 0x00, 0x01]);
    expect([...amlInteger(0xffff)]).toEqual([0x0b, 0xff, 0xff]);
    expect([...amlInteger(0x10000)]).toEqual([0x0c, 0x00, 0x00, 0x01, 0x00]);
    expect([...amlInteger(0xffffffff)]).toEqual([0x0c, 0xff, 0xff, 0xff, 0xff]);
    expect(() => amlInteger(2 ** 32)).toThrow();
    expect(() => amlInteger(-1)).toThrow();
    expect(() => amlInteger(0.5)).toThrow();
  });
});

describe("virtioMmioSsdt: input validation", () => {
  const ok = { address: 0xfe840000, size: 0x200, irq: 3 };
  const bad: [string, VirtioMmioAcpiDevice[]][] = [
    ["no devices", []],
    ["257 devices", many(257).map((d, i) => ({ ...d, irq: i % 256 }))],
    ["negative address", [{ ...ok, address: -1 }]],
    ["address >= 2^32", [{ ...ok, address: 2 ** 32 }]],
    ["fractional address", [{ ...ok, address: 4096.5 }]],
    ["NaN address", [{ ...ok, address: Number.NaN }]],
    ["size 0", [{ ...ok, size: 0 }]],
    ["size >= 2^32", [{ ...ok, size: 2 ** 32 }]],
    ["window past 4 GiB", [{ ...ok, address: 0xffffff00, size: 0x200 }]],
    ["irq 256", [{ ...ok, irq: 256 }]],
    ["irq -1", [{ ...ok, irq: -1 }]],
    ["fractional irq", [{ ...ok, irq: 3.5 }]],
    ["shared irq", [ok, { ...ok, address: 0xfe841000 }]],
    ["overlapping windows", [ok, { address: 0xfe8401ff, size: 0x200, irq: 4 }]],
  ];
  test.each(bad)("%s throws", (_, devices) => {
    expect(() => virtioMmioSsdt(devices)).toThrow(Error);
  });

  test("edge values are accepted", () => {
    const t = virtioMmioSsdt([
      { address: 0, size: 1, irq: 0 },
      { address: 0xffffff00, size: 0x100, irq: 255 },
      { address: 1, size: 0xfffffeff, irq: 1 }, // ends exactly at 0xFFFFFF00
    ]);
    expect(walkSsdt(t).devices).toHaveLength(3);
  });

  test.each(["", "NINECHARS", 'A"B', "A\\B", "é", "A\nB"])("oemTableId %j throws", (id) => {
    expect(() => virtioMmioSsdt(ONE, { oemTableId: id })).toThrow(/OEM Table ID/);
  });
});

describe("virtioMmioSsdt: decoded by ACPICA iasl", () => {
  test.each([
    ["one", ONE],
    ["three", THREE],
  ])("%s device(s): disassembly shows the devices, header and no errors", (stem, devices) => {
    const t = virtioMmioSsdt(devices);
    const dsl = disassemble(stem, t);
    expect(dsl).toContain('DefinitionBlock ("", "SSDT", 2, "PVKIT", "VIRTMMIO", 0x00000001)');
    expect(dsl).toMatch(/Compiler ID\s+"PVKT"/);
    expect(dsl).toMatch(new RegExp(`Length\\s+0x[0-9A-F]{8} \\(${t.length}\\)`));
    expect(dsl).toContain("Scope (\\_SB)");
    expectDecoded(dsl, devices);
  });

  test.each([
    ["one", ONE],
    ["three", THREE],
    ["sixty-one", many(61)],
    ["all-256", many(256)],
  ])("%s: iasl recompiles its disassembly to the same bytes", (stem, devices) => {
    const t = virtioMmioSsdt(devices, { oemTableId: "RT" });
    const dsl = disassemble(`rt-${stem}`, t);
    expectDecoded(dsl, devices);
    expectSameAsIasl(t, compile(`rt-${stem}`));
  });

  test("iasl notices a corrupted table (the checks above can fail)", () => {
    const t = virtioMmioSsdt(ONE);
    t[9] = (t[9]! + 1) & 0xff;
    writeFileSync(join(work, "corrupt.aml"), t);
    const r = spawnSync("iasl", ["-d", "corrupt.aml"], { cwd: work, encoding: "utf8" });
    expect(`${r.stdout}${r.stderr}`).toMatch(/Incorrect checksum/);
  });
});

describe("acpiEarlyCpio (initrd_table_override.rst)", () => {
  const ssdt = virtioMmioSsdt(THREE);
  const second = virtioMmioSsdt(ONE, { oemTableId: "OTHER" });

  test("holds kernel/firmware/acpi/<name>.aml after its parent directories", () => {
    const a = acpiEarlyCpio([
      { name: "virtio-mmio", data: ssdt },
      { name: "ssdt_2", data: second },
    ]);
    const { members, end } = readNewc(a);
    expect(end).toBe(a.length);
    expect(a.length % 4).toBe(0);
    expect(members.map((m) => [m.name, m.mode.toString(8)])).toEqual([
      ["kernel", "40755"],
      ["kernel/firmware", "40755"],
      ["kernel/firmware/acpi", "40755"],
      ["kernel/firmware/acpi/virtio-mmio.aml", "100644"],
      ["kernel/firmware/acpi/ssdt_2.aml", "100644"],
    ]);
    expect(members.slice(0, 3).every((m) => m.nlink === 2)).toBe(true);
    const f1 = members[3]!.data;
    const f2 = members[4]!.data;
    expect(f1.length).toBe(ssdt.length);
    expect(firstDiff(f1, ssdt)).toBe(-1);
    expect(f2.length).toBe(second.length);
    expect(firstDiff(f2, second)).toBe(-1);
    // What the kernel's reader (lib/earlycpio.c) keeps: regular files under the prefix,
    // each with a valid header, matching length and zero checksum.
    const found = members.filter(
      (m) => (m.mode & 0o170000) === 0o100000 && m.name.startsWith("kernel/firmware/acpi/"),
    );
    expect(found).toHaveLength(2);
    for (const m of found) {
      expect(u32(m.data, 4)).toBe(m.data.length);
      expect(byteSum(m.data)).toBe(0);
    }
  });

  test("rejects names and tables the kernel would not take", () => {
    const bad = ssdt.slice();
    bad[40] = (bad[40]! + 1) & 0xff;
    const wrongLength = new Uint8Array(ssdt.length + 4);
    wrongLength.set(ssdt);
    const cases: { name: string; data: Uint8Array }[][] = [
      [],
      [{ name: "", data: ssdt }],
      [{ name: "a/b", data: ssdt }],
      [{ name: "..", data: ssdt }],
      [{ name: "x".repeat(65), data: ssdt }],
      [{ name: "a.b", data: ssdt }],
      [
        { name: "x", data: ssdt },
        { name: "x", data: second },
      ],
      [{ name: "bad", data: bad }],
      [{ name: "long", data: wrongLength }],
      [{ name: "short", data: ssdt.subarray(0, 20) }],
      Array.from({ length: 65 }, (_, i) => ({ name: `t${i}`, data: ssdt })),
    ];
    for (const tables of cases) expect(() => acpiEarlyCpio(tables)).toThrow(Error);
    expect(() =>
      acpiEarlyCpio(Array.from({ length: 64 }, (_, i) => ({ name: `t${i}`, data: ssdt }))),
    ).not.toThrow();
    // Long names load (the kernel only warns), so they are accepted.
    const long = readNewc(acpiEarlyCpio([{ name: "x".repeat(64), data: ssdt }]));
    expect(long.members[3]!.name).toBe(`kernel/firmware/acpi/${"x".repeat(64)}.aml`);
  });
});
