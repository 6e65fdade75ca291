/**
 * The Xen PV ABI as numbers: hypercall numbers, sub-commands, flags, page-table entry bits,
 * page types and the byte layout of every structure a guest passes by pointer. Every group
 * cites the Xen public header (or the hypervisor source file) it is taken from, as listed in
 * the reference `xen-pv.md` (xen-project/xen at c447b7308b).
 *
 * Register model: a hypercall argument is a JavaScript number holding the 64-bit register
 * value interpreted as a two's-complement signed integer. Upper-half (kernel) virtual
 * addresses such as `0xffff8000_00000000` are therefore negative numbers (`-2**47`). A
 * register value that is not a safe integer cannot be represented and is refused.
 *
 * @module
 */

/** Bytes in a page (x86 4 KiB pages; `XENVER_pagesize`). */
export const PAGE_SIZE = 4096;
/** log2({@link PAGE_SIZE}). */
export const PAGE_SHIFT = 12;
/** Entries in one page table of any level (x86-64: 512 × 8 bytes). */
export const PT_ENTRIES = 512;
/** Bytes in one page-table entry (`sizeof(l1_pgentry_t)` on x86-64). */
export const PTE_SIZE = 8;

/**
 * Hypercall numbers (xen/include/public/xen.h, `__HYPERVISOR_*`; reference §1.1).
 * Keys keep Xen's spelling without the `__HYPERVISOR_` prefix.
 */
export const Hypercall = {
  set_trap_table: 0,
  mmu_update: 1,
  set_gdt: 2,
  stack_switch: 3,
  set_callbacks: 4,
  fpu_taskswitch: 5,
  sched_op_compat: 6,
  platform_op: 7,
  set_debugreg: 8,
  get_debugreg: 9,
  update_descriptor: 10,
  memory_op: 12,
  multicall: 13,
  update_va_mapping: 14,
  set_timer_op: 15,
  event_channel_op_compat: 16,
  xen_version: 17,
  console_io: 18,
  physdev_op_compat: 19,
  grant_table_op: 20,
  vm_assist: 21,
  update_va_mapping_otherdomain: 22,
  iret: 23,
  vcpu_op: 24,
  set_segment_base: 25,
  mmuext_op: 26,
  xsm_op: 27,
  nmi_op: 28,
  sched_op: 29,
  callback_op: 30,
  xenoprof_op: 31,
  event_channel_op: 32,
  physdev_op: 33,
  hvm_op: 34,
  sysctl: 35,
  domctl: 36,
  kexec_op: 37,
  tmem_op: 38,
  argo_op: 39,
  xenpmu_op: 40,
  dm_op: 41,
  hypfs_op: 42,
} as const;

/** Number of hypercall slots counted per operation (`arch_7` is 55). */
export const NR_HYPERCALLS = 64;

/** Size of one hypercall-page stub: `call hypercall_page + index*32` (reference §1.2). */
export const HYPERCALL_STUB_SIZE = 32;

/** Domain ids with special meaning (xen/include/public/xen.h, `DOMID_*`; reference §2.1). */
export const DOMID_FIRST_RESERVED = 0x7ff0;
/** The calling domain. */
export const DOMID_SELF = 0x7ff0;
/** I/O memory owner. */
export const DOMID_IO = 0x7ff1;
/** Xen itself (owner of hypervisor frames). */
export const DOMID_XEN = 0x7ff2;

/** `mmu_update` sub-commands in `ptr[2:0]` (xen.h `MMU_*`; reference §2.1). */
export const MMU_NORMAL_PT_UPDATE = 0;
/** Update the machine-to-phys entry of the frame at `ptr` (val = gpfn). */
export const MMU_MACHPHYS_UPDATE = 1;
/** `*ptr = val | (*ptr & (A|D))`. */
export const MMU_PT_UPDATE_PRESERVE_AD = 2;
/** Like normal, val not translated through the foreign domain's p2m. */
export const MMU_PT_UPDATE_NO_TRANSLATE = 3;
/** Continuation marker in `count` (`MMU_UPDATE_PREEMPTED = ~(~0U>>1)`; reference §1.4). */
export const MMU_UPDATE_PREEMPTED = 0x8000_0000;

/** `struct mmu_update { uint64_t ptr; uint64_t val; }` (xen.h): 16 bytes. */
export const MmuUpdateLayout = { size: 16, ptr: 0, val: 8 } as const;

/** `mmuext_op` commands (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_PIN_L1_TABLE = 0;
/** `MMUEXT_PIN_L2_TABLE`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_PIN_L2_TABLE = 1;
/** `MMUEXT_PIN_L3_TABLE`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_PIN_L3_TABLE = 2;
/** `MMUEXT_PIN_L4_TABLE`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_PIN_L4_TABLE = 3;
/** `MMUEXT_UNPIN_TABLE`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_UNPIN_TABLE = 4;
/** `MMUEXT_NEW_BASEPTR`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_NEW_BASEPTR = 5;
/** `MMUEXT_TLB_FLUSH_LOCAL`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_TLB_FLUSH_LOCAL = 6;
/** `MMUEXT_INVLPG_LOCAL`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_INVLPG_LOCAL = 7;
/** `MMUEXT_TLB_FLUSH_MULTI`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_TLB_FLUSH_MULTI = 8;
/** `MMUEXT_INVLPG_MULTI`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_INVLPG_MULTI = 9;
/** `MMUEXT_TLB_FLUSH_ALL`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_TLB_FLUSH_ALL = 10;
/** `MMUEXT_INVLPG_ALL`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_INVLPG_ALL = 11;
/** `MMUEXT_FLUSH_CACHE`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_FLUSH_CACHE = 12;
/** `MMUEXT_SET_LDT`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_SET_LDT = 13;
/** `MMUEXT_NEW_USER_BASEPTR`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_NEW_USER_BASEPTR = 15;
/** `MMUEXT_CLEAR_PAGE`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_CLEAR_PAGE = 16;
/** `MMUEXT_COPY_PAGE`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_COPY_PAGE = 17;
/** `MMUEXT_FLUSH_CACHE_GLOBAL`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_FLUSH_CACHE_GLOBAL = 18;
/** `MMUEXT_MARK_SUPER`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_MARK_SUPER = 19;
/** `MMUEXT_UNMARK_SUPER`: mmuext_op command (xen.h `MMUEXT_*`; reference §2.2). */
export const MMUEXT_UNMARK_SUPER = 20;

/**
 * `struct mmuext_op { unsigned int cmd; union {mfn; linear_addr} arg1;
 * union {nr_ents; vcpumask; src_mfn} arg2; }` (xen.h, x86-64 alignment): 24 bytes.
 */
export const MmuextOpLayout = { size: 24, cmd: 0, arg1: 8, arg2: 16 } as const;

/** `update_va_mapping` flags (xen.h `UVMF_*`; reference §2.3). */
export const UVMF_NONE = 0;
/** `UVMF_TLB_FLUSH`: `update_va_mapping` flag (xen.h `UVMF_*`; reference §2.3). */
export const UVMF_TLB_FLUSH = 1;
/** `UVMF_INVLPG`: `update_va_mapping` flag (xen.h `UVMF_*`; reference §2.3). */
export const UVMF_INVLPG = 2;
/** `UVMF_FLUSHTYPE_MASK`: `update_va_mapping` flag (xen.h `UVMF_*`; reference §2.3). */
export const UVMF_FLUSHTYPE_MASK = 3;
/** `UVMF_MULTI`: `update_va_mapping` flag (xen.h `UVMF_*`; reference §2.3). */
export const UVMF_MULTI = 0;
/** `UVMF_LOCAL`: `update_va_mapping` flag (xen.h `UVMF_*`; reference §2.3). */
export const UVMF_LOCAL = 0;
/** `UVMF_ALL`: `update_va_mapping` flag (xen.h `UVMF_*`; reference §2.3). */
export const UVMF_ALL = 1 << 2;

/**
 * Page-table entry bits, low 32-bit word (x86 SDM; Xen's `_PAGE_*` in
 * xen/arch/x86/include/asm/x86_64/page.h; reference §2.4).
 */
export const PTE_P = 0x001;
/** `PTE_RW`: Page-table entry bit (x86 SDM; Xen `_PAGE_*`). */
export const PTE_RW = 0x002;
/** `PTE_US`: Page-table entry bit (x86 SDM; Xen `_PAGE_*`). */
export const PTE_US = 0x004;
/** `PTE_PWT`: Page-table entry bit (x86 SDM; Xen `_PAGE_*`). */
export const PTE_PWT = 0x008;
/** `PTE_PCD`: Page-table entry bit (x86 SDM; Xen `_PAGE_*`). */
export const PTE_PCD = 0x010;
/** `PTE_A`: Page-table entry bit (x86 SDM; Xen `_PAGE_*`). */
export const PTE_A = 0x020;
/** `PTE_D`: Page-table entry bit (x86 SDM; Xen `_PAGE_*`). */
export const PTE_D = 0x040;
/** PS at L2/L3 (superpage); PAT at L1. */
export const PTE_PS = 0x080;
/** PAT bit of an L1 entry (same bit as {@link PTE_PS}). */
export const PTE_PAT = 0x080;
/** `PTE_G`: Page-table entry bit (x86 SDM; Xen `_PAGE_*`). */
export const PTE_G = 0x100;
/** Software-available bits 9..11. */
export const PTE_AVAIL = 0xe00;
/** Address bits 12..31 of the low word. */
export const PTE_ADDR_LO = 0xffff_f000;
/** High word: address bits 32..51. */
export const PTE_HI_ADDR = 0x000f_ffff;
/** High word: software-available bits 52..62 (`_PAGE_AVAIL_HIGH`). */
export const PTE_HI_AVAIL = 0x7ff0_0000;
/** High word: NX, bit 63. */
export const PTE_HI_NX = 0x8000_0000;

/**
 * `base_disallow_mask = ~(P|RW|US|A|D|AVAIL|AVAIL_HIGH|NX)` restricted to the flag bits of
 * the low word (mm.c; reference §2.4): PWT, PCD, PS and G are refused above L1.
 */
export const BASE_DISALLOW_LO = PTE_PWT | PTE_PCD | PTE_PS | PTE_G;
/**
 * `L1_DISALLOW_MASK = base & ~GLOBAL`, and for a PV domain without I/O capabilities the
 * cache attributes stay refused (`l1_disallow_mask(d)`, mm.c): PWT, PCD, PAT.
 */
export const L1_DISALLOW_LO = PTE_PWT | PTE_PCD | PTE_PAT;
/**
 * Bits whose change skips revalidation: `FASTPATH_FLAG_WHITELIST = NX | AVAIL_HIGH | AVAIL |
 * GLOBAL | DIRTY | ACCESSED | USER` (XSA-182 fix f009300d7e; reference §2.4). Low word part.
 */
export const FASTPATH_WHITELIST_LO = PTE_AVAIL | PTE_G | PTE_D | PTE_A | PTE_US;
/** High-word part of the fast-path whitelist. */
export const FASTPATH_WHITELIST_HI = PTE_HI_NX | PTE_HI_AVAIL;

/** Page types (`PGT_*` in xen/arch/x86/include/asm/mm.h; reference §2.4). */
export const PGT_none = 0;
/** `PGT_l1_page_table`: Page type (`PGT_*`, xen/arch/x86/include/asm/mm.h). */
export const PGT_l1_page_table = 1;
/** `PGT_l2_page_table`: Page type (`PGT_*`, xen/arch/x86/include/asm/mm.h). */
export const PGT_l2_page_table = 2;
/** `PGT_l3_page_table`: Page type (`PGT_*`, xen/arch/x86/include/asm/mm.h). */
export const PGT_l3_page_table = 3;
/** `PGT_l4_page_table`: Page type (`PGT_*`, xen/arch/x86/include/asm/mm.h). */
export const PGT_l4_page_table = 4;
/** `PGT_seg_desc_page`: Page type (`PGT_*`, xen/arch/x86/include/asm/mm.h). */
export const PGT_seg_desc_page = 5;
/** `PGT_shared_page`: Page type (`PGT_*`, xen/arch/x86/include/asm/mm.h). */
export const PGT_shared_page = 6;
/** `PGT_writable_page`: Page type (`PGT_*`, xen/arch/x86/include/asm/mm.h). */
export const PGT_writable_page = 7;

/** First and last L4 slot reserved for Xen in a 64-bit PV L4 (`ROOT_PAGETABLE_*_XEN_SLOT`). */
export const ROOT_PAGETABLE_FIRST_XEN_SLOT = 256;
/** Last Xen-reserved L4 slot. */
export const ROOT_PAGETABLE_LAST_XEN_SLOT = 271;
/** L4 slot 258: Xen's self linear mapping (`LINEAR_PT_VIRT_START`, init_xen_l4_slots in mm.c). */
export const LINEAR_PT_XEN_SLOT = 258;

/** `vcpu_op` commands (xen/include/public/vcpu.h; reference §4.1). */
export const VCPUOP_initialise = 0;
/** `VCPUOP_up`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_up = 1;
/** `VCPUOP_down`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_down = 2;
/** `VCPUOP_is_up`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_is_up = 3;
/** `VCPUOP_get_runstate_info`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_get_runstate_info = 4;
/** `VCPUOP_register_runstate_memory_area`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_register_runstate_memory_area = 5;
/** `VCPUOP_set_periodic_timer`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_set_periodic_timer = 6;
/** `VCPUOP_stop_periodic_timer`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_stop_periodic_timer = 7;
/** `VCPUOP_set_singleshot_timer`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_set_singleshot_timer = 8;
/** `VCPUOP_stop_singleshot_timer`: `vcpu_op` command (xen/include/public/vcpu.h). */
export const VCPUOP_stop_singleshot_timer = 9;
/** Flag of `vcpu_set_singleshot_timer`: ignored since commit 19c6cbd909 (2023). */
export const VCPU_SSHOTTMR_future = 1;
/** `struct vcpu_set_periodic_timer { uint64_t period_ns; }`. */
export const VcpuSetPeriodicTimerLayout = { size: 8, period_ns: 0 } as const;
/** `struct vcpu_set_singleshot_timer { uint64_t timeout_abs_ns; uint32_t flags; }`. */
export const VcpuSetSingleshotTimerLayout = { size: 16, timeout_abs_ns: 0, flags: 8 } as const;
/** Smallest periodic-timer period Xen accepts: 1 ms (xen/common/domain.c). */
export const PERIODIC_TIMER_MIN_NS = 1_000_000;
/** `set_timer_op` offsets this far ahead (2^50 ns, ~13 days) are treated as a guest bug. */
export const SET_TIMER_OP_MAX_AHEAD_NS = 2 ** 50;
/** ...and replaced by NOW() + 100 ms (`do_set_timer_op`, xen/common/sched/core.c). */
export const SET_TIMER_OP_FALLBACK_NS = 100_000_000;

/** `sched_op` commands (xen/include/public/sched.h). */
export const SCHEDOP_yield = 0;
/** `SCHEDOP_block`: `sched_op` command (xen/include/public/sched.h). */
export const SCHEDOP_block = 1;
/** `SCHEDOP_shutdown`: `sched_op` command (xen/include/public/sched.h). */
export const SCHEDOP_shutdown = 2;
/** `SCHEDOP_poll`: `sched_op` command (xen/include/public/sched.h). */
export const SCHEDOP_poll = 3;
/** `struct sched_shutdown { unsigned int reason; }`. */
export const SHUTDOWN_poweroff = 0;
/** `SHUTDOWN_reboot`: `SCHEDOP_shutdown` reason (xen/include/public/sched.h). */
export const SHUTDOWN_reboot = 1;
/** `SHUTDOWN_suspend`: `SCHEDOP_shutdown` reason (xen/include/public/sched.h). */
export const SHUTDOWN_suspend = 2;
/** `SHUTDOWN_crash`: `SCHEDOP_shutdown` reason (xen/include/public/sched.h). */
export const SHUTDOWN_crash = 3;
/** `SHUTDOWN_watchdog`: `SCHEDOP_shutdown` reason (xen/include/public/sched.h). */
export const SHUTDOWN_watchdog = 4;

/** `console_io` commands (xen.h `CONSOLEIO_*`). */
export const CONSOLEIO_write = 0;
/** `CONSOLEIO_read`: `console_io` command (xen.h). */
export const CONSOLEIO_read = 1;

/** `xen_version` commands (xen/include/public/version.h). */
export const XENVER_version = 0;
/** `XENVER_extraversion`: `xen_version` command (xen/include/public/version.h). */
export const XENVER_extraversion = 1;
/** `XENVER_compile_info`: `xen_version` command (xen/include/public/version.h). */
export const XENVER_compile_info = 2;
/** `XENVER_capabilities`: `xen_version` command (xen/include/public/version.h). */
export const XENVER_capabilities = 3;
/** `XENVER_changeset`: `xen_version` command (xen/include/public/version.h). */
export const XENVER_changeset = 4;
/** `XENVER_platform_parameters`: `xen_version` command (xen/include/public/version.h). */
export const XENVER_platform_parameters = 5;
/** `XENVER_get_features`: `xen_version` command (xen/include/public/version.h). */
export const XENVER_get_features = 6;
/** `XENVER_pagesize`: `xen_version` command (xen/include/public/version.h). */
export const XENVER_pagesize = 7;
/** `XEN_EXTRAVERSION_LEN`, `XEN_CAPABILITIES_INFO_LEN`, `XEN_CHANGESET_INFO_LEN` (version.h). */
export const XEN_EXTRAVERSION_LEN = 16;
/** `XEN_CAPABILITIES_INFO_LEN`: Length / limit from xen/include/public/version.h. */
export const XEN_CAPABILITIES_INFO_LEN = 1024;
/** `XEN_CHANGESET_INFO_LEN`: Length / limit from xen/include/public/version.h. */
export const XEN_CHANGESET_INFO_LEN = 64;
/** `struct xen_feature_info { unsigned int submap_idx; uint32_t submap; }`. */
export const XenFeatureInfoLayout = { size: 8, submap_idx: 0, submap: 4 } as const;
/** `XENFEAT_writable_page_tables` (features.h): the ptwr trap-and-emulate path. */
export const XENFEAT_writable_page_tables = 0;

/** Event-channel operations (xen/include/public/event_channel.h `EVTCHNOP_*`; reference §5.2). */
export const EVTCHNOP_bind_interdomain = 0;
/** `EVTCHNOP_bind_virq`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_bind_virq = 1;
/** `EVTCHNOP_bind_pirq`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_bind_pirq = 2;
/** `EVTCHNOP_close`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_close = 3;
/** `EVTCHNOP_send`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_send = 4;
/** `EVTCHNOP_status`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_status = 5;
/** `EVTCHNOP_alloc_unbound`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_alloc_unbound = 6;
/** `EVTCHNOP_bind_ipi`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_bind_ipi = 7;
/** `EVTCHNOP_bind_vcpu`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_bind_vcpu = 8;
/** `EVTCHNOP_unmask`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_unmask = 9;
/** `EVTCHNOP_reset`: Event-channel operation (xen/include/public/event_channel.h). */
export const EVTCHNOP_reset = 10;
/** `struct evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; }`. */
export const EvtchnAllocUnboundLayout = { size: 8, dom: 0, remote_dom: 2, port: 4 } as const;
/** `struct evtchn_bind_interdomain { domid_t remote_dom; port remote_port; port local_port; }`. */
export const EvtchnBindInterdomainLayout = {
  size: 12,
  remote_dom: 0,
  remote_port: 4,
  local_port: 8,
} as const;
/** `struct evtchn_bind_virq { uint32_t virq, vcpu; evtchn_port_t port; }`. */
export const EvtchnBindVirqLayout = { size: 12, virq: 0, vcpu: 4, port: 8 } as const;
/** `struct evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port; }`. */
export const EvtchnBindIpiLayout = { size: 8, vcpu: 0, port: 4 } as const;
/** `struct evtchn_send / evtchn_close / evtchn_unmask { evtchn_port_t port; }`. */
export const EvtchnPortLayout = { size: 4, port: 0 } as const;

/** Virtual IRQs (xen.h `VIRQ_*`). Per-vCPU: TIMER, DEBUG, XENOPROF, XENPMU. */
export const VIRQ_TIMER = 0;
/** `VIRQ_DEBUG`: Virtual IRQ (xen.h `VIRQ_*`). */
export const VIRQ_DEBUG = 1;
/** `VIRQ_CONSOLE`: Virtual IRQ (xen.h `VIRQ_*`). */
export const VIRQ_CONSOLE = 2;
/** `VIRQ_DOM_EXC`: Virtual IRQ (xen.h `VIRQ_*`). */
export const VIRQ_DOM_EXC = 3;
/** `VIRQ_XENOPROF`: Virtual IRQ (xen.h `VIRQ_*`). */
export const VIRQ_XENOPROF = 7;
/** `VIRQ_XENPMU`: Virtual IRQ (xen.h `VIRQ_*`). */
export const VIRQ_XENPMU = 13;
/** `NR_VIRQS`. */
export const NR_VIRQS = 24;

/** 2-level event-channel ABI capacity with 64-bit words: 64 × 64 = 4096 ports (reference §5.2). */
export const EVTCHN_2L_NR_CHANNELS = 4096;
/** `XEN_LEGACY_MAX_VCPUS` on x86: number of `vcpu_info` slots in `shared_info`. */
export const XEN_LEGACY_MAX_VCPUS = 32;

/**
 * `struct vcpu_time_info` (xen.h; reference §4.1): 32 bytes. Also KVM's
 * `pvclock_vcpu_time_info` (pvclock-abi.h).
 */
export const VcpuTimeInfoLayout = {
  size: 32,
  version: 0,
  pad0: 4,
  tsc_timestamp: 8,
  system_time: 16,
  tsc_to_system_mul: 24,
  tsc_shift: 28,
  flags: 29,
} as const;
/** `XEN_PVCLOCK_TSC_STABLE_BIT`. */
export const XEN_PVCLOCK_TSC_STABLE_BIT = 1 << 0;
/** `XEN_PVCLOCK_GUEST_STOPPED`. */
export const XEN_PVCLOCK_GUEST_STOPPED = 1 << 1;

/**
 * `struct vcpu_info` on x86-64 (xen.h; reference §5.2): 64 bytes —
 * `evtchn_upcall_pending`, `evtchn_upcall_mask`, `evtchn_pending_sel`, `arch` (cr2, pad),
 * `time`.
 */
export const VcpuInfoLayout = {
  size: 64,
  evtchn_upcall_pending: 0,
  evtchn_upcall_mask: 1,
  evtchn_pending_sel: 8,
  arch_cr2: 16,
  time: 32,
} as const;

/**
 * `struct shared_info` on x86-64 (xen.h): `vcpu_info[32]`, `evtchn_pending[64]`,
 * `evtchn_mask[64]` (64-bit words), the wallclock (`wc_version, wc_sec, wc_nsec,
 * wc_sec_hi`), then `arch_shared_info`.
 */
export const SharedInfoLayout = {
  vcpu_info: 0,
  evtchn_pending: XEN_LEGACY_MAX_VCPUS * 64,
  evtchn_mask: XEN_LEGACY_MAX_VCPUS * 64 + 512,
  wc_version: XEN_LEGACY_MAX_VCPUS * 64 + 1024,
  wc_sec: XEN_LEGACY_MAX_VCPUS * 64 + 1028,
  wc_nsec: XEN_LEGACY_MAX_VCPUS * 64 + 1032,
  wc_sec_hi: XEN_LEGACY_MAX_VCPUS * 64 + 1036,
  arch_max_pfn: XEN_LEGACY_MAX_VCPUS * 64 + 1040,
} as const;

/**
 * `struct multicall_entry { xen_ulong_t op, result; xen_ulong_t args[6]; }` (xen.h;
 * reference §5.1): 64 bytes on x86-64. Only 5 arguments are used.
 */
export const MulticallEntryLayout = { size: 64, op: 0, result: 8, args: 16 } as const;

/**
 * The frame a guest hands `HYPERVISOR_iret` on its stack (`struct iret_context`,
 * xen/include/public/arch-x86/xen-x86_64.h): rax, r11, rcx, flags, rip, cs, rflags, rsp, ss.
 */
export const IretContextLayout = {
  size: 72,
  rax: 0,
  r11: 8,
  rcx: 16,
  flags: 24,
  rip: 32,
  cs: 40,
  rflags: 48,
  rsp: 56,
  ss: 64,
} as const;

/** Version this model reports through `XENVER_version`: 4.20 (`major << 16 | minor`). */
export const XEN_VERSION_MAJOR = 4;
/** Minor version reported. */
export const XEN_VERSION_MINOR = 20;
