/**
 * Numbers of the Realtek RTL8139 (normal, non-C+ mode), named as QEMU's
 * `hw/net/rtl8139.c` and Linux's `drivers/net/ethernet/realtek/8139too.c` spell them
 * (prefixed `RTL_`). Sources, as collected in `shared/reference/rtl8139.md`: [QEMU] for the
 * device model, [8139too] for what the Linux driver writes and expects. Values that only
 * the RTL8139C datasheet gives are marked "datasheet".
 *
 * @module
 */

// ── PCI identity ([QEMU], [8139too] `rtl8139_init_one`) ────────────────────────────

/** PCI vendor id of Realtek. */
export const RTL_PCI_VENDOR_ID = 0x10ec;
/** PCI device id of the RTL8139. */
export const RTL_PCI_DEVICE_ID = 0x8139;
/**
 * PCI revision of a plain RTL8139 (`RTL8139_PCI_REVID_8139` [QEMU]): 8139too refuses
 * revision ≥ 0x20 ("enhanced 8139C+ chip, use 8139cp") [8139too].
 */
export const RTL_PCI_REVID_8139 = 0x10;
/** PCI revision from which a chip is an 8139C+ (`RTL8139_PCI_REVID_8139CPLUS` [QEMU]). */
export const RTL_PCI_REVID_8139CPLUS = 0x20;
/** PCI class code: network controller, Ethernet. */
export const RTL_PCI_CLASS_ETHERNET = 0x020000;
/** Bytes of the register file behind BAR0 (I/O) and BAR1 (MMIO) [QEMU]. */
export const RTL_REGS_SIZE = 0x100;

// ── Register offsets ([QEMU] enum `RTL8139_registers`, [8139too] `enum RTL8139_registers`) ──

/** IDR0–5: the station (MAC) address; 0x06–0x07 are reserved and read 0 [QEMU `MAC0`]. */
export const RTL_IDR0 = 0x00;
/** MAR0–7: the 64-bit multicast hash filter [QEMU `MAR0`]. */
export const RTL_MAR0 = 0x08;
/** TSD0: transmit status of descriptor 0 (TSD1–3 follow every 4 bytes) [QEMU `TxStatus0`]. */
export const RTL_TSD0 = 0x10;
/** TSAD0: transmit start address of descriptor 0 (TSAD1–3 follow) [QEMU `TxAddr0`]. */
export const RTL_TSAD0 = 0x20;
/** RBSTART: receive ring physical address [QEMU `RxBuf`]. */
export const RTL_RBSTART = 0x30;
/** ERBCR: early RX byte count (datasheet; reads 0 here, no early RX) [QEMU default branch]. */
export const RTL_ERBCR = 0x34;
/** ERSR: early RX status (datasheet; reads 0). */
export const RTL_ERSR = 0x36;
/** CR: command register [QEMU `ChipCmd`]. */
export const RTL_CR = 0x37;
/** CAPR: current address of packet read, "off by 16" [QEMU `RxBufPtr`]. */
export const RTL_CAPR = 0x38;
/** CBR: current buffer address (the write pointer), read-only [QEMU `RxBufAddr`]. */
export const RTL_CBR = 0x3a;
/** IMR: interrupt mask [QEMU `IntrMask`]. */
export const RTL_IMR = 0x3c;
/** ISR: interrupt status, write-1-to-clear [QEMU `IntrStatus`]. */
export const RTL_ISR = 0x3e;
/** TCR: transmit configuration [QEMU `TxConfig`]. */
export const RTL_TCR = 0x40;
/** RCR: receive configuration [QEMU `RxConfig`]. */
export const RTL_RCR = 0x44;
/** TCTR: timer count, 33 MHz [QEMU `Timer`]. */
export const RTL_TCTR = 0x48;
/** MPC: missed packet counter (24 bits), any write clears [QEMU `RxMissed`]. */
export const RTL_MPC = 0x4c;
/** 9346CR: EEPROM command and config-write enable [QEMU `Cfg9346`]. */
export const RTL_9346CR = 0x50;
/** CONFIG0 [QEMU `Config0`]. */
export const RTL_CONFIG0 = 0x51;
/** CONFIG1 [QEMU `Config1`]. */
export const RTL_CONFIG1 = 0x52;
/** TimerInt: TCTR value that raises PCSTimeout; 0 disables [8139too `TimerInt`; QEMU "FlashReg"]. */
export const RTL_TIMERINT = 0x54;
/** MSR: media status [QEMU `MediaStatus`]. */
export const RTL_MSR = 0x58;
/** CONFIG3 [QEMU `Config3`]. */
export const RTL_CONFIG3 = 0x59;
/** CONFIG4 [QEMU `Config4`]. */
export const RTL_CONFIG4 = 0x5a;
/** HLTCLK: 'R' runs the clock, 'H' halts it [QEMU `HltClk`]. */
export const RTL_HLTCLK = 0x5b;
/** MULINT: multiple interrupt select (stored only) [QEMU `MultiIntr`]. */
export const RTL_MULINT = 0x5c;
/** RERID: PCI revision id mirror [QEMU `PCIRevisionID`]. */
export const RTL_RERID = 0x5e;
/** TSAD (summary of all four TSD), read-only [QEMU `TxSummary`]. */
export const RTL_TSAD_SUMMARY = 0x60;
/** BMCR: MII basic mode control [QEMU `BasicModeCtrl`]. */
export const RTL_BMCR = 0x62;
/** BMSR: MII basic mode status [QEMU `BasicModeStatus`]. */
export const RTL_BMSR = 0x64;
/** ANAR: auto-negotiation advertisement [QEMU `NWayAdvert`]. */
export const RTL_ANAR = 0x66;
/** ANLPAR: auto-negotiation link partner ability [QEMU `NWayLPAR`]. */
export const RTL_ANLPAR = 0x68;
/** ANER: auto-negotiation expansion [QEMU `NWayExpansion`]. */
export const RTL_ANER = 0x6a;
/** CSCR: configuration and status (link change bit for 8139too) [QEMU `CSCR`]. */
export const RTL_CSCR = 0x74;
/** CONFIG5 [QEMU `Config5`]. */
export const RTL_CONFIG5 = 0xd8;
/** TPPoll: C+ transmit poll (C+ only: ignored in normal mode) [QEMU `TxPoll`]. */
export const RTL_TPPOLL = 0xd9;
/** CPCR: C+ command (C+ only: ignored in normal mode) [QEMU `CpCmd`]. */
export const RTL_CPCR = 0xe0;

/** Number of transmit descriptors (TSD/TSAD pairs) [8139too `NUM_TX_DESC`]. */
export const RTL_NUM_TX_DESC = 4;

// ── CR bits ([QEMU] `ChipCmdBits`) ─────────────────────────────────────────────────

/** CR: software reset; reads back 0 once done (at once here). */
export const RTL_CR_RST = 0x10;
/** CR: receiver enable. */
export const RTL_CR_RE = 0x08;
/** CR: transmitter enable. */
export const RTL_CR_TE = 0x04;
/** CR: receive buffer empty (read-only, computed as CBR == CAPR + 16). */
export const RTL_CR_BUFE = 0x01;

// ── ISR / IMR bits ([QEMU] and [8139too] `IntrStatusBits`) ─────────────────────────

/** ISR: receive OK. */
export const RTL_ISR_ROK = 0x0001;
/** ISR: receive error. */
export const RTL_ISR_RER = 0x0002;
/** ISR: transmit OK. */
export const RTL_ISR_TOK = 0x0004;
/** ISR: transmit error. */
export const RTL_ISR_TER = 0x0008;
/** ISR: receive buffer overflow (RxOverflow). */
export const RTL_ISR_RXOVW = 0x0010;
/** ISR: packet underrun / link change (RxUnderrun). */
export const RTL_ISR_PUN_LINKCHG = 0x0020;
/** ISR: receive FIFO overflow. */
export const RTL_ISR_FOVW = 0x0040;
/** ISR: TCTR reached TimerInt (PCSTimeout). */
export const RTL_ISR_TIMEOUT = 0x4000;
/** ISR: system error (PCIErr); raised here on a DMA master abort. */
export const RTL_ISR_SERR = 0x8000;
/** IMR/ISR: bits that are not writable [QEMU: `0x1e00` unwritable]. */
export const RTL_ISR_UNWRITABLE = 0x1e00;

// ── TSD bits ([QEMU] `TxStatusBits`, [8139too]) ────────────────────────────────────

/** TSD: frame size, bits 12:0 [QEMU `& 0x1fff`]. */
export const RTL_TSD_SIZE_MASK = 0x1fff;
/** TSD: OWN — the chip finished moving the frame to its FIFO (set at reset). */
export const RTL_TSD_OWN = 0x2000;
/** TSD: transmit FIFO underrun. */
export const RTL_TSD_TUN = 0x4000;
/** TSD: transmit OK. */
export const RTL_TSD_TOK = 0x8000;
/** TSD: early TX threshold, bits 21:16 in 32-byte units. */
export const RTL_TSD_ERTXTH_MASK = 0x003f_0000;
/** TSD: collision count, bits 27:24. */
export const RTL_TSD_NCC_MASK = 0x0f00_0000;
/** TSD: out of window collision. */
export const RTL_TSD_OWC = 0x2000_0000;
/** TSD: transmit abort. */
export const RTL_TSD_TABT = 0x4000_0000;
/** TSD: carrier sense lost. */
export const RTL_TSD_CRS = 0x8000_0000;
/** TSD: bits the driver writes (size, OWN, early TX threshold); the rest is status. */
export const RTL_TSD_WRITABLE = RTL_TSD_SIZE_MASK | RTL_TSD_OWN | RTL_TSD_ERTXTH_MASK;
/** Largest frame one descriptor sends (datasheet: 1792 bytes). */
export const RTL_TX_MAX_SIZE = 1792;

// ── TCR bits ([QEMU] `TxConfigBits`, [8139too]) ────────────────────────────────────

/** TCR: clear abort (write-only action). */
export const RTL_TCR_CLRABT = 0x0000_0001;
/** TCR: retry count, bits 7:4. */
export const RTL_TCR_TXRR_MASK = 0x0000_00f0;
/** TCR: max DMA burst, bits 10:8. */
export const RTL_TCR_MXDMA_MASK = 0x0000_0700;
/** TCR: 1 = no CRC appended. */
export const RTL_TCR_CRC = 0x0001_0000;
/** TCR: loopback test, bits 18:17 (both set = loopback). */
export const RTL_TCR_LBK_MASK = 0x0006_0000;
/** TCR: loopback mode value. */
export const RTL_TCR_LBK_LOOPBACK = 0x0006_0000;
/** TCR: interframe gap, bits 25:24 (3 = IFG96). */
export const RTL_TCR_IFG_MASK = 0x0300_0000;
/** TCR: bits the driver may write. */
export const RTL_TCR_WRITABLE =
  RTL_TCR_TXRR_MASK | RTL_TCR_MXDMA_MASK | RTL_TCR_CRC | RTL_TCR_LBK_MASK | RTL_TCR_IFG_MASK;
/**
 * TCR hardware revision bits (30–26, 23, 22): RTL-8139C, `HW_REVID(1,1,1,0,1,0,0)` in
 * [8139too] `rtl_chip_info`.
 */
export const RTL_TCR_HWREV_8139C = 0x7400_0000;
/** TCR: the hardware-revision field mask [8139too `HW_REVID_MASK`]. */
export const RTL_TCR_HWREV_MASK = 0x7cc0_0000;
/** TCR value 8139too writes: IFG96 | MXDMA 6 | TXRR 8 [8139too `rtl8139_tx_config`]. */
export const RTL_TCR_8139TOO = 0x0300_0000 | (6 << 8) | (8 << 4);

// ── RCR bits ([QEMU] `rx_mode_bits`, [8139too]) ────────────────────────────────────

/** RCR: accept all packets with a physical destination (promiscuous). */
export const RTL_RCR_AAP = 0x01;
/** RCR: accept physical match (own MAC). */
export const RTL_RCR_APM = 0x02;
/** RCR: accept multicast (subject to the MAR hash). */
export const RTL_RCR_AM = 0x04;
/** RCR: accept broadcast. */
export const RTL_RCR_AB = 0x08;
/** RCR: accept runt. */
export const RTL_RCR_AR = 0x10;
/** RCR: accept error packets. */
export const RTL_RCR_AER = 0x20;
/** RCR: WRAP — write past the ring end into the pad instead of wrapping (Linux `RxNoWrap`). */
export const RTL_RCR_WRAP = 0x80;
/** RCR: RBLEN shift (bits 12:11): ring = 8 KiB << RBLEN. */
export const RTL_RCR_RBLEN_SHIFT = 11;
/** RCR: RBLEN mask. */
export const RTL_RCR_RBLEN_MASK = 0x1800;
/** RCR: bits the driver may not write [QEMU: unwritable mask 0xf0fc0040]. */
export const RTL_RCR_UNWRITABLE = 0xf0fc_0040;
/** The 8K ring size unit [QEMU `8192 << RBLEN`]. */
export const RTL_RX_RING_UNIT = 8192;
/**
 * Bytes past the end of a < 64 KiB ring the chip may write in WRAP mode ("assume 1.5k
 * more buffer space" [QEMU]); Linux allocates 16 + 2048 [8139too `RX_BUF_TOT_LEN`].
 */
export const RTL_RX_WRAP_PAD = 1536;
/** What 8139too allocates past the ring end (16 + 2048) [8139too]. */
export const RTL_RX_DRIVER_PAD = 16 + 2048;
/** The "off by 16" of CAPR [QEMU `RxBufPtr` write/read]. */
export const RTL_CAPR_BIAS = 0x10;
/** Bytes of the per-packet header in the ring (status, length) [QEMU `rtl8139_do_receive`]. */
export const RTL_RX_HEADER_SIZE = 4;
/** Bytes of the CRC stored after each frame. */
export const RTL_RX_CRC_SIZE = 4;

// ── RX packet header status bits ([QEMU] `RxStatusBits`) ───────────────────────────

/** RX header: received OK. */
export const RTL_RXS_ROK = 0x0001;
/** RX header: frame alignment error. */
export const RTL_RXS_FAE = 0x0002;
/** RX header: CRC error. */
export const RTL_RXS_CRC = 0x0004;
/** RX header: long packet. */
export const RTL_RXS_LONG = 0x0008;
/** RX header: runt. */
export const RTL_RXS_RUNT = 0x0010;
/** RX header: invalid symbol error. */
export const RTL_RXS_ISE = 0x0020;
/** RX header: broadcast address received. */
export const RTL_RXS_BAR = 0x2000;
/** RX header: physical address matched. */
export const RTL_RXS_PAM = 0x4000;
/** RX header: multicast address received. */
export const RTL_RXS_MAR = 0x8000;
/** The length 8139too treats as "early RX copy in progress" [8139too]. */
export const RTL_RX_EARLY_SIZE = 0xfff0;

// ── 9346CR ([QEMU] `Cfg9346Bits`, [8139too]) ───────────────────────────────────────

/** 9346CR: operating mode bits 7:6. */
export const RTL_9346CR_EEM_MASK = 0xc0;
/** 9346CR EEM: normal. */
export const RTL_9346CR_EEM_NORMAL = 0x00;
/** 9346CR EEM: auto-load (reloads from the EEPROM and resets). */
export const RTL_9346CR_EEM_AUTOLOAD = 0x40;
/** 9346CR EEM: EEPROM programming (the four pins below drive the 93C46). */
export const RTL_9346CR_EEM_PROGRAM = 0x80;
/** 9346CR EEM: config-register write enable (8139too `Cfg9346_Unlock`). */
export const RTL_9346CR_EEM_CONFIG = 0xc0;
/** 9346CR: EEPROM chip select. */
export const RTL_9346CR_EECS = 0x08;
/** 9346CR: EEPROM serial clock. */
export const RTL_9346CR_EESK = 0x04;
/** 9346CR: EEPROM data in. */
export const RTL_9346CR_EEDI = 0x02;
/** 9346CR: EEPROM data out (read-only). */
export const RTL_9346CR_EEDO = 0x01;
/** 9346CR: writable bits [QEMU: mask `~0x31`]. */
export const RTL_9346CR_WRITABLE = 0xce;

// ── 93C46 EEPROM ([QEMU] `prom9346`, [8139too] `read_eeprom`) ─────────────────────

/** 16-bit words in a 93C46 (64 × 16). */
export const RTL_EEPROM_WORDS = 64;
/** Address bits of a 93C46 in ×16 mode. */
export const RTL_EEPROM_ADDR_BITS = 6;
/** READ opcode (2 bits after the start bit). */
export const RTL_EEPROM_OP_READ = 0b10;
/** Word 0: the RTL8129/8139 signature 8139too compares against for 8-bit addressing. */
export const RTL_EEPROM_SIGNATURE = 0x8129;
/** Word index of the PCI vendor id. */
export const RTL_EEPROM_VENDOR_WORD = 1;
/** Word index of the PCI device id. */
export const RTL_EEPROM_DEVICE_WORD = 2;
/** Word index of the first MAC word (words 7–9, little-endian) [QEMU, 8139too]. */
export const RTL_EEPROM_MAC_WORD = 7;

// ── CONFIG registers ([QEMU] reset and write masks) ────────────────────────────────

/** CONFIG0 reset: no boot ROM. */
export const RTL_CONFIG0_RESET = 0x00;
/** CONFIG1 reset: I/O and memory mapped registers available. */
export const RTL_CONFIG1_RESET = 0x0c;
/** CONFIG3 reset: fast back-to-back compatible. */
export const RTL_CONFIG3_RESET = 0x01;
/** CONFIG0 writable bits (boot ROM size) [QEMU keeps 0xf8]. */
export const RTL_CONFIG0_WRITABLE = 0x07;
/** CONFIG1 writable bits [QEMU keeps 0x0c]. */
export const RTL_CONFIG1_WRITABLE = 0xf3;
/** CONFIG3 writable bits [QEMU keeps 0x8f]. */
export const RTL_CONFIG3_WRITABLE = 0x70;
/** CONFIG4 writable bits [QEMU keeps 0x0a]. */
export const RTL_CONFIG4_WRITABLE = 0xf5;
/** CONFIG5 writable bits [QEMU keeps 0x80]. */
export const RTL_CONFIG5_WRITABLE = 0x7f;
/** CONFIG3: magic packet enable (8139too clears it). */
export const RTL_CONFIG3_MAGIC = 0x20;

// ── MII / PHY ([QEMU] `rtl8139_reset_phy`, `rtl8139_set_link_status`) ──────────────

/** BMCR reset: auto-negotiation enabled. */
export const RTL_BMCR_RESET = 0x1000;
/** BMCR: PHY reset (self-clearing). */
export const RTL_BMCR_PHY_RESET = 0x8000;
/** BMCR: restart auto-negotiation (self-clearing). */
export const RTL_BMCR_RESTART_AN = 0x0200;
/** BMSR base value: 100/10 full/half abilities, auto-negotiation able, extended. */
export const RTL_BMSR_BASE = 0x7809;
/** BMSR: auto-negotiation complete. */
export const RTL_BMSR_AN_COMPLETE = 0x0020;
/** BMSR: link status (bit 2). */
export const RTL_BMSR_LINK = 0x0004;
/** ANAR / ANLPAR reset: 100/10 full/half, flow control, 802.3. */
export const RTL_ANAR_RESET = 0x05e1;
/** ANER reset: link partner auto-negotiation able. */
export const RTL_ANER_RESET = 0x0001;
/** MSR base value [QEMU `0xd0 | (~BMSR & 4)`]. */
export const RTL_MSR_BASE = 0xd0;
/** MSR: LINKB, set while the link is down. */
export const RTL_MSR_LINKB = 0x04;
/** CSCR constant bits [QEMU: `CSCR_F_LINK_100 | CSCR_HEART_BIT | CSCR_LD`]. */
export const RTL_CSCR_CONSTANT = 0x0040 | 0x0100 | 0x0200;
/** CSCR: link changed since last read [8139too `CSCR_LinkChangeBit`]. */
export const RTL_CSCR_LINK_CHANGE = 0x0800;

// ── Misc ───────────────────────────────────────────────────────────────────────────

/** PCI clock the TCTR counts at: 33 MHz [QEMU `PCI_FREQUENCY`]. */
export const RTL_TCTR_HZ = 33_000_000;
/** HLTCLK value that runs the clock. */
export const RTL_HLTCLK_RUN = 0x52; // 'R'
/** HLTCLK value that halts the clock (RX is dropped while halted [QEMU]). */
export const RTL_HLTCLK_HALT = 0x48; // 'H'
/** MPC counts 24 bits. */
export const RTL_MPC_MASK = 0x00ff_ffff;
/** 8139too's `rtl8139_intr_mask`. */
export const RTL_8139TOO_INTR_MASK =
  RTL_ISR_SERR |
  RTL_ISR_TIMEOUT |
  RTL_ISR_PUN_LINKCHG |
  RTL_ISR_RXOVW |
  RTL_ISR_FOVW |
  RTL_ISR_TER |
  RTL_ISR_TOK |
  RTL_ISR_RER |
  RTL_ISR_ROK;
/** 8139too's `rtl8139_norx_intr_mask` (while NAPI polls). */
export const RTL_8139TOO_NORX_INTR_MASK =
  RTL_ISR_SERR | RTL_ISR_TIMEOUT | RTL_ISR_PUN_LINKCHG | RTL_ISR_TER | RTL_ISR_TOK | RTL_ISR_RER;
/** 8139too's `RxAckBits`. */
export const RTL_RX_ACK_BITS = RTL_ISR_FOVW | RTL_ISR_RXOVW | RTL_ISR_ROK;
/** 8139too's `MAX_ETH_FRAME_SIZE` (its TX bounce buffer size). */
export const RTL_8139TOO_TX_BUF_SIZE = 1536;
/** Largest frame the device stores in the ring (1514 + a VLAN tag, without FCS). */
export const RTL_RX_MAX_FRAME = 1518;
/** Ethernet minimum frame length without FCS; shorter frames are padded on receive [QEMU]. */
export const RTL_ETH_ZLEN = 60;
