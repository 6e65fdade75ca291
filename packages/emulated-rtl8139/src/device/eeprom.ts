/**
 * `Eeprom93C46`: the serial 64 × 16-bit EEPROM the RTL8139 reads its MAC address and ids
 * from, driven bit by bit through 9346CR (EECS, EESK, EEDI in; EEDO out), modelled the way
 * QEMU's `prom9346` behaves and 8139too's `read_eeprom` expects:
 *
 * - with CS high, a rising SK edge samples DI; a 1 is the start bit, then 2 opcode bits
 *   and 6 address bits are shifted in (8 clocks after the start bit the command is decoded);
 * - READ (opcode 10) puts the dummy 0 on DO, then each following rising edge shifts out
 *   one data bit, most significant first;
 * - after 16 bits the chip is back in command mode without a CS toggle (QEMU's quirk);
 * - WRITE, ERASE, EWEN/EWDS/WRAL/ERAL are decoded and ignored until CS drops: the
 *   EEPROM is read-only;
 * - CS low returns to standby.
 *
 * Because the address is exactly 6 bits, 8139too's probe with 8-bit addressing reads
 * word 0 shifted by two bits, not 0x8129, and it picks 6-bit addressing.
 *
 * @module
 */

import { RTL_EEPROM_ADDR_BITS, RTL_EEPROM_OP_READ, RTL_EEPROM_WORDS } from "../spec.js";

const enum Mode {
  /** CS low. */
  STANDBY = 0,
  /** Waiting for the start bit, or shifting the command in. */
  COMMAND = 1,
  /** Shifting data out. */
  READ = 2,
  /** A command that does nothing here: wait for CS to drop. */
  IGNORE = 3,
}

/** A 93C46 in ×16 organisation. */
export class Eeprom93C46 {
  /** The 64 words. */
  readonly words = new Uint16Array(RTL_EEPROM_WORDS);
  /** READ commands decoded (statistics). */
  reads = 0;
  /** Commands decoded that this read-only model ignores. */
  ignoredCommands = 0;

  private mode = Mode.STANDBY;
  private started = false;
  private shiftIn = 0;
  private bitsIn = 0;
  private shiftOut = 0;
  private bitsOut = 0;
  private cs = false;
  private sk = false;
  private dout = false;

  /** The DO pin. */
  get dataOut(): boolean {
    return this.dout;
  }

  /** Drives the three input pins (called on every 9346CR write in program mode). */
  drive(cs: boolean, sk: boolean, di: boolean): void {
    const rising = sk && !this.sk;
    this.sk = sk;
    if (!cs) {
      this.cs = false;
      this.mode = Mode.STANDBY;
      this.started = false;
      this.dout = false;
      return;
    }
    if (!this.cs) {
      this.cs = true;
      this.mode = Mode.COMMAND;
      this.started = false;
      this.bitsIn = 0;
      this.shiftIn = 0;
    }
    if (!rising) return;
    switch (this.mode) {
      case Mode.COMMAND:
        this.clockCommand(di);
        return;
      case Mode.READ:
        this.dout = (this.shiftOut & 0x8000) !== 0;
        this.shiftOut = (this.shiftOut << 1) & 0xffff;
        if (--this.bitsOut === 0) {
          // Back to command mode without a CS toggle [QEMU].
          this.mode = Mode.COMMAND;
          this.started = false;
          this.bitsIn = 0;
          this.shiftIn = 0;
        }
        return;
      default:
        return;
    }
  }

  /** Releases the pins (the chip left program mode): standby. */
  release(): void {
    this.drive(false, false, false);
  }

  private clockCommand(di: boolean): void {
    if (!this.started) {
      if (di) {
        this.started = true;
        this.bitsIn = 0;
        this.shiftIn = 0;
      }
      return;
    }
    this.shiftIn = (this.shiftIn << 1) | (di ? 1 : 0);
    if (++this.bitsIn < 2 + RTL_EEPROM_ADDR_BITS) return;
    const op = this.shiftIn >>> RTL_EEPROM_ADDR_BITS;
    const addr = this.shiftIn & (RTL_EEPROM_WORDS - 1);
    this.started = false;
    if (op === RTL_EEPROM_OP_READ) {
      this.reads++;
      this.mode = Mode.READ;
      this.shiftOut = this.words[addr]!;
      this.bitsOut = 16;
      this.dout = false; // the dummy zero
      return;
    }
    this.ignoredCommands++;
    this.mode = Mode.IGNORE;
  }
}
