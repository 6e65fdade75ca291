/**
 * `HostMachine`: the host side of the wall — the "VMM". It owns the `Hypervisor` (machine
 * memory, the guest's domain, the PV MMU, PV timers, event channels), the shadow MMU of
 * the trapping configurations, the emulated timers and interrupt controller, the `Bus`
 * with the devices and their back-ends, the Ethernet switch with a `HostResponder`, and
 * the disk. The guest reaches all of it through exactly one entry point, {@link
 * HostMachine.exit}: a `switch` on the op code, no allocation, never a throw — a hostile or
 * buggy record is answered with an error value and counted. Interrupts go back as bits of
 * a pending bitmap ({@link HostMachine.takeInterrupts}).
 *
 * The host builds everything from the configuration:
 *
 * - `mmu`: `pv` → a PV domain (guest tables hold machine frames, updated by `mmu_update`);
 *   `shadow` → an HVM domain and a `ShadowMmu` (CR3 loads, INVLPG, #PF and stores to
 *   shadowed tables exit); `hap` → an HVM domain, nothing MMU-related exits.
 * - `time`: `pv` → Xen's single-shot timer and pvclock; `lapic` / `hpet` / `pit` → the
 *   emulated device on the bus.
 * - `irq`: `pic` → an {@link Pic8259} (the LAPIC timer, a local interrupt, bypasses it);
 *   `evtchn` → a backend domain that signals each device interrupt on an interdomain
 *   event channel (Xen's frontend/backend model).
 * - `net`: virtio-net on virtio-mmio, or the RTL8139 on its MMIO window; `blk`: virtio-blk
 *   on virtio-mmio over a `MemoryDisk`.
 *
 * @module
 */

import { Rtl8139 } from "@pvkit/emulated-rtl8139";
import {
  APIC_DEFAULT_BASE,
  type Clock,
  type Domain,
  GuestPhys,
  HPET_DEFAULT_BASE,
  HPET_MMIO_SIZE,
  Hpet,
  HypercallClient,
  HypercallPort,
  Hypervisor,
  LapicTimer,
  ManualClock,
  NR_HYPERCALLS,
  PIT_CH0,
  Pit8254,
  ShadowMmu,
  type Vcpu,
  VcpuInfoLayout,
  XenErrno,
} from "@pvkit/hypercall";
import { Bus, EthernetSwitch, GuestMemory, HostResponder, IrqLine } from "@pvkit/platform";
import { MemoryDisk, VirtioBlkDevice } from "@pvkit/virtio-blk";
import { VIRTIO_MMIO_WINDOW, type VirtioDeviceBase, VirtioMmioTransport } from "@pvkit/virtio-core";
import { VirtioNetDevice } from "@pvkit/virtio-net";
import { type BootDevice, type BootInfo, type GuestMemoryLayout, PAGE_BYTES } from "../boot.js";
import type { ResolvedConfig } from "../config.js";
import {
  type CpuControls,
  EXIT_EINVAL,
  EXIT_ENOSYS,
  EXIT_OP_COUNT,
  ExitOp,
  IrqLineNo,
} from "../exit.js";
import { PIC_MASTER_CMD, Pic8259 } from "./pic.js";
import { WriteProtectMirror } from "./write-protect.js";

const ERESTART = -XenErrno.ERESTART;

/** Default guest RAM: 32 MiB. */
export const DEFAULT_RAM_BYTES = 32 << 20;
/** Default disk: 8 MiB. */
export const DEFAULT_DISK_BYTES = 8 << 20;
/** virtio-net's virtio-mmio window. */
export const NET_MMIO_BASE = 0xfeb0_0000;
/** virtio-blk's virtio-mmio window. */
export const BLK_MMIO_BASE = 0xfeb0_1000;
/** The RTL8139's register window (BAR1, MMIO). */
export const RTL8139_MMIO_BASE = 0xfebf_0000;
/** The guest's IPv4 address. */
export const GUEST_IP = "10.0.2.15";
/** The `HostResponder`'s IPv4 address. */
export const HOST_IP = "10.0.2.2";
/** Pages of the backend domain that signals device events (4 of them hypercall scratch). */
const BACKEND_PAGES = 8;

/** Options of a {@link HostMachine}. */
export interface HostMachineOptions {
  /** The configuration (resolved). */
  readonly config: ResolvedConfig;
  /** Guest RAM in bytes (a multiple of 4096; default 32 MiB). */
  readonly ramBytes?: number;
  /** The clock everything runs on (default a `ManualClock` at 1 s). */
  readonly clock?: Clock;
  /** Put machine memory in a `SharedArrayBuffer` (the threaded runtime). */
  readonly shared?: boolean;
  /** Disk size in bytes (a multiple of 512; default 8 MiB). */
  readonly diskBytes?: number;
  /**
   * Where the pending-interrupt lines live when the guest runs in another thread: a word of
   * shared memory (the threaded runtime passes word 0 of its trap channel's pending bitmap),
   * updated with `Atomics` so the guest can take lines while the host raises them. Default:
   * a plain field (in-process).
   */
  readonly pendingWord?: { readonly words: Int32Array; readonly index: number };
}

/** The host's counters (cumulative since boot; snapshot with {@link HostMachine.counters}). */
export interface HostCounters {
  /** Exits of every kind, rejected ones included. */
  readonly exits: number;
  /** Exits per op code (index = `ExitOp` value). */
  readonly byOp: readonly number[];
  /** Guest hypercalls per hypercall number (continuations included). */
  readonly hypercalls: readonly number[];
  /** Exit records refused (unknown op, arguments out of range, op not intercepted). */
  readonly rejected: number;
  /** Exceptions caught inside the host while handling an exit (a host bug; answered EINVAL). */
  readonly hostFaults: number;
  /** Interrupts injected (a pending line set from clear). */
  readonly interrupts: number;
  /** Virtio queue notifications the devices received. */
  readonly notifications: number;
}

interface LevelSource {
  readonly irq: IrqLine;
  readonly port: number;
}

/** The host. */
export class HostMachine {
  /** The configuration. */
  readonly config: ResolvedConfig;
  /** The clock. */
  readonly clock: Clock;
  /** The hypervisor. */
  readonly hypervisor: Hypervisor;
  /** The guest's domain. */
  readonly domain: Domain;
  /** The guest's vCPU. */
  readonly vcpu: Vcpu;
  /** The bus the devices are on. */
  readonly bus = new Bus();
  /** Guest RAM as the devices see it (guest-physical 0 …). */
  readonly ram: GuestMemory;
  /** What the guest learns at boot. */
  readonly bootInfo: BootInfo;
  /** The vCPU's execution controls. */
  readonly controls: CpuControls;
  /** The shadow MMU (`mmu: "shadow"`), else null. */
  readonly shadow: ShadowMmu | null;
  /** The emulated interrupt controller (`irq: "pic"`), else null. */
  readonly pic: Pic8259 | null;
  /** The emulated timer device, else null (`time: "pv"`). */
  readonly timer: LapicTimer | Hpet | Pit8254 | null;
  /** The network the NIC is plugged into. */
  readonly network = new EthernetSwitch();
  /** The host on that network (ARP, ICMP echo, UDP sink). */
  readonly responder = new HostResponder({ ip: HOST_IP });
  /** The NIC device, else null. */
  readonly nic: VirtioNetDevice | Rtl8139 | null = null;
  /** The disk device, else null. */
  readonly blk: VirtioBlkDevice | null = null;
  /** The disk's bytes, else null. */
  readonly disk: MemoryDisk | null = null;
  /** The buffer holding machine memory (the guest's RAM is a window of it). */
  readonly backing: ArrayBuffer | SharedArrayBuffer;
  /** Called whenever a pending line goes from clear to set (the threaded runtime's wake-up). */
  onInterrupt: ((line: number) => void) | null = null;
  /** Description of the last host fault caught in {@link exit}. */
  lastFault = "";

  private readonly wp: WriteProtectMirror | null;
  private readonly backend: HypercallClient | null;
  private readonly ramView: DataView;
  private readonly vcpuInfo: Uint8Array;
  private readonly levelSources: LevelSource[] = [];
  private readonly virtio: VirtioDeviceBase[] = [];
  private readonly ramPages: number;
  private pending = 0;
  private readonly pendingWords: Int32Array | null;
  private readonly shared: boolean;
  private readonly pendingIndex: number;
  private exitCount = 0;
  private readonly byOp = new Float64Array(EXIT_OP_COUNT);
  private readonly hypercallsByNr = new Float64Array(NR_HYPERCALLS);
  private rejected = 0;
  private hostFaults = 0;
  private interrupts = 0;
  private faultOp = -1;
  private faultResult = 0;
  private faultTimes = 0;

  /**
   * Builds the machine.
   *
   * @param options - configuration, RAM, clock, disk
   * @throws RangeError for a RAM or disk size that is not a whole number of pages/sectors
   *   (host configuration, never guest input)
   */
  constructor(options: HostMachineOptions) {
    const config = options.config;
    this.config = config;
    this.pendingWords = options.pendingWord?.words ?? null;
    this.shared = options.shared ?? false;
    this.pendingIndex = options.pendingWord?.index ?? 0;
    const ramBytes = options.ramBytes ?? DEFAULT_RAM_BYTES;
    if (!Number.isSafeInteger(ramBytes) || ramBytes % PAGE_BYTES !== 0 || ramBytes < 4 << 20) {
      throw new RangeError(
        `guest RAM must be a multiple of 4096 bytes and at least 4 MiB, got ${ramBytes}`,
      );
    }
    const pages = ramBytes / PAGE_BYTES;
    this.ramPages = pages;
    this.clock = options.clock ?? new ManualClock(1_000_000_000);
    // Frame 0 (Xen's), the guest's RAM and shared-info page, the backend's pages and its
    // shared-info page, a little slack.
    const machinePages = pages + 1 + BACKEND_PAGES + 1 + 1 + 8;
    const hv = new Hypervisor({
      machinePages,
      clock: this.clock,
      shared: options.shared ?? false,
    });
    this.hypervisor = hv;
    const dom = hv.createDomain({ pages, kind: config.mmu === "pv" ? "pv" : "hvm", name: "guest" });
    this.domain = dom;
    this.vcpu = dom.vcpus[0]!;
    this.vcpu.onUpcall = null;
    const ramBase = contiguousP2m(hv, dom);
    const region = hv.memory.regions[0]!;
    this.backing = region.bytes.buffer as ArrayBuffer | SharedArrayBuffer;
    const layout: GuestMemoryLayout = {
      ramBytes,
      ramOffset: region.bytes.byteOffset + ramBase * PAGE_BYTES,
      sharedInfoGpa: ramBytes,
      sharedInfoOffset: region.bytes.byteOffset + dom.sharedInfoMa,
    };
    this.ram = new GuestMemory([
      { base: 0, size: ramBytes, backing: this.backing, backingOffset: layout.ramOffset },
    ]);
    this.ramView = new DataView(this.backing, layout.ramOffset, ramBytes);
    this.vcpuInfo = new Uint8Array(
      this.backing,
      region.bytes.byteOffset + this.vcpu.vcpuInfoMa,
      64,
    );

    // start_info.mfn_list: one u32 machine frame per guest frame, from guest frame 1 on.
    const mfnListGpa = PAGE_BYTES;
    for (let pfn = 0; pfn < pages; pfn++)
      this.ramView.setUint32(mfnListGpa + pfn * 4, dom.p2m[pfn]!, true);
    const firstFreePfn = 1 + Math.ceil((pages * 4) / PAGE_BYTES);

    // Event channels: a privileged backend domain owns one unbound port per device source.
    if (config.irq === "evtchn") {
      const bdom = hv.createDomain({ pages: BACKEND_PAGES, privileged: true, name: "backend" });
      const bport = new HypercallPort(hv, bdom.vcpus[0]!);
      this.backend = new HypercallClient(bport, new GuestPhys(hv, bdom), 4 * PAGE_BYTES, 4);
    } else this.backend = null;
    const allocPort = (): number => {
      if (this.backend === null) return -1;
      const port = this.backend.allocUnbound(dom.id);
      if (port < 0) throw new Error(`backend could not allocate an event channel (${port})`);
      return port;
    };

    // MMU.
    if (config.mmu === "shadow") {
      this.shadow = new ShadowMmu(hv, dom);
      this.wp = new WriteProtectMirror(
        this.shadow,
        this.ramView,
        new Uint8Array(options.shared ? new SharedArrayBuffer(pages) : new ArrayBuffer(pages)),
      );
    } else {
      this.shadow = null;
      this.wp = null;
    }
    this.controls = {
      cr3LoadExits: config.mmu === "shadow",
      tlbFlushExits: config.mmu === "shadow",
      pageFaultExits: config.mmu !== "hap",
      nestedPaging: config.mmu === "hap",
      writeProtect: this.wp?.bits ?? null,
    };

    // Interrupt controller.
    if (config.irq === "pic") {
      const pic = new Pic8259((1 << IrqLineNo.NET) | (1 << IrqLineNo.BLK));
      pic.onChange = () => {
        const d = pic.takeDeliverable();
        if (d !== 0) for (let n = 0; n < 8; n++) if ((d & (1 << n)) !== 0) this.raise(n);
      };
      this.bus.map("pio", PIC_MASTER_CMD, 2, pic, "pic");
      this.pic = pic;
    } else this.pic = null;
    const route = (irq: IrqLine, line: number, level: boolean, direct = false): number => {
      if (this.pic === null) {
        const port = allocPort();
        irq.onChange((high) => {
          if (high) this.backendSend(port);
        });
        if (level) this.levelSources.push({ irq, port });
        return port;
      }
      if (direct) {
        irq.onChange((high) => {
          if (high) this.raise(line);
        });
      } else {
        const pic = this.pic;
        irq.onChange((high) => pic.setInput(line, high));
      }
      return -1;
    };

    // Timer.
    let timerDevice: BootDevice = { base: 0, line: IrqLineNo.TIMER, backendPort: -1 };
    const timerIrq = new IrqLine("timer");
    switch (config.time) {
      case "lapic": {
        const t = new LapicTimer(this.clock, timerIrq);
        this.bus.map("mmio", APIC_DEFAULT_BASE, 0x1000, t, "lapic");
        this.timer = t;
        timerDevice = {
          base: APIC_DEFAULT_BASE,
          line: IrqLineNo.TIMER,
          backendPort: route(timerIrq, IrqLineNo.TIMER, false, true),
        };
        break;
      }
      case "hpet": {
        const t = new Hpet(this.clock, timerIrq);
        this.bus.map("mmio", HPET_DEFAULT_BASE, HPET_MMIO_SIZE, t, "hpet");
        this.timer = t;
        timerDevice = {
          base: HPET_DEFAULT_BASE,
          line: IrqLineNo.TIMER,
          backendPort: route(timerIrq, IrqLineNo.TIMER, false),
        };
        break;
      }
      case "pit": {
        const t = new Pit8254(this.clock, timerIrq);
        this.bus.map("pio", PIT_CH0, 4, t, "pit");
        this.timer = t;
        timerDevice = {
          base: PIT_CH0,
          line: IrqLineNo.TIMER,
          backendPort: route(timerIrq, IrqLineNo.TIMER, false),
        };
        break;
      }
      default:
        this.timer = null;
    }

    // NIC.
    let netDevice: (BootDevice & { kind: "virtio" | "rtl8139" }) | null = null;
    if (config.net !== undefined) {
      const port = this.network.createPort("guest", { checksumOffload: config.net === "virtio" });
      this.responder.attachTo(this.network.createPort("host"));
      const irq = new IrqLine("nic");
      if (config.net === "virtio") {
        const dev = new VirtioNetDevice({ backend: port, queueSize: 256 });
        this.bus.map(
          "mmio",
          NET_MMIO_BASE,
          VIRTIO_MMIO_WINDOW,
          new VirtioMmioTransport({ device: dev, memory: this.ram, irq }),
          "virtio-net",
        );
        this.nic = dev;
        this.virtio.push(dev);
        netDevice = {
          kind: "virtio",
          base: NET_MMIO_BASE,
          line: IrqLineNo.NET,
          backendPort: route(irq, IrqLineNo.NET, true),
        };
      } else {
        const dev = new Rtl8139({
          backend: port,
          memory: this.ram,
          irq,
          requireBusMaster: false,
          rxPending: 1024,
        });
        this.bus.map("mmio", RTL8139_MMIO_BASE, 0x100, dev, "rtl8139");
        this.nic = dev;
        netDevice = {
          kind: "rtl8139",
          base: RTL8139_MMIO_BASE,
          line: IrqLineNo.NET,
          backendPort: route(irq, IrqLineNo.NET, true),
        };
      }
    }

    // Disk.
    let blkDevice: BootDevice | null = null;
    if (config.blk !== undefined) {
      const diskBytes = options.diskBytes ?? DEFAULT_DISK_BYTES;
      if (!Number.isSafeInteger(diskBytes) || diskBytes <= 0 || diskBytes % 512 !== 0) {
        throw new RangeError(`the disk must be a positive multiple of 512 bytes, got ${diskBytes}`);
      }
      const disk = new MemoryDisk(diskBytes);
      const dev = new VirtioBlkDevice({ backend: disk, queueSize: 128 });
      const irq = new IrqLine("blk");
      this.bus.map(
        "mmio",
        BLK_MMIO_BASE,
        VIRTIO_MMIO_WINDOW,
        new VirtioMmioTransport({ device: dev, memory: this.ram, irq }),
        "virtio-blk",
      );
      this.disk = disk;
      this.blk = dev;
      this.virtio.push(dev);
      blkDevice = {
        base: BLK_MMIO_BASE,
        line: IrqLineNo.BLK,
        backendPort: route(irq, IrqLineNo.BLK, true),
      };
    }

    this.bootInfo = {
      config,
      ramPages: pages,
      memory: layout,
      mfnListGpa,
      firstFreePfn,
      vcpuInfoOffset: this.vcpu.vcpuInfoMa - dom.sharedInfoMa,
      tscKhz: hv.options.tscKhz,
      backendDomid: this.backend === null ? -1 : this.backend.port.vcpu.domain.id,
      devices: {
        timer: { kind: config.time, ...timerDevice },
        pic: this.pic === null ? null : { base: PIC_MASTER_CMD },
        net: netDevice,
        blk: blkDevice,
      },
      guestIp: GUEST_IP,
      hostIp: HOST_IP,
    };
  }

  // ---------------------------------------------------------------------------------------
  // The one entry point

  /**
   * Handles one exit record (see `ExitOp` for the arguments of each op). A `switch` on the
   * op, no allocation on any path; a record with an unknown op answers {@link EXIT_ENOSYS},
   * one with arguments out of range (or an op the configuration does not intercept) answers
   * {@link EXIT_EINVAL}; both are counted, nothing is thrown.
   *
   * @returns the op's result
   */
  exit(op: number, a0: number, a1: number, a2: number, a3: number, a4: number, a5: number): number {
    this.exitCount++;
    if (this.faultTimes > 0 && op === this.faultOp) {
      this.faultTimes--;
      this.byOp[op]!++;
      return this.faultResult;
    }
    try {
      switch (op) {
        case ExitOp.PIO_READ:
          if (!isPort(a0) || !isSize(a1)) return this.reject();
          this.byOp[op]!++;
          return this.bus.read("pio", a0, a1);
        case ExitOp.PIO_WRITE:
          if (!isPort(a0) || !isSize(a1) || !isU32(a2)) return this.reject();
          this.byOp[op]!++;
          this.bus.write("pio", a0, a1, a2);
          return 0;
        case ExitOp.MMIO_READ:
          if (!isAddress(a0) || !isSize(a1)) return this.reject();
          this.byOp[op]!++;
          return this.bus.read("mmio", a0, a1);
        case ExitOp.MMIO_WRITE:
          if (!isAddress(a0) || !isSize(a1) || !isU32(a2)) return this.reject();
          this.byOp[op]!++;
          this.bus.write("mmio", a0, a1, a2);
          return 0;
        case ExitOp.HYPERCALL:
          return this.hypercall(a0, a1, a2, a3, a4, a5);
        case ExitOp.CR3_LOAD: {
          const shadow = this.shadow;
          if (shadow === null || !this.isGfn(a0)) return this.reject();
          this.byOp[op]!++;
          shadow.loadCr3(a0);
          this.wp!.afterCr3Load(a0);
          return 0;
        }
        case ExitOp.INVLPG:
          if (this.shadow === null || !Number.isSafeInteger(a0)) return this.reject();
          this.byOp[op]!++;
          this.shadow.invlpg(a0);
          return 0;
        case ExitOp.TLB_FLUSH:
          if (this.shadow === null) return this.reject();
          this.byOp[op]!++;
          this.shadow.flushTlb();
          return 0;
        case ExitOp.PTE_WRITE:
          return this.pteWrite(a0, a1, a2);
        case ExitOp.PAGE_FAULT:
          if (!this.controls.pageFaultExits || !Number.isSafeInteger(a0)) return this.reject();
          this.byOp[op]!++;
          return 0;
        case ExitOp.HALT:
          this.byOp[op]!++;
          return 0;
        default:
          this.rejected++;
          return EXIT_ENOSYS;
      }
    } catch (e) {
      // A device or model bug must not turn a guest access into a host exception.
      this.hostFaults++;
      this.lastFault = e instanceof Error ? e.message : String(e);
      return EXIT_EINVAL;
    }
  }

  private reject(): number {
    this.rejected++;
    return EXIT_EINVAL;
  }

  private isGfn(n: number): boolean {
    return Number.isInteger(n) && n >= 0 && n < this.ramPages;
  }

  private hypercall(
    nr: number,
    r0: number,
    r1: number,
    r2: number,
    r3: number,
    r4: number,
  ): number {
    if (
      !Number.isInteger(nr) ||
      nr < 0 ||
      nr >= NR_HYPERCALLS ||
      !Number.isSafeInteger(r0) ||
      !Number.isSafeInteger(r1) ||
      !Number.isSafeInteger(r2) ||
      !Number.isSafeInteger(r3) ||
      !Number.isSafeInteger(r4)
    ) {
      return this.reject();
    }
    const hv = this.hypervisor;
    const v = this.vcpu;
    hv.setRegNum(v, 0, r0);
    hv.setRegNum(v, 1, r1);
    hv.setRegNum(v, 2, r2);
    hv.setRegNum(v, 3, r3);
    hv.setRegNum(v, 4, r4);
    let rc: number;
    // A preempted hypercall is re-executed as its continuation: one more exit each time
    // (reference §1.4), bounded so a hostile guest cannot keep the host here.
    for (let round = 0; ; round++) {
      this.byOp[ExitOp.HYPERCALL]!++;
      this.hypercallsByNr[nr]!++;
      rc = hv.hypercall(v, nr);
      if (rc !== ERESTART || round >= 1_000_000) break;
      this.exitCount++;
    }
    this.syncUpcall();
    return rc === ERESTART ? EXIT_EINVAL : rc;
  }

  private pteWrite(gpa: number, lo: number, hi: number): number {
    const shadow = this.shadow;
    if (
      shadow === null ||
      !Number.isSafeInteger(gpa) ||
      gpa < 0 ||
      gpa % 8 !== 0 ||
      gpa >= this.ramPages * PAGE_BYTES ||
      !isU32(lo) ||
      !isU32(hi)
    ) {
      return this.reject();
    }
    this.byOp[ExitOp.PTE_WRITE]!++;
    const oldLo = this.ramView.getUint32(gpa, true);
    const oldHi = this.ramView.getUint32(gpa + 4, true);
    if (shadow.guestWrite64(gpa, lo, hi) < 0) return EXIT_EINVAL;
    this.wp!.afterTableWrite(Math.floor(gpa / PAGE_BYTES), oldLo, oldHi, lo, hi);
    return 0;
  }

  // ---------------------------------------------------------------------------------------
  // Interrupts

  private raise(line: number): void {
    const bit = 1 << line;
    const words = this.pendingWords;
    if (words === null) {
      if ((this.pending & bit) !== 0) return;
      this.pending |= bit;
    } else if ((Atomics.or(words, this.pendingIndex, bit) & bit) !== 0) return;
    this.interrupts++;
    this.onInterrupt?.(line);
  }

  /** Raises the upcall line when Xen marked `evtchn_upcall_pending` and upcalls are not masked. */
  private syncUpcall(): void {
    const info = this.vcpuInfo;
    // Shared memory: single-byte atomics (the guest in another thread clears these flags).
    const pending = this.shared
      ? Atomics.load(info, VcpuInfoLayout.evtchn_upcall_pending)
      : info[VcpuInfoLayout.evtchn_upcall_pending]!;
    if (pending === 0) return;
    const masked = this.shared
      ? Atomics.load(info, VcpuInfoLayout.evtchn_upcall_mask)
      : info[VcpuInfoLayout.evtchn_upcall_mask]!;
    if (masked === 0) {
      this.raise(IrqLineNo.EVTCHN);
    }
  }

  private backendSend(port: number): void {
    if (this.backend === null || port < 0) return;
    this.backend.send(port);
    this.syncUpcall();
  }

  /** The pending lines, without taking them. */
  pendingInterrupts(): number {
    const words = this.pendingWords;
    return words === null ? this.pending : Atomics.load(words, this.pendingIndex);
  }

  /** Takes the pending lines (the guest acknowledges the injected interrupts). */
  takeInterrupts(): number {
    const words = this.pendingWords;
    if (words !== null) return Atomics.exchange(words, this.pendingIndex, 0);
    const p = this.pending;
    this.pending = 0;
    return p;
  }

  // ---------------------------------------------------------------------------------------
  // Time

  /** The TSC the guest reads (derived from the clock; no exit). */
  rdtsc(): number {
    return this.hypervisor.rdtsc();
  }

  /**
   * The earliest armed timer deadline (PV single-shot timer or the emulated device), in ns.
   *
   * @returns the deadline, or -1 when no timer is armed
   */
  nextDeadline(): number {
    const a = this.hypervisor.nextDeadline();
    const b = this.timer === null ? -1 : this.timer.nextDeadline();
    if (a < 0) return b;
    if (b < 0) return a;
    return Math.min(a, b);
  }

  /** Fires every timer due at the clock's time. */
  pollTimers(): void {
    this.hypervisor.poll();
    this.syncUpcall();
    this.timer?.poll();
  }

  /**
   * What the host does when the vCPU idles: re-signals level-triggered device lines still
   * asserted (with event channels an edge could otherwise be lost, as a level PIRQ is
   * re-fired after its EOI in Xen) and fires due timers.
   *
   * @returns the pending lines
   */
  idle(): number {
    for (const s of this.levelSources) if (s.irq.level) this.backendSend(s.port);
    this.pollTimers();
    return this.pendingInterrupts();
  }

  // ---------------------------------------------------------------------------------------
  // Counters and test hooks

  /** A snapshot of the counters. */
  counters(): HostCounters {
    let notifications = 0;
    for (const d of this.virtio) notifications += d.notifications;
    return {
      exits: this.exitCount,
      byOp: Array.from(this.byOp),
      hypercalls: Array.from(this.hypercallsByNr),
      rejected: this.rejected,
      hostFaults: this.hostFaults,
      interrupts: this.interrupts,
      notifications,
    };
  }

  /** Exits so far (cheap; for budgets). */
  get exits(): number {
    return this.exitCount;
  }

  /**
   * Fault injection for tests: the next `times` exits with op `op` are not carried out and
   * answer `result` (e.g. a hypercall answering `-EINVAL`, to see the guest panic).
   */
  injectFault(op: number, result: number, times = 1): void {
    this.faultOp = op;
    this.faultResult = result;
    this.faultTimes = times;
  }
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffff;
}
function isSize(n: number): n is 1 | 2 | 4 {
  return n === 1 || n === 2 || n === 4;
}
function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
}
function isAddress(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/**
 * Makes the domain's pseudo-physical→machine map contiguous and ascending, so that guest
 * RAM is one window of machine memory and devices can DMA to guest-physical addresses with
 * plain views. `Hypervisor.createDomain` hands frames out highest first (so that p2m is
 * not the identity); the set it hands a fresh machine is contiguous, and only the order is
 * changed here, before anything has used the map.
 *
 * @returns the machine frame of guest frame 0
 * @throws Error when the domain's frames are not one contiguous range (host setup bug)
 */
function contiguousP2m(hv: Hypervisor, dom: Domain): number {
  const p2m = dom.p2m;
  let lo = Number.POSITIVE_INFINITY;
  let hi = -1;
  for (let i = 0; i < p2m.length; i++) {
    lo = Math.min(lo, p2m[i]!);
    hi = Math.max(hi, p2m[i]!);
  }
  if (hi - lo + 1 !== p2m.length) throw new Error("the guest's machine frames are not contiguous");
  for (let pfn = 0; pfn < p2m.length; pfn++) {
    p2m[pfn] = lo + pfn;
    hv.m2p[lo + pfn] = pfn;
  }
  return lo;
}
