/**
 * `@pvkit/guest-kernel-pv`: a small guest kernel that runs the same code under full
 * emulation, hardware assist with PV I/O, and full paravirtualization — Linux-style
 * `pv_ops` chosen at boot — with every privileged act an exit counted by the host.
 *
 * ```ts
 * import { bootInProcess } from "@pvkit/guest-kernel-pv";
 * const vm = await bootInProcess({ config: "full-pv" });
 * const r = await vm.run("fork-exit", { iterations: 10 });
 * console.log(r.exits / r.ops, r.exitsByKind);
 * ```
 *
 * @packageDocumentation
 * @module @pvkit/guest-kernel-pv
 */

export {
  type BootDevice,
  type BootDevices,
  type BootInfo,
  type GuestMemoryLayout,
  type GuestMemoryViews,
  guestMemoryViews,
  PAGE_BYTES,
} from "./boot.js";
export {
  type BlkMode,
  CONFIG_NAMES,
  CONFIG_PRESETS,
  type ConfigName,
  type IrqMode,
  type KernelConfig,
  type MmuMode,
  type NetMode,
  type ResolvedConfig,
  resolveConfig,
  type TimeMode,
} from "./config.js";
export {
  GuestBudgetExceeded,
  GuestKernelError,
  GuestKernelErrorCode,
  type GuestLocation,
  GuestPanic,
  SIGABRT_STATUS,
  SIGSEGV_STATUS,
} from "./errors.js";
export {
  type Cpu,
  type CpuControls,
  EXIT_EINVAL,
  EXIT_ENOSYS,
  EXIT_OP_COUNT,
  EXIT_OP_NAMES,
  ExitOp,
  type ExitOpCode,
  exitOpName,
  IrqLineNo,
} from "./exit.js";
export { CpuBus } from "./guest/arch/cpu-bus.js";
export {
  type FrameToGfn,
  faultAccess,
  PagingUnit,
  WALK_REFS_NATIVE,
  WALK_REFS_NESTED,
} from "./guest/arch/paging.js";
export { DEFAULT_MMU_BATCH, type HypercallFailure, XenHypercalls } from "./guest/arch/xen.js";
export { type BlockDevice, type BlockDone, openBlockDevice } from "./guest/drivers/blk.js";
export { type NetDevice, openNetDevice } from "./guest/drivers/net.js";
export { PIPE_BYTES, Pipe, PipeEnd } from "./guest/ipc/pipe.js";
export {
  createIrqOps,
  EvtchnIrqOps,
  type IrqHandler,
  type IrqOps,
  PicIrqOps,
} from "./guest/irq/irq-ops.js";
export {
  BLK_MAX_BYTES,
  DEFAULT_QUANTUM_NS,
  type GuestMeter,
  type GuestRunResult,
  Kernel,
  type KernelOptions,
  SIGKILL_STATUS,
  TIMER_FUZZ_NS,
} from "./guest/kernel.js";
export { FrameTable, FrameUse } from "./guest/mm/frames.js";
export { type MmuOps, NativeMmuOps, PvMmuOps } from "./guest/mm/mmu-ops.js";
export {
  AddressSpace,
  type ExecImage,
  type FaultResult,
  type ImageLayout,
  imageLayout,
  MMAP_BASE,
  Mm,
  type MmStats,
  OutOfMemory,
  STACK_TOP,
  TLB_SINGLE_PAGE_FLUSH_CEILING,
  USER_TEXT_BASE,
  type Vma,
} from "./guest/mm/vm.js";
export { NetStack, type NetStackStats, UDP_MAX_PAYLOAD } from "./guest/net/stack.js";
export { KernelBug, panic } from "./guest/panic.js";
export { type Block, type KernelPath, Task, TaskState, WaitQueue } from "./guest/sched/task.js";
export { createTimeOps, type TimeOps } from "./guest/time/time-ops.js";
export {
  type ExecEntry,
  nonBlocking,
  type Program,
  type ReportValue,
  type SyscallRequest,
  User,
  type UserKernel,
} from "./guest/user.js";
export {
  checkWorkload,
  findWorkload,
  type ParamSpec,
  SINK_PORT,
  testImage,
  WORKLOAD_NAMES,
  WORKLOADS,
  type Workload,
  type WorkloadParams,
} from "./guest/workloads/index.js";
export {
  SHARED_CLOCK_BYTES,
  SharedClock,
  type SharedClockMode,
  WarpClock,
} from "./host/clock.js";
export {
  BLK_MMIO_BASE,
  DEFAULT_DISK_BYTES,
  DEFAULT_RAM_BYTES,
  GUEST_IP,
  HOST_IP,
  type HostCounters,
  HostMachine,
  type HostMachineOptions,
  NET_MMIO_BASE,
  RTL8139_MMIO_BASE,
} from "./host/machine.js";
export { PIC_EOI, PIC_MASTER_CMD, PIC_SPECIFIC_EOI, Pic8259 } from "./host/pic.js";
export { WriteProtectMirror } from "./host/write-protect.js";
export { bootKernel, kernelOptionsOf } from "./runtime/boot-kernel.js";
export { IDLE_WATCHDOG_MS, InProcessCpu } from "./runtime/in-process.js";
export {
  type BootOptions,
  bootInProcess,
  checkRun,
  createHost,
  type ExitsByKind,
  type GuestKernelVm,
  type GuestVm,
  makeClock,
  measureRun,
  type RunTotals,
  type RuntimeKind,
  resultFromGuest,
  type WorkloadResult,
} from "./runtime/vm.js";
