import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  EthernetSwitch,
  LoopbackBackend,
  seedPseudoHeader,
  verifyTransportChecksum,
} from "@pvkit/platform";
import { PcapFileWriter, UdpSocketBackend } from "@pvkit/platform/node";
import { featureMask } from "@pvkit/virtio-core";
import { VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM } from "@pvkit/virtio-net";
import { afterAll, describe, expect, it } from "vitest";
import { expectSameBytes, netGuest, rng, seqOf, settle, udpFrame } from "./harness.js";

const dir = mkdtempSync(join(tmpdir(), "pvkit-net-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const mac = (i: number) => new Uint8Array([0x52, 0x54, 0, 0, 1, i]);

describe("network back-ends with two guests", () => {
  it("a pcap written during the exchange is read back by tshark with the right count and bytes", async () => {
    const sw = new EthernetSwitch();
    const path = join(dir, "exchange.pcap");
    const pcap = new PcapFileWriter(path);
    sw.addTap(pcap.tap());
    const a = netGuest(sw.createPort("a"), { device: { mac: mac(1) } });
    const b = netGuest(sw.createPort("b"), { device: { mac: mac(2) } });
    await settle();
    const rand = rng(42);
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) {
      const [from, to] = i % 2 === 0 ? [a, b] : [b, a];
      const f = udpFrame(from.driver.mac, to.driver.mac, 60 + ((i * 37) % 1455), i, 5000 + i, rand);
      frames.push(f);
      expect(from.driver.send(f)).toBe(true);
      await settle(1);
    }
    await settle();
    pcap.close();
    expect(pcap.frames).toBe(40);
    const run = (args: string[]): string =>
      execFileSync("tshark", ["-r", path, ...args], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      });
    const lens = run(["-T", "fields", "-e", "frame.len", "-e", "frame.cap_len"]).trim().split("\n");
    expect(lens.length).toBe(40);
    for (const [i, line] of lens.entries())
      expect(line.split("\t").map(Number)).toEqual([frames[i]!.length, frames[i]!.length]);
    // -x prints one hex dump per packet, separated by blank lines.
    const dumps = run(["-x"])
      .trim()
      .split(/\n\s*\n/);
    expect(dumps.length).toBe(40);
    dumps.forEach((dump, i) => {
      let hex = "";
      for (const line of dump.split("\n")) {
        const m = /^[0-9a-f]{4}\s\s((?:[0-9a-f]{2} )+)/.exec(`${line} `);
        if (m) hex += m[1]!.replace(/ /g, "");
      }
      expectSameBytes(Uint8Array.from(Buffer.from(hex, "hex")), frames[i]!);
    });
  });

  it("two UdpSocketBackends on 127.0.0.1 carry frames between two switches, checksums completed on the way", async () => {
    const ua = await UdpSocketBackend.open({ remoteAddress: "127.0.0.1", remotePort: 1 });
    const ub = await UdpSocketBackend.open({
      remoteAddress: "127.0.0.1",
      remotePort: ua.local.port,
    });
    ua.setRemote("127.0.0.1", ub.local.port);
    try {
      const s1 = new EthernetSwitch();
      const s2 = new EthernetSwitch();
      const up1 = s1.connect(ua);
      const up2 = s2.connect(ub);
      const a = netGuest(s1.createPort("a"), { device: { mac: mac(1) } });
      const b = netGuest(s2.createPort("b"), { device: { mac: mac(2) } });
      await settle();
      const rand = rng(5);
      const sent: Uint8Array[] = [];
      for (let i = 0; i < 64; i++) {
        const f = udpFrame(a.driver.mac, b.driver.mac, 60 + ((i * 101) % 1455), i, 7000, rand);
        sent.push(f);
        // Every other frame goes out with checksum offload: the UDP link cannot carry the
        // metadata, so the switch must complete the checksum before the socket.
        if (i % 2 === 1) {
          const c = f.slice();
          const off = seedPseudoHeader(c)!;
          expect(a.driver.enqueue(c, { csum: off })).toBe(true);
        } else expect(a.driver.enqueue(f)).toBe(true);
        if (i % 8 === 7) a.driver.commit();
      }
      a.driver.commit();
      for (let t = 0; t < 200 && b.received.length < 64; t++)
        await new Promise((r) => setTimeout(r, 5));
      expect(b.received.length).toBe(64);
      for (const r of b.received) {
        expectSameBytes(r.frame, sent[seqOf(r.frame)]!);
        expect(verifyTransportChecksum(r.frame)).toBe(true);
      }
      // In order: one socket, one flow.
      expect(b.received.map((r) => seqOf(r.frame))).toEqual(sent.map((_, i) => i));
      expect(up1.portStats.checksumsCompleted).toBe(32);
      expect(up2.portStats.rxFrames).toBe(64);
      // And back.
      const back = udpFrame(b.driver.mac, a.driver.mac, 300, 99, 1, rand);
      b.driver.send(back);
      for (let t = 0; t < 200 && a.received.length < 1; t++)
        await new Promise((r) => setTimeout(r, 5));
      expectSameBytes(a.received[0]!.frame, back);
    } finally {
      await ua.close();
      await ub.close();
    }
  });

  it("checksum metadata travels between pvkit NICs; a guest without GUEST_CSUM gets it completed", async () => {
    const sw = new EthernetSwitch();
    const a = netGuest(sw.createPort("a"), { device: { mac: mac(1) } });
    const b = netGuest(sw.createPort("b"), { device: { mac: mac(2) } });
    const c = netGuest(sw.createPort("c"), {
      device: { mac: mac(3) },
      driver: { withoutFeatures: featureMask(VIRTIO_NET_F_GUEST_CSUM) },
    });
    await settle();
    const rand = rng(11);
    for (const to of [b, c]) {
      const f = udpFrame(a.driver.mac, to.driver.mac, 400, 1, 1, rand);
      const partial = f.slice();
      const off = seedPseudoHeader(partial)!;
      expect(off).toEqual({ csumStart: 34, csumOffset: 6 });
      a.driver.send(partial, { csum: off });
      await settle();
      const got = to.received.at(-1)!;
      if (to === b) {
        // Passed through: NEEDS_CSUM with the offsets, the field still partial.
        expect(got.info.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM);
        expect(got.info.csumStart).toBe(34);
        expect(got.info.csumOffset).toBe(6);
        expectSameBytes(got.frame, partial);
      } else {
        expect(got.info.flags).toBe(0);
        expectSameBytes(got.frame, f);
        // 2: the first frame (to b, not yet learnt) was flooded to c as well.
        expect(c.device.stats.checksumsCompleted).toBe(2);
        expect(verifyTransportChecksum(got.frame)).toBe(true);
      }
    }
  });

  it("link down/up on the back-end reaches the guest through a config interrupt; frames are dropped while down", async () => {
    const lb = new LoopbackBackend();
    const g = netGuest(lb, { device: { mac: mac(1) } });
    await settle();
    const events: boolean[] = [];
    g.driver.on("link", (up) => events.push(up));
    expect(g.driver.linkUp).toBe(true);
    lb.setLink(false);
    await settle();
    expect(g.driver.linkUp).toBe(false);
    expect(g.driver.send(udpFrame(mac(1), mac(1), 100, 1, 1, rng(1)))).toBe(true);
    await settle();
    expect(g.device.stats.drops.txLinkDown).toBe(1);
    lb.setLink(true);
    await settle();
    expect(events).toEqual([false, true]);
    // Reflected back to itself now that the link is up.
    const f = udpFrame(mac(1), mac(1), 100, 2, 1, rng(2));
    g.driver.send(f);
    await settle();
    expectSameBytes(g.received.at(-1)!.frame, f);
  });

  it("backpressure: a busy back-end keeps the frame, which goes out when it is writable again", async () => {
    const lb = new LoopbackBackend({ mode: "sink" });
    const g = netGuest(lb, { device: { mac: mac(1) } });
    await settle();
    lb.setBusy(true);
    const rand = rng(4);
    const fs = [0, 1, 2].map((i) => udpFrame(mac(1), mac(2), 90 + i, i, 1, rand));
    for (const f of fs) g.driver.enqueue(f);
    g.driver.commit();
    expect(lb.sent.length).toBe(0);
    expect(g.device.stats.txBusy).toBe(1);
    lb.setBusy(false);
    expect(lb.sent.length).toBe(3);
    for (const [i, f] of fs.entries()) expectSameBytes(lb.sent[i]!.frame, f);
    expect(Object.values(g.device.stats.drops).reduce((x, y) => x + y, 0)).toBe(0);
  });

  it("RX filter: promiscuous off drops foreign unicast; MAC table and allmulti admit frames; announce is acknowledged", async () => {
    const lb = new LoopbackBackend({ mode: "sink" });
    const g = netGuest(lb, { device: { mac: mac(1) } });
    await settle();
    const rand = rng(8);
    const to = (dst: Uint8Array) => udpFrame(mac(7), dst, 100, 0, 1, rand);
    const multicast = new Uint8Array([0x01, 0x00, 0x5e, 0, 0, 1]);
    expect(await g.driver.setRxMode("promisc", false)).toBe(true);
    lb.inject(to(mac(5)));
    lb.inject(to(multicast));
    lb.inject(to(mac(1)));
    lb.inject(to(new Uint8Array(6).fill(0xff)));
    expect(g.device.stats.drops.rxFiltered).toBe(2);
    expect(await g.driver.setMacTable([mac(5)], [multicast])).toBe(true);
    lb.inject(to(mac(5)));
    lb.inject(to(multicast));
    expect(g.device.stats.drops.rxFiltered).toBe(2);
    expect(await g.driver.setRxMode("nobcast", true)).toBe(true);
    lb.inject(to(new Uint8Array(6).fill(0xff)));
    expect(g.device.stats.drops.rxFiltered).toBe(3);
    expect(await g.driver.setMac(mac(6))).toBe(true);
    expect(g.device.mac).toEqual(mac(6));
    lb.inject(to(mac(6)));
    await settle();
    expect(g.received.length).toBe(5);
    // Announce: the driver sends a RARP from its MAC and acknowledges.
    let announced = 0;
    g.driver.on("announce", () => announced++);
    expect(g.device.announce()).toBe(true);
    await settle();
    expect(announced).toBe(1);
    const rarp = lb.sent.at(-1)!.frame;
    expect([rarp[12], rarp[13]]).toEqual([0x80, 0x35]);
    expect(rarp.subarray(6, 12)).toEqual(mac(6));
    expect(g.device.readConfig(6, 2) & 2).toBe(0);
  });
});
