/**
 * The wall between the guest kernel and the host ("VMM"): the exit record and the `Cpu`.
 *
 * Everything privileged the guest kernel does crosses the wall as one **exit record**: an
 * op code from {@link ExitOp}, up to six numeric arguments and one numeric result — all
 * JavaScript numbers, exact up to 2^53, so the record fits a `Float64Array` slot of the
 * threaded runtime's trap channel (`@pvkit/platform` `TrapPort.call(op, a0…a5)`) as well as
 * a plain function call in-process. A 64-bit page-table entry travels as two `u32` halves;
 * hypercall arguments that live in guest memory (`mmu_update` batches, multicall lists)
 * stay in guest RAM and only their guest-physical addresses travel, as register values do
 * on real hardware (Xen's hypercall ABI, reference `xen-pv.md` §1.2).
 *
 * Interrupts cross the other way as bits of a pending bitmap ({@link IrqLineNo}); the guest
 * takes them with {@link Cpu.takeInterrupts} and idles with {@link Cpu.waitForInterrupt}.
 *
 * @module
 */

/**
 * Exit op codes: what the guest did that the host must handle. Arguments per op:
 *
 * | op | a0 | a1 | a2 | a3…a5 | result |
 * |---|---|---|---|---|---|
 * | `PIO_READ` | port | size (1, 2, 4) | | | value, all-ones if unclaimed |
 * | `PIO_WRITE` | port | size | value | | 0 |
 * | `MMIO_READ` | address | size | | | value, all-ones if unclaimed |
 * | `MMIO_WRITE` | address | size | value | | 0 |
 * | `HYPERCALL` | hypercall number | register 0 | register 1 | registers 2–4 | `>= 0` or `-errno` |
 * | `CR3_LOAD` | root guest frame | | | | 0 |
 * | `INVLPG` | virtual address | | | | 0 |
 * | `TLB_FLUSH` | | | | | 0 |
 * | `PTE_WRITE` | guest-physical address (8-aligned) | low word | high word | | 0 or `-errno` |
 * | `PAGE_FAULT` | virtual address | access (`ACCESS_*` bits) | | | 0 |
 * | `HALT` | | | | | 0 |
 *
 * Hypercall registers are signed safe integers (Xen's register model: an upper-half address
 * is negative), as `HypercallPort.setArg` of `@pvkit/hypercall` takes them.
 */
export const ExitOp = {
  /** An `IN` from an I/O port. */
  PIO_READ: 1,
  /** An `OUT` to an I/O port. */
  PIO_WRITE: 2,
  /** A load from a device register window (MMIO). */
  MMIO_READ: 3,
  /** A store to a device register window (MMIO). */
  MMIO_WRITE: 4,
  /** A hypercall (`SYSCALL`/`VMCALL` through Xen's hypercall page, reference §1.2). */
  HYPERCALL: 5,
  /** `MOV` to CR3, intercepted (shadow paging). */
  CR3_LOAD: 6,
  /** `INVLPG`, intercepted (shadow paging). */
  INVLPG: 7,
  /** A full TLB flush (CR3 reload), intercepted (shadow paging). */
  TLB_FLUSH: 8,
  /** A guest store to a page-table frame the host write-protects (shadow paging): trapped. */
  PTE_WRITE: 9,
  /** A page fault the hypervisor sees first (a shadow #PF intercept, a PV #PF bounce). */
  PAGE_FAULT: 10,
  /** `HLT`: the vCPU idles until an interrupt. */
  HALT: 11,
} as const;

/** One of the {@link ExitOp} values. */
export type ExitOpCode = (typeof ExitOp)[keyof typeof ExitOp];

/** Size of per-op counter arrays (op codes are 1…{@link EXIT_OP_COUNT} − 1; 0 is unused). */
export const EXIT_OP_COUNT = 12;

/** Names of the op codes, indexed by code (`EXIT_OP_NAMES[ExitOp.HYPERCALL] === "hypercall"`). */
export const EXIT_OP_NAMES: readonly string[] = [
  "invalid",
  "pio_read",
  "pio_write",
  "mmio_read",
  "mmio_write",
  "hypercall",
  "cr3_load",
  "invlpg",
  "tlb_flush",
  "pte_write",
  "page_fault",
  "halt",
];

/**
 * Names an op code for messages.
 *
 * @param op - an op code (any number)
 * @returns its name, or `op#<n>` for a code outside the table
 */
export function exitOpName(op: number): string {
  return Number.isInteger(op) && op > 0 && op < EXIT_OP_COUNT ? EXIT_OP_NAMES[op]! : `op#${op}`;
}

/** Result of an exit with an unknown op code (`-ENOSYS`, Xen errno 38). */
export const EXIT_ENOSYS = -38;
/** Result of an exit whose arguments are out of range (`-EINVAL`, Xen errno 22). */
export const EXIT_EINVAL = -22;

/**
 * Interrupt lines: bit numbers of the pending bitmap the host raises and the guest takes.
 * With the emulated interrupt controller (`irq: "pic"`) each device has its line; with
 * event channels (`irq: "evtchn"`) every source is an event-channel port and only
 * {@link IrqLineNo.EVTCHN} (Xen's `evtchn_upcall_pending`) is ever raised.
 */
export const IrqLineNo = {
  /** The timer (PIT IRQ 0, HPET legacy-replacement IRQ 0, or the LAPIC timer LVT). */
  TIMER: 0,
  /** The NIC. */
  NET: 1,
  /** The disk. */
  BLK: 2,
  /** The event-channel upcall. */
  EVTCHN: 31,
} as const;

/**
 * The execution controls the host chose for the vCPU (the VMCS of VT-x, or the PV ABI):
 * which guest actions exit. The guest kernel never looks at them — an unmodified kernel
 * does not know whether it runs under shadow paging or EPT — only the guest's CPU model
 * does. Serializable except {@link writeProtect}, which the threaded runtime puts in a
 * `SharedArrayBuffer`.
 */
export interface CpuControls {
  /** `MOV` to CR3 exits (shadow paging). */
  readonly cr3LoadExits: boolean;
  /** `INVLPG` and full flushes exit (shadow paging). */
  readonly tlbFlushExits: boolean;
  /** Page faults go through the hypervisor first (shadow #PF intercept; PV, SOSP'03 §3.3). */
  readonly pageFaultExits: boolean;
  /** TLB misses walk two dimensions (EPT/NPT: up to 24 references instead of 4). */
  readonly nestedPaging: boolean;
  /**
   * One byte per guest frame, non-zero where the host write-protects the frame as a page
   * table (shadow paging: a store to it traps); `null` when nothing is write-protected.
   */
  readonly writeProtect: Uint8Array | null;
}

/**
 * The guest's CPU: the only way the guest kernel reaches the host. An in-process
 * implementation calls the host's `exit()` directly; a threaded one makes a synchronous
 * round trip through a trap channel. Guest memory itself is shared and needs no exit.
 */
export interface Cpu {
  /**
   * One exit: hands the record to the host and returns its result. Never throws for a
   * rejected record (the host answers {@link EXIT_EINVAL} / {@link EXIT_ENOSYS}); may
   * throw a runtime error that stops the guest (a budget, a watchdog).
   */
  exit(op: number, a0: number, a1: number, a2: number, a3: number, a4: number, a5: number): number;
  /** The pending interrupt lines ({@link IrqLineNo} bits), without taking them. */
  pendingInterrupts(): number;
  /**
   * Takes (clears and returns) the pending lines: the interrupts the host injected on VM
   * entry. Each line is then in service until the guest's EOI (emulated controller).
   */
  takeInterrupts(): number;
  /**
   * Idles after `HLT` / `SCHEDOP_block` until a line is pending (the vCPU is descheduled;
   * not an exit of its own). Asynchronous, because in-process the devices' back-ends and
   * the timers run on the same event loop.
   */
  waitForInterrupt(): Promise<void>;
  /** `RDTSC` (no exit: TSC offsetting under VT-x, a stable TSC for PV). */
  rdtsc(): number;
  /** The execution controls (see {@link CpuControls}). */
  readonly controls: CpuControls;
}
